"""Fenced pusher leases (issue 13): a pusher paused past its lease delivers and
acknowledges nothing once another one took the partition; per-call order holds across
any number of pushers started, stopped and paused at random moments."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ivr.events.keys import GROUP
from ivr.events.outbox import keys_for, read_status
from ivr.events.pipeline import CallEventPipeline
from ivr.events.pusher import _ACK_LUA, Entry, LeaseLost, Pusher
from ivr.ticketsink.server import TicketSink
from tests.test_events_delivery import (
    SECRET,
    actual_tickets,
    config,
    expected_tickets,
    interleaved_ami,
    write_all,
)


def closed(sink: TicketSink) -> bool:
    return all(any(e["type"] == "call.ended" for e in t.to_json()["events"])
               for t in sink.store.tickets.values())


async def test_paused_pusher_delivers_nothing_after_its_lease_was_taken(
        traces: Path, redis_url: str) -> None:
    ami = interleaved_ami(traces, 20)
    expected = expected_tickets(ami)
    total = sum(len(t["events"]) for t in expected.values())
    async with TicketSink(SECRET) as sink:
        cfg = config(redis_url, sink, partitions=1, lease_ms=400, batch_size=50)
        assert await write_all(cfg, ami) == total
        holding = asyncio.Event()
        resume = asyncio.Event()
        held: list[str] = []

        async def pause_first(_p: int, entries: list[Entry]) -> None:
            if not holding.is_set():  # the first request: hold the batch, paused
                held.extend(e.event_id for e in entries)
                holding.set()
                await resume.wait()

        a = Pusher(cfg.with_(consumer="a"))
        a.before_send = pause_first
        await a.start()
        try:
            await holding.wait()
            assert a.fence[0] == 1 and held  # a holds the lease (token 1) and a batch
            r = aioredis.from_url(redis_url)
            try:
                assert (await read_status(r, keys_for(cfg))).pending == 50
                # b waits for a's lease to expire (a renews nothing while paused), takes
                # the partition with token 2, re-claims a's batch and delivers it all
                async with Pusher(cfg.with_(consumer="b")) as b:
                    async with asyncio.timeout(20):
                        await sink.wait_for(lambda st: st.applied >= total)
                        await b.wait_idle()
                    assert b.fence[0] == 2
                    seen_by_sink = sink.requests
                    resume.set()  # a wakes up holding its batch
                    async with asyncio.timeout(10):
                        await a.lease_lost.wait()
                    assert sink.requests == seen_by_sink  # a sent nothing
                    assert a.stats.delivered == 0 and a.leases_lost == 1
                    # and a stale write is refused atomically (token 1 < 2): an ack
                    # script with a's old token changes nothing
                    ack = r.register_script(_ACK_LUA)
                    keys = keys_for(cfg)
                    assert await ack(keys=[keys.stream(0), keys.stats, keys.fence(0)],
                                     args=[GROUP, 1, "1-1"]) == -1
                    st = await read_status(r, keys)
                    assert st.partitions[0].owner == "b" and st.partitions[0].fence == 2
            finally:
                await r.aclose()
        finally:
            await a.close()
    assert actual_tickets(sink) == expected and closed(sink)
    assert max(sink.store.deliveries.values()) == 1  # no event reached the sink twice
    assert sink.store.duplicates == 0 and sink.store.rejected == 0  # per-call order held
    assert (st.written, st.delivered, st.pending, st.undelivered, st.events_lost) == (
        total, total, 0, 0, 0)


async def test_the_fence_header_and_a_renewal_with_a_stale_token(
        traces: Path, redis_url: str) -> None:
    async with TicketSink(SECRET) as sink:
        cfg = config(redis_url, sink, partitions=1, lease_ms=400)
        ami = interleaved_ami(traces, 1)
        async with Pusher(cfg.with_(consumer="a")) as a:
            await write_all(cfg, ami)
            async with asyncio.timeout(10):
                await sink.wait_for(lambda st: st.applied >= 18)
            token = a.fence[0]
        assert sink.fences == {f"{cfg.stream_prefix}:p0": token}  # the X-Ivr-Fence header
        # a pusher whose token is stale cannot renew, even when the lease is free
        b = Pusher(cfg.with_(consumer="b"))
        try:
            await b._hold_lease(0)
            assert b.fence[0] == token + 1
            b.fence[0] = token  # stale
            b._lease_at[0] = 0.0
            try:
                await b._renew_lease(0)
            except LeaseLost:
                pass
            else:
                raise AssertionError("a stale token renewed the lease")
        finally:
            await b.close()


@pytest.mark.flaky(reruns=1)  # see the session note: to make stable
async def test_random_pushers_started_stopped_and_paused(traces: Path, redis_url: str) -> None:
    """Up to 4 pushers started, stopped (mid-request too) and paused past their lease at
    random moments while events are written: every event delivered, per call in seq
    order; an event reaches the sink twice only if a pusher was stopped while its
    request was in flight (the backend applied it, the ack was lost: the next owner
    re-sends it and the backend answers ``duplicate``)."""
    rnd = random.Random(1313)
    ami = interleaved_ami(traces, 40)
    expected = expected_tickets(ami)
    total = sum(len(t["events"]) for t in expected.values())
    async with TicketSink(SECRET) as sink:
        sink.faults.latency_ms = 4
        cfg = config(redis_url, sink, partitions=4, lease_ms=300, batch_size=10)
        running: dict[str, Pusher] = {}
        sent: dict[str, set[str]] = {}  # pusher -> event ids sent, not yet acknowledged
        pause: set[str] = set()
        in_flight_at_stop: set[str] = set()
        n = 0

        def hooks(name: str) -> Pusher:
            async def before(_p: int, entries: list[Entry]) -> None:
                if name in pause:
                    pause.discard(name)
                    await asyncio.sleep(cfg.lease_ms * 1.5 / 1000)  # paused past the lease
                sent[name].update(e.event_id for e in entries)

            def delivered(e: Entry) -> None:
                sent[name].discard(e.event_id)

            p = Pusher(cfg.with_(consumer=name), on_delivered=delivered)
            p.before_send = before
            sent[name] = set()
            return p

        async def start() -> None:
            nonlocal n
            n += 1
            p = hooks(f"p{n}")
            running[f"p{n}"] = p
            await p.start()

        async def stop(name: str) -> None:
            p = running.pop(name)
            await p.close()
            in_flight_at_stop.update(sent[name])

        async def write() -> None:
            async with CallEventPipeline(cfg.redis_url, cfg) as pipe:
                for i, ev in enumerate(ami):
                    await pipe.on_ami_event(ev)
                    if i % 20 == 0:
                        await asyncio.sleep(0.01)

        await start()
        writer = asyncio.create_task(write())
        stops = pauses = 0
        for _ in range(30):
            await asyncio.sleep(rnd.uniform(0.02, 0.15))  # a random moment
            action = rnd.random()
            if action < 0.4 and len(running) < 4:
                await start()
            elif action < 0.7 and len(running) > 1:
                stops += 1
                await stop(rnd.choice(sorted(running)))
            else:
                pauses += 1
                pause.add(rnd.choice(sorted(running)))
        await writer
        for name in sorted(running)[1:]:
            await stop(name)
        last = next(iter(running.values()))
        async with asyncio.timeout(30):
            await sink.wait_for(lambda st: st.applied >= total)
            await last.wait_idle()
        await stop(next(iter(running)))
        r = aioredis.from_url(redis_url)
        try:
            st = await read_status(r, keys_for(cfg))
        finally:
            await r.aclose()
    assert stops > 3 and pauses > 3 and n >= 4
    assert actual_tickets(sink) == expected and closed(sink)
    assert sink.store.rejected == 0  # never a seq before its predecessor
    twice = {eid for eid, k in sink.store.deliveries.items() if k > 1}
    # duplicates: only events whose request was in flight when their pusher stopped
    assert twice <= in_flight_at_stop, twice - in_flight_at_stop
    assert sink.store.duplicates == sum(k - 1 for k in sink.store.deliveries.values())
    # Whether a paused pusher woke up fenced off here depends on the machine's timing (a
    # busy box may never steal a lease during a pause); that path is pinned down by
    # test_paused_pusher_delivers_nothing_after_its_lease_was_taken.
    assert (st.written, st.delivered, st.pending, st.undelivered, st.events_lost) == (
        total, total, 0, 0, 0)
