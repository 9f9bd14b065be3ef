"""The one Linkedid tracker (ivr/calls/tracker.py), alone and as the builder keeps it."""

from __future__ import annotations

from pathlib import Path

from ivr.ami.codec import AMIParser
from ivr.ami.messages import Event
from ivr.calls.tracker import CallTracker
from ivr.events.builder import CallEventBuilder


def _trace(traces: Path, scenario: str) -> list[Event]:
    parser = AMIParser(group_lists=True)
    path = next(traces.glob(f"{scenario}-*")) / "ami.server.raw"
    items = parser.feed(path.read_bytes()) + parser.feed_eof()
    return [i for i in items if isinstance(i, Event)]


def test_a_call_ends_with_its_last_channel() -> None:
    t = CallTracker()
    ended: list[str] = []
    t.on_call_ended(ended.append)
    t.add("1.1", "1.1")
    t.add("1.2", "1.1")
    t.add("1.2", "1.1")  # twice: no change
    assert (len(t), t.channel_count, t.channels("1.1")) == (1, 2, {"1.1", "1.2"})
    assert "1.1" in t and t.call_of("1.2") == "1.1" and list(t.calls()) == ["1.1"]
    assert t.remove("1.1") == "1.1" and ended == []
    assert t.remove("nope") is None
    assert t.remove("1.2") == "1.1" and ended == ["1.1"]
    assert (len(t), t.channel_count, "1.1" in t) == (0, 0, False)


def test_drop_prune_and_feed() -> None:
    t = CallTracker()
    ended: list[str] = []
    t.on_call_ended(ended.append)
    for uid, lid in [("2.1", "2.1"), ("2.2", "2.1"), ("3.1", "3.1"), ("4.1", "4.1")]:
        t.feed(Event({"Event": "Newchannel", "Uniqueid": uid, "Linkedid": lid}))
    t.drop_call("2.1")  # swept: its channels go with it
    t.drop_call("2.1")
    assert ended == ["2.1"] and t.call_of("2.2") is None
    mark = t.snapshot()
    t.add("5.1", "5.1")  # after the mark: not judged
    assert t.prune(mark, {"4.1"}) == 1 and ended == ["2.1", "3.1"]
    assert set(t.calls()) == {"4.1", "5.1"}
    t.feed(Event({"Event": "Hangup", "Uniqueid": "4.1", "Linkedid": "4.1"}))
    t.feed(Event({"Event": "VarSet", "Uniqueid": "5.1"}))
    assert ended == ["2.1", "3.1", "4.1"] and set(t.calls()) == {"5.1"}


def test_the_builder_keeps_every_channel_and_forgets_ended_calls(traces: Path) -> None:
    """Trace 02: the caller's call and the department leg with its own Linkedid (an
    internal leg, no ticket) are both in the tracker while up; nothing is left after."""
    b = CallEventBuilder(clock=lambda: 1_795_883_958.5)
    ended: list[str] = []
    b.calls.on_call_ended(ended.append)
    most = 0
    for ev in _trace(traces, "02"):
        b.feed_ami(ev)
        most = max(most, len(b.calls))
    assert most == 2 and b.open_calls == 0
    assert len(b.calls) == 0 and b.calls.channel_count == 0
    assert "1795883958.1" in ended and len(ended) == 2


def test_sweep_and_resync_leave_no_channel_behind() -> None:
    b = CallEventBuilder(clock=lambda: 10.0)
    for uid, lid, ctx in [("7.1", "7.1", "from-pstn"), ("8.1", "8.1", "agent-local"),
                          ("9.1", "9.1", "from-pstn")]:
        b.feed_ami(Event({"Event": "Newchannel", "Uniqueid": uid, "Linkedid": lid,
                          "Context": ctx, "Exten": "12345", "CallerIDNum": "139"}))
    assert set(b.calls.calls()) == {"7.1", "8.1", "9.1"} and b.open_calls == 2
    # 9.1 is swept (its Hangup lost): its channel leaves the tracker with it
    b.feed_ami(Event({"Event": "QueueCallerJoin", "Uniqueid": "7.1", "Linkedid": "7.1",
                      "Queue": "hotline", "Timestamp": "5000"}))
    assert [e.type for e in b.sweep(now=5000.0, max_idle=100.0)] == ["call.ended"]
    assert set(b.calls.calls()) == {"7.1", "8.1"}
    # after a reconnect only 7.1 is listed: the internal leg 8.1 hung up unheard
    out = b.resync(b.channels_snapshot(), ["7.1"])
    assert out == [] and set(b.calls.calls()) == {"7.1"} and b.open_calls == 1
