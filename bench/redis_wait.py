"""What ``[redis] wait_replicas = 1`` costs the call-event outbox, in one run.

One primary and one replica (both ``appendonly yes``, ``appendfsync always``, private
``redis-server`` processes on free ports).  The same stream of call events — synthetic
trace-02 calls, interleaved like live traffic, built by the real builder — is written
through the real :class:`ivr.events.pipeline.CallEventPipeline` with (a) ``wait_replicas
= 0`` (stored = on the primary's disk) and (b) ``wait_replicas = 1`` (stored = also on the
replica: ``WAIT`` after every batch).  Each AMI event is awaited until stored, as the
bridge's feed does when it flushes, so batching is what live traffic gives, not more.
Rounds alternate (a) and (b); the best round of each counts.  The last line printed is
one JSON object with both rates and ``ratio`` (b / a).
Run: ``.venv/bin/python bench/redis_wait.py [--calls 300] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ivr.ami.messages import Event  # noqa: E402
from ivr.events.config import EventsConfig  # noqa: E402
from ivr.events.pipeline import CallEventPipeline  # noqa: E402
from ivr.redisproc import RedisServer  # noqa: E402
from ivr.sim.synth_calls import load_call_template, synth_call  # noqa: E402

TRACES = Path(__file__).resolve().parent.parent / "tests" / "data" / "asterisk-traces"


def interleaved(calls: int, concurrent: int) -> list[Event]:
    """``calls`` trace-02 calls, ``concurrent`` of them at a time, events interleaved."""
    template = load_call_template(next(TRACES.glob("02*")) / "ami.server.raw")
    out: list[Event] = []
    for start in range(0, calls, concurrent):
        group = [synth_call(template, n) for n in range(start, min(start + concurrent, calls))]
        for events in itertools.zip_longest(*group):
            out.extend(e for e in events if e is not None)
    return out


async def one_round(url: str, ami: list[Event], wait: int, window: int) -> tuple[float, int]:
    cfg = EventsConfig(redis_url=url, stream_prefix=f"bench:{uuid.uuid4().hex[:8]}",
                       partitions=4, wait_replicas=wait, wait_timeout_ms=2000)
    async with CallEventPipeline(config=cfg) as pipe:
        t0 = time.perf_counter()
        pending: list[asyncio.Task[None]] = []
        for ev in ami:  # up to `window` AMI events in flight, as a busy AMI stream gives
            pending.append(asyncio.ensure_future(pipe.on_ami_event(ev)))
            if len(pending) >= window:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        await pipe.flush()
        elapsed = time.perf_counter() - t0
        return elapsed, pipe.outbox.written


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--concurrent", type=int, default=50)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    ami = interleaved(args.calls, args.concurrent)
    with tempfile.TemporaryDirectory(prefix="bench-wait-") as tmp:
        primary = RedisServer(Path(tmp) / "p", persist=True)
        primary.start()
        replica = RedisServer(Path(tmp) / "r", persist=True,
                              extra_args=("--replicaof", "127.0.0.1", str(primary.port)))
        replica.start()
        try:
            best: dict[int, float] = {}
            events = 0
            for r in range(args.rounds):
                for wait in (0, 1):
                    elapsed, events = await one_round(primary.url, ami, wait, args.window)
                    rate = events / elapsed
                    best[wait] = max(best.get(wait, 0.0), rate)
                    print(f"round {r + 1} wait_replicas={wait}: {events} events in "
                          f"{elapsed:.2f} s = {rate:,.0f} events/s", flush=True)
        finally:
            replica.stop()
            primary.stop()
    print(json.dumps({
        "bench": "redis_wait", "calls": args.calls, "events": events,
        "events_per_s_wait0": round(best[0]), "events_per_s_wait1": round(best[1]),
        "ratio": round(best[1] / best[0], 3), "python": platform.python_version(),
    }))


if __name__ == "__main__":
    asyncio.run(main())
