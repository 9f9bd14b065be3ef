"""Builder → Redis outbox → pusher → ticket sink, over a real redis-server and real HTTP,
with faults: afterwards the sink holds exactly the tickets of a fault-free run."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from ivr.ami.messages import Event
from ivr.events.builder import CallEventBuilder
from ivr.events.config import EventsConfig
from ivr.events.model import CallEvent
from ivr.events.outbox import keys_for, read_status, replay_dead_letters
from ivr.events.pipeline import CallEventPipeline
from ivr.events.pusher import Pusher
from ivr.metrics import METRICS
from ivr.redisproc import RedisServer
from ivr.sim.synth_calls import load_call_template, synth_call
from ivr.ticketsink.server import TicketSink
from ivr.ticketsink.tickets import TicketStore

SECRET = b"delivery-secret"
CALLS = 20  # x 20 events = 400 events per test


def interleaved_ami(traces: Path, calls: int, first: int = 0) -> list[Event]:
    """AMI events of ``calls`` synthetic trace-02 calls, interleaved like live traffic."""
    template = load_call_template(next(traces.glob("02*")) / "ami.server.raw")
    per_call = [synth_call(template, n) for n in range(first, first + calls)]
    out: list[Event] = []
    for group in itertools.zip_longest(*per_call):
        out.extend(e for e in group if e is not None)
    return out


def expected_tickets(ami: list[Event]) -> dict[str, Any]:
    """Tickets of a fault-free run: the same events applied directly, in order."""
    b = CallEventBuilder(clock=lambda: 0.0)
    store = TicketStore()
    for ev in ami:
        for ce in b.feed_ami(ev):
            store.apply(ce.to_json())
    return {t.call_id: _shape(t.to_json()) for t in store.tickets.values()}


def _shape(t: dict[str, Any]) -> dict[str, Any]:
    """A ticket without wall-clock times (the builder stamps events when it sees them)."""
    t = {k: v for k, v in t.items() if k not in ("created_at", "updated_at")}
    t["events"] = [{k: v for k, v in e.items() if k not in ("ts",)}
                   | {"data": {k: v for k, v in e["data"].items() if k != "duration_s"}}
                   for e in t["events"]]
    return t


def actual_tickets(sink: TicketSink) -> dict[str, Any]:
    return {t.call_id: _shape(t.to_json()) for t in sink.store.tickets.values()}


def config(redis_url: str, sink: TicketSink, **kw: Any) -> EventsConfig:
    base: dict[str, Any] = dict(
        redis_url=redis_url, ticket_url=sink.events_url, secret=SECRET.decode(),
        stream_prefix=f"test:{uuid.uuid4().hex[:8]}", partitions=4, consumer="pusher-a",
        backoff_base=0.01, backoff_max=0.2, request_timeout=2.0, lease_ms=2000)
    base.update(kw)
    return EventsConfig(**base)


async def write_all(cfg: EventsConfig, ami: list[Event]) -> int:
    async with CallEventPipeline(cfg.redis_url, cfg) as pipe:
        for ev in ami:
            await pipe.on_ami_event(ev)
        return pipe.written


async def deliver_and_check(cfg: EventsConfig, sink: TicketSink, ami: list[Event],
                            deadline_s: float = 30.0) -> Pusher:
    expected = expected_tickets(ami)
    total = sum(len(t["events"]) for t in expected.values())
    async with Pusher(cfg) as pusher:
        written = await write_all(cfg, ami)
        assert written == total
        async with asyncio.timeout(deadline_s):
            await sink.wait_for(lambda st: st.applied >= total)
            await pusher.wait_idle()
    assert actual_tickets(sink) == expected
    # No event ever reached the backend before its predecessor was applied.
    assert sink.store.rejected == 0
    r = aioredis.from_url(cfg.redis_url)
    try:
        st = await read_status(r, keys_for(cfg))
    finally:
        await r.aclose()
    assert (st.written, st.delivered, st.dead_letters, st.undelivered, st.events_lost) == (
        total, total, 0, 0, 0)
    return pusher


BOTH_MODES = pytest.mark.parametrize("batch_max", [100, 1], ids=["batch", "single"])


@BOTH_MODES
async def test_fault_free(traces: Path, redis_url: str, batch_max: int) -> None:
    ami = interleaved_ami(traces, CALLS)
    async with TicketSink(SECRET) as sink:
        pusher = await deliver_and_check(config(redis_url, sink, batch_max=batch_max),
                                         sink, ami)
    assert sink.store.duplicates == 0 and pusher.stats.failures == 0
    assert all(t.status == "closed" for t in sink.store.tickets.values())


@BOTH_MODES
async def test_thirty_percent_errors(traces: Path, redis_url: str, batch_max: int) -> None:
    ami = interleaved_ami(traces, CALLS)
    async with TicketSink(SECRET) as sink:
        sink.faults.error_rate = 0.3
        pusher = await deliver_and_check(config(redis_url, sink, batch_max=batch_max),
                                         sink, ami)
    assert sink.faults_injected > 3  # the faults really happened
    assert pusher.stats.failures >= sink.faults_injected


@pytest.mark.slow
@BOTH_MODES
async def test_requests_timing_out_after_being_applied(traces: Path, redis_url: str,
                                                       batch_max: int) -> None:
    ami = interleaved_ami(traces, CALLS)
    async with TicketSink(SECRET) as sink:
        sink.faults.hang_rate = 0.15 if batch_max == 1 else 0.3
        sink.faults.hang_ms = 400
        pusher = await deliver_and_check(
            config(redis_url, sink, request_timeout=0.15, batch_max=batch_max), sink, ami)
    assert pusher.stats.failures > 0
    assert sink.store.duplicates > 0  # retried after a timeout: acknowledged, not re-applied


async def test_backend_down_for_a_while(traces: Path, redis_url: str) -> None:
    ami = interleaved_ami(traces, CALLS)
    async with TicketSink(SECRET) as sink:
        await sink.go_down(1.0)
        pusher = await deliver_and_check(config(redis_url, sink), sink, ami)
    assert pusher.stats.failures > 0


async def test_redis_restarted(traces: Path, tmp_path: Path) -> None:
    ami = interleaved_ami(traces, CALLS)
    half = len(ami) // 2
    expected = expected_tickets(ami)
    total = sum(len(t["events"]) for t in expected.values())
    errors_before = (METRICS.get("events.pusher.redis_errors")
                     + METRICS.get("events.outbox.write_errors"))
    server = RedisServer(tmp_path / "redis", persist=True)
    await asyncio.to_thread(server.start)
    try:
        async with TicketSink(SECRET) as sink:
            sink.faults.latency_ms = 5  # keep part of the outbox undelivered at restart
            cfg = config(server.url, sink)
            async with Pusher(cfg) as pusher, CallEventPipeline(server.url, cfg) as pipe:
                for ev in ami[:half]:
                    await pipe.on_ami_event(ev)
                await asyncio.to_thread(server.restart)
                for ev in ami[half:]:
                    await pipe.on_ami_event(ev)  # retried by the writer until Redis is back
                await pipe.flush()
                async with asyncio.timeout(40):
                    await sink.wait_for(lambda st: st.applied >= total)
                    await pusher.wait_idle()
                st = await pipe.status()
            assert actual_tickets(sink) == expected
            assert st.written >= total and st.events_lost == 0 and st.undelivered == 0
            errors = (METRICS.get("events.pusher.redis_errors")
                      + METRICS.get("events.outbox.write_errors"))
            assert errors > errors_before  # the restart really hit the pipeline
    finally:
        await asyncio.to_thread(server.stop)


async def test_dead_letters_block_the_call_then_replay(traces: Path, redis_url: str) -> None:
    ami = interleaved_ami(traces, 2)
    b = CallEventBuilder(clock=lambda: 0.0)
    events: list[CallEvent] = [ce for ev in ami for ce in b.feed_ami(ev)]
    call_a, call_b = sorted({e.call_id for e in events})
    a = [e for e in events if e.call_id == call_a]
    bb = [e for e in events if e.call_id == call_b]
    async with TicketSink(SECRET) as sink:
        cfg = config(redis_url, sink, retry_budget=0.3)  # then 500s dead-letter
        r = aioredis.from_url(redis_url)
        keys = keys_for(cfg)
        async with Pusher(cfg) as pusher, CallEventPipeline(redis_url, cfg) as pipe:
            sink.faults.error_rate = 1.0
            await pipe.outbox.write(a[:3])
            async with asyncio.timeout(20):
                await pusher.wait_idle()
            st = await read_status(r, keys)
            # seq 1 failed for its whole budget; 2 and 3 must not overtake it:
            # dead-lettered as blocked
            assert (st.dead_letters, st.blocked_calls, st.delivered) == (3, 1, 0)
            sink.faults.error_rate = 0.0
            await pipe.outbox.write(bb + a[3:5])
            async with asyncio.timeout(20):
                await sink.wait_for(lambda s: s.applied >= len(bb))
                await pusher.wait_idle()
            st = await read_status(r, keys)
            assert (st.dead_letters, st.delivered) == (5, len(bb))
            assert sink.store.get(call_a) is None
            assert await replay_dead_letters(r, keys) == 5
            await pipe.outbox.write(a[5:])
            async with asyncio.timeout(20):
                await sink.wait_for(lambda s: s.applied >= len(events))
                await pusher.wait_idle()
            st = await read_status(r, keys)
        await r.aclose()
        ta = sink.store.get(call_a)
        assert ta is not None and [e["seq"] for e in ta.events] == list(range(1, len(a) + 1))
        assert (st.dead_letters, st.blocked_calls, st.replayed, st.events_lost) == (0, 0, 5, 0)
        assert st.delivered == len(events)


@pytest.mark.parametrize("prefix_partitions", [(4, 8)])
async def test_partition_count_is_fixed(redis_url: str,
                                        prefix_partitions: tuple[int, int]) -> None:
    from ivr.errors import ConfigError

    prefix = f"test:{uuid.uuid4().hex[:8]}"
    first, second = prefix_partitions
    async with CallEventPipeline(redis_url, EventsConfig(stream_prefix=prefix,
                                                         partitions=first)):
        pass
    with pytest.raises(ConfigError, match="partitions"):
        async with CallEventPipeline(redis_url, EventsConfig(stream_prefix=prefix,
                                                             partitions=second)):
            pass


async def test_two_pushers_share_partitions_by_lease(traces: Path, redis_url: str) -> None:
    """Two pushers at once: each partition is delivered by one lease holder at a time,
    so order holds and nothing is doubled or missed."""
    ami = interleaved_ami(traces, CALLS)
    expected = expected_tickets(ami)
    total = sum(len(t["events"]) for t in expected.values())
    async with TicketSink(SECRET) as sink:
        sink.faults.latency_ms = 2
        cfg = config(redis_url, sink)
        # A pusher counts an event once it has read the sink's reply, a moment after the
        # sink applied it: wait for both, each through its own notification.
        delivered = 0
        all_delivered = asyncio.Event()

        def count(_entry: object) -> None:
            nonlocal delivered
            delivered += 1
            if delivered >= total:
                all_delivered.set()

        async with Pusher(cfg.with_(consumer="one"), on_delivered=count) as one, \
                Pusher(cfg.with_(consumer="two"), on_delivered=count) as two:
            await write_all(cfg, ami)
            async with asyncio.timeout(30):
                await sink.wait_for(lambda st: st.applied >= total)
                await all_delivered.wait()
        assert actual_tickets(sink) == expected
        assert sink.store.rejected == 0
        assert one.stats.delivered + two.stats.delivered >= total


async def test_ivr_step_reporter_never_raises(redis_url: str) -> None:
    from ivr.calls.steps import IvrStep

    cfg = EventsConfig(redis_url=redis_url, stream_prefix=f"test:{uuid.uuid4().hex[:8]}")
    pipe = CallEventPipeline(redis_url, cfg)
    await pipe.start()
    await pipe.on_ami_event(Event({"Event": "Newchannel", "Uniqueid": "8.1", "Linkedid": "8.1",
                                   "CallerIDNum": "13912345678", "Context": "from-pstn",
                                   "Exten": "12345"}))
    assert pipe.written == 1
    await pipe.close()
    await pipe.on_ivr_step(IvrStep("8.1", "8.1", "prompt", "12345", "welcome"))  # outbox closed
    assert pipe.errors == 1


async def test_pushers_take_a_fair_share_of_the_partitions(traces: Path,
                                                           redis_url: str) -> None:
    """A second pusher gets half the partitions from the first (handed back between
    batches), a fourth leaves each one; when pushers stop, the rest take their partitions
    again; every event is delivered once, in order."""
    ami = interleaved_ami(traces, CALLS)
    expected = expected_tickets(ami)
    total = sum(len(t["events"]) for t in expected.values())
    async with TicketSink(SECRET) as sink:
        cfg = config(redis_url, sink)  # lease 2 s: the census every 0.67 s
        r = aioredis.from_url(redis_url)
        keys = keys_for(cfg)

        async def owners() -> list[str]:
            vals = [await r.get(keys.lease(p)) for p in range(cfg.partitions)]
            return sorted((v or b"-/").decode().split("/")[0] for v in vals)

        async def until(want: list[str]) -> None:
            async with asyncio.timeout(15):  # the leases are in Redis: nothing to await
                while (got := await owners()) != want:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert got == want

        try:
            async with Pusher(cfg.with_(consumer="a")) as a:
                await until(["a"] * 4)
                async with Pusher(cfg.with_(consumer="b")) as b:
                    await until(["a", "a", "b", "b"])
                    assert a.share == b.share == 2
                    half = len(ami) // 2
                    await write_all(cfg, ami[:half])
                    async with Pusher(cfg.with_(consumer="c")) as c, \
                            Pusher(cfg.with_(consumer="d")) as d:
                        await until(["a", "b", "c", "d"])
                        await write_all(cfg, ami[half:])
                        async with asyncio.timeout(30):
                            await sink.wait_for(lambda st: st.applied >= total)
                        assert c.stats.delivered + d.stats.delivered > 0
                    await until(["a", "a", "b", "b"])  # c and d said they left
                await until(["a"] * 4)
                assert a.leases_lost == 0  # handed back, never taken from it
            assert actual_tickets(sink) == expected
            assert sink.store.rejected == 0
            st = await read_status(r, keys)
            assert st.delivered == st.written == total and st.dead_letters == 0
            assert await r.hlen(keys.pushers) == 0
        finally:
            await r.aclose()
