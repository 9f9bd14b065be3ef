"""Service-level figures computed from the recorded Asterisk traffic."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.ami.codec import AMIParser
from ivr.ami.messages import Event
from ivr.callstats import CallStats, StatsSummary
from ivr.events.builder import CallEventBuilder


def _events(path: Path) -> list[Event]:
    parser = AMIParser(group_lists=True)
    items = parser.feed(path.read_bytes()) + parser.feed_eof()
    return [i for i in items if isinstance(i, Event)]


def test_answered_call_trace_02(traces: Path) -> None:
    stats = CallStats()
    for ev in _events(traces / "02-ivr-queue-record-threeway" / "ami.server.raw"):
        stats.on_event(ev)
    s = stats.summary()
    assert s.offered == 1
    assert s.answered == 1
    assert s.abandoned == 0
    assert s.answer_rate_15s == 1.0
    assert s.in_queue == 0


def test_abandoned_call_trace_07(traces: Path) -> None:
    stats = CallStats()
    for ev in _events(traces / "07-queue-abandon" / "ami.server.raw"):
        stats.on_event(ev)
    s = stats.summary()
    assert s.offered == 1
    assert s.answered == 0
    assert s.abandoned == 1
    assert s.average_wait_s == 4.0  # HoldTime: 4 in the trace
    assert s.answer_rate_15s == 0.0
    assert s.ended == s.calls


def test_waiting_caller_trace_04_counts_in_queue(traces: Path) -> None:
    stats = CallStats()
    for ev in _events(traces / "04-transfers" / "ami.server.raw"):
        stats.on_event(ev)
    s = stats.summary()
    # 李四 was answered then blind-transferred; 王五 still waits when the client logs off.
    assert s.answered == 1
    assert s.in_queue == 1
    assert s.offered == 2


def _summaries(traces: Path, scenario: str) -> tuple[StatsSummary, StatsSummary]:
    """The figures of a trace from a stand-alone CallStats and from one that reads the
    call-event builder's Linkedid tracker, fed in the bridge's order (figures, then
    builder)."""
    alone = CallStats()
    builder = CallEventBuilder(clock=lambda: 1_795_883_958.5)
    shared = CallStats(calls=builder.calls)
    for ev in _events(next(traces.glob(f"{scenario}-*")) / "ami.server.raw"):
        alone.on_event(ev)
        shared.on_event(ev)
        builder.feed_ami(ev)
    return alone.summary(), shared.summary()


@pytest.mark.parametrize("scenario", [f"{n:02d}" for n in range(1, 14)])
def test_the_builders_tracker_gives_the_same_figures(traces: Path, scenario: str) -> None:
    alone, shared = _summaries(traces, scenario)
    assert shared == alone


def _call(n: int, *, answered: bool) -> list[Event]:
    """A caller's channel and an agent's leg (same Linkedid) through a queue."""
    lid, agent = f"100.{n}", f"100.{n}a"
    evs = [Event({"Event": "Newchannel", "Uniqueid": lid, "Linkedid": lid}),
           Event({"Event": "QueueCallerJoin", "Uniqueid": lid, "Linkedid": lid})]
    if answered:
        evs += [Event({"Event": "Newchannel", "Uniqueid": agent, "Linkedid": lid}),
                Event({"Event": "AgentConnect", "Uniqueid": lid, "Linkedid": lid,
                       "HoldTime": str(n % 30)}),
                Event({"Event": "QueueCallerLeave", "Uniqueid": lid, "Linkedid": lid}),
                Event({"Event": "Hangup", "Uniqueid": agent, "Linkedid": lid})]
    else:
        evs.append(Event({"Event": "QueueCallerAbandon", "Uniqueid": lid, "Linkedid": lid,
                          "HoldTime": "20"}))
    return [*evs, Event({"Event": "Hangup", "Uniqueid": lid, "Linkedid": lid})]


@pytest.mark.parametrize("shared", [False, True])
def test_ended_calls_leave_memory(shared: bool) -> None:
    """A long-running bridge keeps records of the calls in progress only; the figures
    are running totals."""
    builder = CallEventBuilder(clock=lambda: 1.0) if shared else None
    stats = CallStats(calls=builder.calls if builder is not None else None)
    calls = 5_000
    for n in range(calls):
        for ev in _call(n, answered=n % 4 != 0):
            stats.on_event(ev)
            if builder is not None:
                builder.feed_ami(ev)
        if n == 10:
            assert stats.live_records == 0 and len(stats.calls) == 0
    for ev in _call(calls, answered=True)[:3]:  # one call still in progress, in the queue
        stats.on_event(ev)
        if builder is not None:
            builder.feed_ami(ev)
    s = stats.summary()
    assert stats.live_records == 1 and len(stats.calls) == 1
    assert stats.calls.channel_count == 2 and s.in_queue == 1
    answered = sum(1 for n in range(calls) if n % 4 != 0)
    assert (s.calls, s.ended, s.offered) == (calls + 1, calls, calls + 1)
    assert (s.answered, s.abandoned) == (answered, calls - answered)
    assert s.answered_15s == sum(1 for n in range(calls) if n % 4 != 0 and n % 30 <= 15)
    waits = [n % 30 for n in range(calls) if n % 4 != 0] + [20] * (calls - answered)
    assert s.average_wait_s == round(sum(waits) / len(waits), 2)


def test_legs_the_bridge_originates_are_not_calls(traces: Path) -> None:
    """Trace 02's department leg (Local/2001@agent-local, originated: a Linkedid of its
    own) is no call of the hotline when its context is internal (the builder's rule; a
    three-way party's leg is ivr-threeway-leg)."""
    events = _events(traces / "02-ivr-queue-record-threeway" / "ami.server.raw")
    plain, internal = CallStats(), CallStats(internal_contexts=frozenset({"agent-local"}))
    for ev in events:
        plain.on_event(ev)
        internal.on_event(ev)
    assert (plain.summary().calls, internal.summary().calls) == (2, 1)
    assert (internal.summary().ended, internal.summary().answered) == (1, 1)


def test_supervisor_chanspy_legs_are_not_calls_trace_13(traces: Path) -> None:
    """Trace 13: the caller's call and three ChanSpy legs originated to the supervisor's
    phone (Local/1002@agent-local, the internal context the builder skips too): one call."""
    stats = CallStats(internal_contexts=frozenset({"agent-local"}))
    for ev in _events(traces / "13-supervisor-chanspy" / "ami.server.raw"):
        stats.on_event(ev)
    s = stats.summary()
    assert (s.calls, s.ended, s.offered, s.answered) == (1, 1, 1, 1)
