"""The live calls (ivr/calls/model.py): calls by Linkedid with their channels and the
conferences they own, bounded, restored from checkpoints; the one path of routing facts
(CallState.set_routing) whichever way they come; the builder keeps the model."""

from __future__ import annotations

from pathlib import Path

from ivr.ami.codec import AMIParser
from ivr.ami.messages import Event
from ivr.calls import model as model_mod
from ivr.calls.model import CallModel
from ivr.calls.state import CallState
from ivr.calls.steps import IvrStep
from ivr.events.builder import CallEventBuilder


def _trace(traces: Path, scenario: str) -> list[Event]:
    parser = AMIParser(group_lists=True)
    path = next(traces.glob(f"{scenario}-*")) / "ami.server.raw"
    items = parser.feed(path.read_bytes()) + parser.feed_eof()
    return [i for i in items if isinstance(i, Event)]


def _call(cid: str) -> CallState:
    return CallState(call_id=cid, started_at=1.0, dialled="12345", first_uniqueid=cid)


def test_calls_channels_and_conferences_leave_with_the_call() -> None:
    m = CallModel()
    heard: list[str] = []
    m.tracker.on_call_ended(heard.append)
    a = _call("1.1")
    a.channels.add("1.1")
    m.open(a)
    m.add_channel(a, "1.2")
    m.tracker.add("9.1", "9.1")  # an internal leg with its own Linkedid: untracked
    assert m.call_of("1.2") is a and m.call_of("9.1") is None and m.untracked_leg("9.1")
    m.own_conference("conf-1", a)
    assert m.conference_owner("conf-1") is a and a.conferences == {"conf-1"}
    m.remove_channel(a, "1.2")
    assert a.channels == {"1.1"} and m.call_of("1.2") is None and len(m) == 1
    m.end(a)
    assert (len(m), m.conferences, m.tracker.call_of("1.1")) == (0, {}, None)
    assert heard == ["1.1"] and m.has_ended("1.1") and m.call("1.1") is None
    assert m.release_conference("conf-1") is None


def test_restore_takes_channels_and_conferences_and_replaces() -> None:
    m = CallModel()
    a = _call("2.1")
    a.channels |= {"2.1", "2.2"}
    a.conferences.add("9001")
    m.restore(a)
    assert m.tracker.channels("2.1") == {"2.1", "2.2"} and m.conference_owner("9001") is a
    b = CallState.from_checkpoint(a.checkpoint())
    b.channels.discard("2.2")
    m.restore(b)
    assert m.call("2.1") is b and m.tracker.channels("2.1") == {"2.1"}
    assert m.release_conference("9001") is b and b.conferences == set()


def test_ended_ids_are_bounded() -> None:
    m = CallModel()
    limit = model_mod.MAX_ENDED_REMEMBERED
    for i in range(limit + 5):
        c = _call(f"{i}.0")
        m.open(c)
        m.end(c)
    assert len(m.ended) == limit and not m.has_ended("0.0") and m.has_ended(f"{limit + 4}.0")


def test_routing_facts_take_one_path() -> None:
    c = _call("3.1")
    c.set_routing("priority", "-1")
    c.set_routing("priority", "x")
    assert c.priority == 0
    c.set_routing("priority", "5")
    c.set_routing("tags", "a, b,,a")
    c.set_routing("tag", "b")
    c.set_routing("tag", "c")
    c.set_routing("anonymous", " Yes ")
    c.set_routing("language", "")
    assert (c.priority, c.tags, c.anonymous, c.language) == (5, ["a", "b", "c"], True, None)
    c.set_routing("language", "en")
    c.set_routing("queue", "")
    c.set_routing("agent", "Agent 1")
    c.set_routing("nonsense", "x")
    assert (c.language, c.language_explicit, c.queue, c.agent) == ("en", True, None, "Agent 1")


def test_a_queue_from_varset_or_from_the_ivr_step_is_the_same_fact() -> None:
    """The queue a call is routed to, set by the dialplan (VarSet IVR_QUEUE) or reported
    by the IVR (exit to queue): the same routing in the call model and in its events."""
    def build(via_step: bool) -> tuple[str | None, list[object]]:
        b = CallEventBuilder(clock=lambda: 100.0)
        b.feed_ami(Event({"Event": "Newchannel", "Uniqueid": "4.1", "Linkedid": "4.1",
                          "Context": "from-pstn", "Exten": "12345",
                          "CallerIDNum": "13912345678"}))
        if via_step:
            b.feed_step(IvrStep(call_id="4.1", uniqueid="4.1", step="menu", kind="exit",
                                ts=101.0, entry="12345",
                                data={"to": "queue", "target": "q-complaints"}))
        else:
            b.feed_ami(Event({"Event": "VarSet", "Uniqueid": "4.1", "Linkedid": "4.1",
                              "Variable": "IVR_QUEUE", "Value": "q-complaints"}))
        out = b.feed_ami(Event({"Event": "QueueCallerJoin", "Uniqueid": "4.1",
                                "Linkedid": "4.1", "Queue": "q-complaints",
                                "Position": "1", "Count": "1"}))
        call = b.model.call("4.1")
        assert call is not None and b.call("4.1") is call
        return call.queue, [e.routing for e in out]

    assert build(via_step=True) == build(via_step=False)


def test_the_builder_keeps_the_model_and_it_empties(traces: Path) -> None:
    """Every recorded call of trace 02 (IVR, queue, recording, three-way conference):
    while it runs the model holds it and its conference; afterwards nothing is left but
    the ended ids."""
    b = CallEventBuilder(clock=lambda: 1_795_883_958.5)
    assert b.calls is b.model.tracker
    saw_conference = False
    for ev in _trace(traces, "02"):
        b.feed_ami(ev)
        saw_conference |= bool(b.model.conferences)
        for cid, owner in b.model.conferences.items():
            owner_call = b.model.call(owner)
            assert owner_call is not None and cid in owner_call.conferences
    assert saw_conference
    assert (len(b.model), b.model.conferences, b.model.tracker.channel_count) == (0, {}, 0)
    assert len(b.model.ended) >= 1
