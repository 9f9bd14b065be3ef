"""The pusher as a real process, killed with SIGKILL mid-batch; and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from ivr.events.config import EventsConfig
from ivr.events.outbox import OutboxStatus, keys_for, read_status
from ivr.redisproc import free_port
from ivr.ticketsink.client import SinkClient
from ivr.ticketsink.server import TicketSink
from tests.test_events_delivery import (
    SECRET,
    _shape,
    actual_tickets,
    expected_tickets,
    interleaved_ami,
    write_all,
)

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # real processes started, killed and restarted


def env_for(cfg: EventsConfig) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "IVR_REDIS_URL": cfg.redis_url, "IVR_TICKET_URL": cfg.ticket_url,
        "IVR_TICKET_SECRET": cfg.secret, "IVR_EVENTS_PREFIX": cfg.stream_prefix,
        "IVR_EVENTS_PARTITIONS": str(cfg.partitions), "IVR_EVENTS_LEASE_MS": "800",
        "IVR_EVENTS_BACKOFF_BASE": "0.01", "IVR_EVENTS_BACKOFF_MAX": "0.2",
        "IVR_EVENTS_BATCH": "50", "PYTHONPATH": str(ROOT),
    })
    return env


async def start_pusher(cfg: EventsConfig, consumer: str,
                       stats: Path | None = None) -> asyncio.subprocess.Process:
    args = [sys.executable, "-m", "ivr", "events", "push", "--consumer", consumer]
    if stats is not None:
        args += ["--stats-file", str(stats)]
    proc = await asyncio.create_subprocess_exec(
        *args, env=env_for(cfg), stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)  # "started" line
    assert json.loads(line)["pusher"] == consumer
    return proc


async def status(cfg: EventsConfig) -> OutboxStatus:
    r = aioredis.from_url(cfg.redis_url)
    try:
        return await read_status(r, keys_for(cfg))
    finally:
        await r.aclose()


async def test_pusher_killed_mid_batch_resumes(traces: Path, redis_url: str,
                                               tmp_path: Path) -> None:
    ami = interleaved_ami(traces, 20)
    expected = expected_tickets(ami)
    total = sum(len(t["events"]) for t in expected.values())
    async with TicketSink(SECRET) as sink:
        sink.faults.latency_ms = 15  # slow backend: the kill lands mid-batch
        cfg = EventsConfig(redis_url=redis_url, ticket_url=sink.events_url,
                           secret=SECRET.decode(), stream_prefix=f"crash:{uuid.uuid4().hex[:8]}",
                           partitions=4)
        assert await write_all(cfg, ami) == total
        first = await start_pusher(cfg, "pusher-a")
        async with asyncio.timeout(30):
            await sink.wait_for(lambda st: st.applied >= total // 3)
        first.send_signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
        mid = await status(cfg)
        assert mid.pending > 0  # read by the dead pusher, never acknowledged
        assert mid.delivered < total  # acknowledged per batch: the batch was cut
        stats_file = tmp_path / "stats.json"
        second = await start_pusher(cfg, "pusher-b", stats_file)
        try:
            async with asyncio.timeout(40):
                await sink.wait_for(lambda st: st.applied >= total)
            # Acknowledgements happen in the other process: poll Redis, bounded.
            deadline = time.monotonic() + 20
            while (st := await status(cfg)).delivered < total:
                assert time.monotonic() < deadline, st
                await asyncio.sleep(0.05)
        finally:
            second.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(second.wait(), 20) == 0
    assert actual_tickets(sink) == expected  # nothing missing, nothing doubled, in order
    assert (st.undelivered, st.pending, st.dead_letters, st.events_lost) == (0, 0, 0, 0)
    stats: dict[str, Any] = json.loads(stats_file.read_text())
    assert stats["reclaimed"] > 0  # the dead pusher's pending entries were re-claimed


async def test_cli_status_and_replay(redis_url: str) -> None:
    cfg = EventsConfig(redis_url=redis_url, ticket_url="http://127.0.0.1:9/v1/events",
                       secret="x", stream_prefix=f"cli:{uuid.uuid4().hex[:8]}")
    env = env_for(cfg)

    async def run(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ivr", *args, env=env, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        return proc.returncode or 0, out.decode(), err.decode()

    rc, out, _ = await run("events", "status", "--json")
    assert rc == 0
    obj = json.loads(out)
    assert obj["events_lost"] == 0 and len(obj["partitions"]) == 4
    rc, out, _ = await run("events", "status")
    assert rc == 0 and "dead letters" in out and "死信" in out
    rc, out, _ = await run("events", "replay", "--json")
    assert rc == 0 and json.loads(out) == {"replayed": 0}
    env.pop("IVR_REDIS_URL")
    rc, _, err = await run("events", "status")
    assert rc == 2 and "IVR_REDIS_URL" in err


async def start_sink(port: int, store: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ivr", "ticket-sink", "--port", str(port),
        "--store", str(store), "--latency-ms", "3",
        env=env, stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    assert json.loads(line)["url"] == f"http://127.0.0.1:{port}"
    return proc


async def applied_events(client: SinkClient) -> int:
    return sum(t["last_seq"] for t in await client.tickets(events=False))


async def test_sink_and_pusher_both_killed(traces: Path, redis_url: str,
                                           tmp_path: Path) -> None:
    """kill -9 of the sink (file store) and of the pusher mid-delivery: the restarted
    pair ends with exactly the fault-free tickets."""
    ami = interleaved_ami(traces, 20)
    expected = expected_tickets(ami)
    total = sum(len(t["events"]) for t in expected.values())
    port = free_port()
    store = tmp_path / "tickets.json"
    cfg = EventsConfig(redis_url=redis_url, ticket_url=f"http://127.0.0.1:{port}/v1/events",
                       secret=SECRET.decode(), stream_prefix=f"crash2:{uuid.uuid4().hex[:8]}",
                       partitions=4)
    env = env_for(cfg)
    assert await write_all(cfg, ami) == total
    procs: list[asyncio.subprocess.Process] = []
    try:
        sink = await start_sink(port, store, env)
        procs.append(sink)
        pusher = await start_pusher(cfg, "pusher-a")
        procs.append(pusher)
        async with SinkClient(f"http://127.0.0.1:{port}", SECRET) as client:
            # The sink is another process: poll its API, bounded.
            deadline = time.monotonic() + 30
            while (n := await applied_events(client)) < total // 4:
                assert time.monotonic() < deadline, n
                await asyncio.sleep(0.02)
        sink.kill()
        await sink.wait()
        pusher.kill()
        await pusher.wait()
        sink = await start_sink(port, store, env)
        procs.append(sink)
        procs.append(await start_pusher(cfg, "pusher-b"))
        async with SinkClient(f"http://127.0.0.1:{port}", SECRET) as client:
            deadline = time.monotonic() + 40
            while (st := await status(cfg)).delivered < total:
                assert time.monotonic() < deadline, st
                await asyncio.sleep(0.05)
            tickets = {t["call_id"]: _shape(t) for t in await client.tickets()}
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
                await asyncio.wait_for(p.wait(), 20)
    assert tickets == expected
    assert (st.undelivered, st.dead_letters, st.events_lost) == (0, 0, 0)
