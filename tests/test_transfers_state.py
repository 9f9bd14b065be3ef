"""The pure transfer state (ivr/transfers/state.py) on recorded Asterisk traffic: trace
09's attended transfer that returns to the caller, read event by event as the bridge
reads it; and the other outcomes on the same call's events, changed as Asterisk would
send them (busy, the caller hanging up, a completion, a lost transfer after a resync)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ivr.ami.codec import AMIParser
from ivr.ami.messages import Event, Response
from ivr.directory import DialTarget
from ivr.transfers.state import Change, Transfer, Transfers

TRACE = "09-attended-transfer-returns"


def _items(traces: Path) -> list[Event | Response]:
    parser = AMIParser(group_lists=False)
    raw = (traces / TRACE / "ami.server.raw").read_bytes()
    return [i for i in parser.feed(raw) + parser.feed_eof() if isinstance(i, Event | Response)]


def _transfer(events: list[Event]) -> Transfer:
    """The transfer the service would have made before trace 09's Atxfer (cap-3)."""
    agent = next(e for e in events if e.name == "Newchannel"
                 and (e.get("Channel") or "").startswith("Local/1002@agent-local")
                 and (e.get("Channel") or "").endswith(";1"))
    caller = next(e for e in events if e.name == "Newchannel"
                  and (e.get("Channel") or "").startswith("Local/6002@from-pstn")
                  and (e.get("Channel") or "").endswith(";2"))
    bridge = next(e for e in events if e.name == "BridgeEnter"
                  and e.get("Uniqueid") == agent.get("Uniqueid"))
    target = DialTarget(None, "1003", "agent-local", None, None)
    return Transfer(id="t1", call_id=agent.get("Linkedid") or "", kind="attended",
                    method="Atxfer", ref="1003", target=target, agent="Agent 1002",
                    agent_uid=agent.get("Uniqueid") or "", agent_channel=agent.get("Channel")
                    or "", caller_uid=caller.get("Uniqueid") or "",
                    caller_channel=caller.get("Channel") or "",
                    bridge=bridge.get("BridgeUniqueid") or "", requested_at=0.0)


def _run(traces: Path, edit: Callable[[Event], list[Event]] | None = None
         ) -> tuple[Transfer, list[Change]]:
    items = _items(traces)
    events = [i for i in items if isinstance(i, Event)]
    state = Transfers()
    t = _transfer(events)
    changes: list[Change] = []
    started = False
    for n, item in enumerate(items):
        if isinstance(item, Response):
            if item.action_id == "cap-3":  # the Atxfer: the service added the transfer
                state.add(t)
                started = True
            continue
        if not started:
            continue
        for ev in (edit(item) if edit is not None else [item]):
            changes += state.feed(ev, float(n))
    return t, changes


def test_trace_09_returns_when_the_target_hangs_up(traces: Path) -> None:
    t, changes = _run(traces)
    assert [c.what for c in changes] == ["ringing", "answered", "returned"]
    assert (t.outcome, t.reason, t.target_cause) == ("returned", "target_hangup", 16)
    assert t.target_channel == "Local/1003@agent-local-00000002;1" and len(t.target_uids) == 2
    assert (t.ringing_at or 0) <= (t.answered_at or 0)


def test_busy_before_an_answer_fails_with_the_targets_cause(traces: Path) -> None:
    def busy(ev: Event) -> list[Event]:
        # the target never answers: its ;2 hangs up with cause 17, the agent is taken off
        # hold in the call's bridge (no consultation)
        chan = ev.get("Channel") or ""
        if chan.startswith("Local/1003@") and ev.name in ("Newstate", "BridgeEnter",
                                                         "BridgeLeave"):
            return []
        if ev.name == "BridgeLeave" or (ev.name == "BridgeEnter"
                                        and chan.startswith("Local/1002@")):
            return []
        if ev.name == "Hangup" and chan.endswith("00000002;2"):
            return [Event({**ev.headers, "Cause": "17", "Cause-txt": "User busy"})]
        return [ev]

    t, changes = _run(traces, busy)
    assert [c.what for c in changes] == ["failed"]
    assert (t.outcome, t.reason, t.target_cause) == ("failed", "busy", 17)


def test_the_caller_hanging_up_during_the_consultation_fails_it(traces: Path) -> None:
    def caller_gone(ev: Event) -> list[Event]:
        if ev.name == "Hangup" and (ev.get("Channel") or "").startswith("Local/1003@"):
            return [Event({"Event": "Hangup", "Channel": "Local/6002@from-pstn-00000000;2",
                           "Uniqueid": "1796521035.1", "Cause": "16"})]
        return [ev]

    t, changes = _run(traces, caller_gone)
    assert [c.what for c in changes] == ["ringing", "answered", "failed"]
    assert (t.outcome, t.reason) == ("failed", "caller_hangup")


def test_attended_transfer_event_completes(traces: Path) -> None:
    def completed(ev: Event) -> list[Event]:
        if ev.name == "Hangup" and (ev.get("Channel") or "").startswith("Local/1003@"):
            return [Event({"Event": "AttendedTransfer", "Result": "Success",
                           "OrigTransfererUniqueid": "1796521035.2", "DestType": "Bridge"})]
        return [ev]

    t, changes = _run(traces, completed)
    assert [c.what for c in changes] == ["ringing", "answered", "completed"]
    assert (t.outcome, t.reason) == ("completed", None)


def test_a_transfer_whose_legs_are_gone_after_a_resync_is_lost(traces: Path) -> None:
    events = [i for i in _items(traces) if isinstance(i, Event)]
    state = Transfers()
    t = _transfer(events)
    state.add(t)
    assert state.forget_missing({t.caller_uid, t.agent_uid}) == []
    (lost,) = state.forget_missing({t.agent_uid})
    assert (lost.what, t.reason, state.active(t.call_id)) == ("failed", "lost", None)
