"""A ticket-backend outage needs no person (issue 14, item 8): what may pass is retried by
a time budget, only what the backend rejects as wrong is dead-lettered, the outage is
reported (error log on entering and leaving, a gauge, ``ivr events status``), and the
status figures are one atomic snapshot.  Real redis-server, real HTTP on 127.0.0.1; the
back-off and budget are settings, small here."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from ivr.config import load_settings
from ivr.errors import ConfigError
from ivr.events.builder import CallEventBuilder
from ivr.events.cli import _status_text
from ivr.events.config import EventsConfig
from ivr.events.outbox import (
    entry_fields,
    keys_for,
    list_dead_letters,
    read_status,
    replay_dead_letters,
)
from ivr.events.pipeline import CallEventPipeline
from ivr.events.pusher import OutageMonitor, Pusher, backoff_delay, retryable_status
from ivr.metrics import METRICS
from ivr.ticketsink.server import TicketSink
from tests.test_events_delivery import (
    SECRET,
    actual_tickets,
    config,
    expected_tickets,
    interleaved_ami,
    write_all,
)

ROOT = Path(__file__).resolve().parent.parent
BOTH_MODES = pytest.mark.parametrize("batch_max", [100, 1], ids=["batch", "single"])


class LogWaiter(logging.Handler):
    """Collects the records of one structured log name; ``seen`` is set on the first."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.DEBUG)
        self.name_ = name
        self.records: list[logging.LogRecord] = []
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == self.name_:
            self.records.append(record)
            self.seen.set()


@contextmanager
def watch(*names: str) -> Iterator[dict[str, LogWaiter]]:
    logger = logging.getLogger("ivr.events.pusher")
    waiters = {n: LogWaiter(n) for n in names}
    for w in waiters.values():
        logger.addHandler(w)
    try:
        yield waiters
    finally:
        for w in waiters.values():
            logger.removeHandler(w)


def fast(redis_url: str, sink: TicketSink, **kw: Any) -> EventsConfig:
    """Back-off of 10-100 ms, an outage declared after 0.2 s, a budget far beyond the
    test: what dead-letters here can only be a rejection."""
    base: dict[str, Any] = dict(backoff_base=0.01, backoff_max=0.1, outage_after=0.2,
                                retry_budget=120.0, request_timeout=1.0)
    base.update(kw)
    return config(redis_url, sink, **base)


async def status_of(cfg: EventsConfig) -> Any:
    r = aioredis.from_url(cfg.redis_url)
    try:
        return await read_status(r, keys_for(cfg))
    finally:
        await r.aclose()


# -- pure parts ---------------------------------------------------------------------------

def test_which_answers_are_retried() -> None:
    for status in (500, 502, 503, 504, 408, 429, 401, 403):
        assert retryable_status(status) == (True, True), status
    for status in (400, 404, 405, 410, 413, 415, 422):
        assert retryable_status(status) == (False, False), status
    assert retryable_status(409, '{"error": "out_of_order", "last_seq": 1}') == (True, False)
    assert retryable_status(409, '{"error": "conflict", "last_seq": 3}') == (False, False)
    assert retryable_status(302) == (True, True)


def test_backoff_is_bounded_for_ever() -> None:
    for attempt in (1, 5, 1100, 10**6):  # hours of retries: no OverflowError
        d = backoff_delay(attempt, 0.2, 30.0)
        assert 0 < d <= 30.0
    assert 0.1 <= backoff_delay(1, 0.2, 30.0) <= 0.2  # jitter: half to all


def test_outage_monitor() -> None:
    now = [0.0]
    m = OutageMonitor(after=10.0, clock=lambda: now[0])
    assert not m.failed("refused") and not m.active
    now[0] = 5.0
    assert m.succeeded() is None  # a success within the window: no outage, streak over
    now[0] = 6.0
    assert not m.failed("refused")
    now[0] = 16.0
    assert m.failed("HTTP 503") and m.active and m.failures == 2
    now[0] = 17.0
    assert not m.failed("HTTP 503")  # declared once
    now[0] = 3600.0
    assert m.succeeded() == pytest.approx(3594.0) and not m.active


def test_retry_budget_is_a_setting(tmp_path: Path) -> None:
    f = tmp_path / "ivr.toml"
    f.write_text("[events]\nretry_budget = 7200.0\noutage_after = 30.0\n", "utf-8")
    ev = load_settings(f, env={}).events
    assert (ev.retry_budget, ev.outage_after) == (7200.0, 30.0)
    assert load_settings(None, env={"IVR_EVENTS_RETRY_BUDGET": "60"}).events.retry_budget == 60
    assert EventsConfig().retry_budget == 86400.0  # 24 h by default
    with pytest.raises(ConfigError, match="retry_budget"):
        EventsConfig(redis_url="redis://x", retry_budget=0).require("redis_url")


def test_out_of_order_window_is_a_setting(tmp_path: Path) -> None:
    f = tmp_path / "ivr.toml"
    f.write_text("[events]\nout_of_order_window = 120.0\n", "utf-8")
    assert load_settings(f, env={}).events.out_of_order_window == 120.0
    env = {"IVR_EVENTS_OUT_OF_ORDER_WINDOW": "5"}
    assert load_settings(None, env=env).events.out_of_order_window == 5.0
    assert EventsConfig().out_of_order_window == 60.0  # a minute by default
    with pytest.raises(ConfigError, match="out_of_order_window"):
        EventsConfig(redis_url="redis://x", out_of_order_window=0).require("redis_url")


# -- an outage over real HTTP ---------------------------------------------------------------

@BOTH_MODES
async def test_outage_then_recovery_closes_every_ticket(traces: Path, redis_url: str,
                                                        batch_max: int) -> None:
    """Refused connections, then nothing but 500s, then 30 % errors: every ticket closes,
    nothing is dead-lettered, order holds, and the outage is reported on the way in and
    on the way out.  (Before: 10 attempts, then dead letters and tickets left open.)"""
    ami = interleaved_ami(traces, 20)
    expected = expected_tickets(ami)
    total = sum(len(t["events"]) for t in expected.values())
    with watch("events.pusher.outage_started", "events.pusher.outage_ended") as logs:
        async with TicketSink(SECRET) as sink:
            cfg = fast(redis_url, sink, batch_max=batch_max)
            await sink.go_down(0.5)  # connection refused
            sink.faults.error_rate = 1.0  # and when it is back: 500 to everything
            async with Pusher(cfg) as pusher:
                assert await write_all(cfg, ami) == total
                async with asyncio.timeout(20):
                    await logs["events.pusher.outage_started"].seen.wait()
                    await sink.up.wait()
                st = await status_of(cfg)
                assert st.backend_outage and st.outages[0].consumer == "pusher-a"
                assert METRICS.gauge("events.pusher.outage") == 1
                assert "OUTAGE" in _status_text(st) and st.events_lost == 0
                assert st.oldest_undelivered_s is not None and st.dead_letters == 0
                failures_in_outage = pusher.stats.failures
                sink.faults.error_rate = 0.3  # the backend recovers, shakily
                async with asyncio.timeout(30):
                    await sink.wait_for(lambda s: s.applied >= total)
                    await pusher.wait_idle()
                assert pusher.stats.failures > failures_in_outage > 0
            st = await status_of(cfg)
    assert actual_tickets(sink) == expected
    assert all(t.status == "closed" for t in sink.store.tickets.values())
    assert sink.store.rejected == 0  # no event overtook a retried one of its call
    assert (st.dead_letters, st.dead_lettered, st.undelivered, st.events_lost) == (0, 0, 0, 0)
    assert st.delivered == total and not st.backend_outage
    assert METRICS.gauge("events.pusher.outage") == 0
    started = logs["events.pusher.outage_started"].records
    ended = logs["events.pusher.outage_ended"].records
    assert [r.levelno for r in started + ended] == [logging.ERROR, logging.ERROR]
    assert ended[0].fields["duration_s"] >= 0.2  # type: ignore[attr-defined]


@BOTH_MODES
async def test_a_rejection_dead_letters_at_once(traces: Path, redis_url: str,
                                                batch_max: int) -> None:
    """A 4xx that says "wrong" (schema) is not retried: dead-lettered after one attempt,
    the later events of its call behind it, the other calls delivered."""
    ami = interleaved_ami(traces, 3)
    b = CallEventBuilder(clock=lambda: 0.0)
    events = [ce for ev in ami for ce in b.feed_ami(ev)]
    bad_call = events[0].call_id
    good = [e for e in events if e.call_id != bad_call]
    mine = [e for e in events if e.call_id == bad_call][:2]
    async with TicketSink(SECRET) as sink:
        cfg = fast(redis_url, sink, batch_max=batch_max)
        keys = keys_for(cfg)
        r = aioredis.from_url(redis_url)
        try:
            async with Pusher(cfg) as pusher, CallEventPipeline(redis_url, cfg) as pipe:
                await pipe.outbox.write(good)
                for i, e in enumerate(mine):
                    fields = entry_fields(e)
                    if i == 0:
                        obj = json.loads(fields["e"])
                        del obj["schema"]  # the backend rejects it as invalid
                        fields["e"] = json.dumps(obj)
                    await r.xadd(keys.stream_for(bad_call), fields)  # type: ignore[arg-type]
                    await r.hincrby(keys.stats, "written", 1)
                async with asyncio.timeout(10):
                    await sink.wait_for(lambda s: s.applied >= len(good))
                    await pusher.wait_idle()
            st = await read_status(r, keys)
            dead = await list_dead_letters(r, keys)
        finally:
            await r.aclose()
    assert [(d.call_id, d.seq, d.attempts) for d in dead] == [
        (bad_call, 1, 1), (bad_call, 2, 0)]
    assert ("400" in dead[0].reason) or ("invalid" in dead[0].reason)
    assert "blocked" in dead[1].reason
    assert (st.dead_letters, st.blocked_calls, st.events_lost) == (2, 1, 0)
    assert sink.store.get(bad_call) is None
    assert st.delivered == len(good)


@pytest.mark.slow
async def test_refused_credentials_wait_and_show_in_status(traces: Path,
                                                          redis_url: str) -> None:
    """401 (a wrong secret, a clock off): not the event's fault — the events wait, the
    outage shows in `ivr events status`, and a pusher with the right secret delivers
    them all; nothing is dead-lettered."""
    ami = interleaved_ami(traces, 4)
    expected = expected_tickets(ami)
    total = sum(len(t["events"]) for t in expected.values())
    with watch("events.pusher.outage_started") as logs:
        async with TicketSink(SECRET) as sink:
            cfg = fast(redis_url, sink)
            async with Pusher(cfg.with_(secret="rotated-on-the-backend")):
                await write_all(cfg, ami)
                async with asyncio.timeout(20):
                    await logs["events.pusher.outage_started"].seen.wait()
                env = dict(os.environ, IVR_REDIS_URL=redis_url, IVR_EVENTS_PREFIX=cfg.stream_prefix,
                           IVR_EVENTS_PARTITIONS=str(cfg.partitions), PYTHONPATH=str(ROOT))
                env.pop("IVR_CONFIG", None)
                outs = []
                for extra in ([], ["--json"]):
                    proc = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "ivr", "events", "status", *extra, env=env,
                        cwd=ROOT, stdout=asyncio.subprocess.PIPE)
                    out, _ = await proc.communicate()
                    assert proc.returncode == 0
                    outs.append(out.decode())
            assert "OUTAGE" in outs[0] and "401" in outs[0]
            doc = json.loads(outs[1])
            assert doc["backend_outage"] is True and doc["events_lost"] == 0
            assert doc["dead_letters"] == 0 and doc["undelivered"] == total
            assert "401" in doc["outages"][0]["error"]
            assert not (await status_of(cfg)).backend_outage  # its pusher stopped
            async with Pusher(cfg) as pusher:
                async with asyncio.timeout(20):
                    await sink.wait_for(lambda s: s.applied >= total)
                    await pusher.wait_idle()
            st = await status_of(cfg)
    assert actual_tickets(sink) == expected
    assert (st.dead_letters, st.delivered, st.events_lost) == (0, total, 0)
    assert sink.auth_failures > 0


@pytest.mark.slow
async def test_status_is_one_snapshot_while_events_flow(traces: Path, redis_url: str) -> None:
    """`events lost` read again and again while events are written and delivered (and
    delivery is behind): always exactly 0."""
    ami = interleaved_ami(traces, 40)
    expected = expected_tickets(ami)
    total = sum(len(t["events"]) for t in expected.values())
    async with TicketSink(SECRET) as sink:
        sink.faults.latency_ms = 1
        cfg = fast(redis_url, sink, batch_max=1, concurrency=8)
        r = aioredis.from_url(redis_url)
        samples: list[tuple[int, int]] = []  # (events lost, undelivered)
        try:
            async with Pusher(cfg) as pusher:
                writer = asyncio.create_task(write_all(cfg, ami))
                async with asyncio.timeout(40):
                    while not (writer.done() and sink.store.applied >= total):
                        st = await read_status(r, keys_for(cfg))
                        samples.append((st.events_lost, st.undelivered))
                    await writer
                    await pusher.wait_idle()
            final = await read_status(r, keys_for(cfg))
        finally:
            await r.aclose()
    behind = [s for s in samples if s[1] > 0]
    assert len(behind) >= 20, len(behind)  # many reads while delivery was behind
    assert {lost for lost, _ in samples} == {0}, sorted({lost for lost, _ in samples})
    assert (final.delivered, final.events_lost) == (total, 0)


# -- a call the backend answers out_of_order for ever (it lost an earlier event) ------------

OTHER_CALLS = 50


def _one_call_lost_its_first_event(traces: Path) -> tuple[str, Any, list[Any], list[Any]]:
    """Events of 51 interleaved calls; the first call's seq 1 is the one the backend
    never got.  (stuck call, its lost event, the outbox without it, the stuck call's
    last three events — written later)."""
    b = CallEventBuilder(clock=lambda: 0.0)
    events = [ce for ev in interleaved_ami(traces, OTHER_CALLS + 1) for ce in b.feed_ami(ev)]
    stuck = events[0].call_id
    lost = next(e for e in events if e.call_id == stuck and e.seq == 1)
    tail = [e for e in events if e.call_id == stuck][-3:]
    first = [e for e in events if e is not lost and e not in tail]
    return stuck, lost, first, tail


def _closed(calls: set[str]) -> Any:
    return lambda st: all((t := st.tickets.get(c)) is not None and t.status == "closed"
                          for c in calls)


@BOTH_MODES
async def test_a_call_refused_out_of_order_does_not_hold_its_partition(
        traces: Path, redis_url: str, batch_max: int) -> None:
    """One partition; one call's events are answered 409 out_of_order (the backend lost
    its seq 1) and will be for ever.  Within its out_of_order window (60 s here) the call
    waits aside, and the 50 other calls of the partition all close their tickets at once
    — before, the partition's next batch was read only once that call settled: 24 h."""
    stuck, _lost, first, tail = _one_call_lost_its_first_event(traces)
    others = {e.call_id for e in first} - {stuck}
    assert len(others) == OTHER_CALLS
    late_call = sorted(others)[0]  # written after the stuck call's tail
    late = [e for e in first if e.call_id == late_call]
    async with TicketSink(SECRET) as sink:
        cfg = fast(redis_url, sink, partitions=1, batch_size=20, batch_max=batch_max,
                   out_of_order_window=60.0)
        async with Pusher(cfg) as pusher, CallEventPipeline(redis_url, cfg) as pipe:
            await pipe.outbox.write([e for e in first if e.call_id != late_call])
            async with asyncio.timeout(15):
                await sink.wait_for(_closed(others - {late_call}))
            # later events of the waiting call join it; the stream is read in order, so
            # they have been read once the call written after them is delivered
            await pipe.outbox.write(tail + late)
            async with asyncio.timeout(15):
                await sink.wait_for(_closed({late_call}))
            st = await status_of(cfg)
            assert pusher.stats.dead_lettered == 0
    assert stuck not in sink.store.tickets and sink.store.rejected > 0
    mine = len([e for e in first + tail if e.call_id == stuck])
    assert (st.dead_letters, st.undelivered, st.pending, st.events_lost) == (0, mine, mine, 0)
    assert st.delivered == len(first) + len(tail) - mine


@BOTH_MODES
async def test_out_of_order_past_its_window_is_dead_lettered_loudly(
        traces: Path, redis_url: str, batch_max: int) -> None:
    """Past ``out_of_order_window`` the refused event is dead-lettered with an error log
    naming the call and a counter; the call's later events follow it (blocked, also
    those written afterwards), in seq order; the other calls all close; once the backend
    has the lost event, a replay completes the ticket."""
    stuck, lost, first, tail = _one_call_lost_its_first_event(traces)
    others = {e.call_id for e in first} - {stuck}
    mine = sorted(e.seq for e in first + tail if e.call_id == stuck)
    before = METRICS.get("events.pusher.out_of_order_dead_lettered")
    with watch("events.pusher.out_of_order_dead_letter") as logs:
        async with TicketSink(SECRET) as sink:
            cfg = fast(redis_url, sink, partitions=1, batch_size=20, batch_max=batch_max,
                       out_of_order_window=0.3)
            keys = keys_for(cfg)
            r = aioredis.from_url(redis_url)
            try:
                async with Pusher(cfg) as pusher, CallEventPipeline(redis_url, cfg) as pipe:
                    await pipe.outbox.write(first)
                    async with asyncio.timeout(15):
                        await sink.wait_for(_closed(others))
                        await logs["events.pusher.out_of_order_dead_letter"].seen.wait()
                    await pipe.outbox.write(tail)
                    async with asyncio.timeout(15):
                        await pusher.wait_idle()
                    st = await read_status(r, keys)
                    dead = await list_dead_letters(r, keys)
                    # the backend is repaired (it gets the lost event), then a replay
                    sink.store.apply(lost.to_json())
                    assert await replay_dead_letters(r, keys, stuck) == len(mine)
                    async with asyncio.timeout(15):
                        await sink.wait_for(_closed({stuck}))
                        await pusher.wait_idle()
                    after = await read_status(r, keys)
            finally:
                await r.aclose()
    assert [(d.call_id, d.seq) for d in dead] == [(stuck, seq) for seq in mine]
    assert dead[0].reason.startswith("out_of_order for 0.3s") and dead[0].attempts >= 1
    assert all(d.reason.startswith("blocked") for d in dead[1:])
    (record,) = logs["events.pusher.out_of_order_dead_letter"].records
    assert record.levelno == logging.ERROR
    assert record.fields["call_id"] == stuck  # type: ignore[attr-defined]
    assert METRICS.get("events.pusher.out_of_order_dead_lettered") == before + 1
    assert (st.dead_letters, st.blocked_calls, st.undelivered, st.events_lost) == (
        len(mine), 1, 0, 0)
    ticket = sink.store.get(stuck)
    assert ticket is not None and [e["seq"] for e in ticket.events] == [1, *mine]
    assert (after.dead_letters, after.blocked_calls, after.events_lost) == (0, 0, 0)
