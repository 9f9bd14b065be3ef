"""Service-level figures computed from the recorded Asterisk traffic."""

from __future__ import annotations

from pathlib import Path

from ivr.ami.codec import AMIParser
from ivr.ami.messages import Event
from ivr.callstats import CallStats


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
