"""Benchmark: AMI events → builder → Redis outbox → pusher → ticket sink.

The Asterisk emulator (``ivr/sim``) is not used yet: a *generator* process replays the
trace-02 call (IVR, queue, agent, recording, three-way; the 38 AMI events the builder
consumes, i.e. what an AMI eventfilter passes) as N synthetic calls (Linkedid/Uniqueid,
channels, conference and caller number rewritten per call) at ``--rate`` new calls/s,
each call's events spread over ``--call-seconds``, as AMI bytes over TCP.  The *bridge*
process parses them with the AMI codec and feeds ``CallEventPipeline``; ``ivr events
push`` and ``ivr ticket-sink`` run as their own processes; Redis is a private
redis-server (AOF, appendfsync always).

Latency = time the bridge parsed the AMI event that produced a call event → time the
pusher got the sink's 200 for it.  Usage:

    .venv/bin/python bench/events_pipeline.py --rate 150 --seconds 30 --call-seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ivr.ami.codec import AMIParser, encode_message  # noqa: E402
from ivr.ami.messages import Event  # noqa: E402
from ivr.events.config import EventsConfig  # noqa: E402
from ivr.events.outbox import keys_for, read_status  # noqa: E402
from ivr.events.pipeline import CallEventPipeline  # noqa: E402
from ivr.events.synth import load_call_template, synth_call  # noqa: E402
from ivr.redisproc import RedisServer  # noqa: E402

TRACE = ROOT.parent / "shared" / "asterisk-traces" / "02-ivr-queue-record-threeway"
SECRET = "bench-secret"
ME = str(Path(__file__).resolve())


# -- generator: plays synthetic calls as AMI bytes --------------------------------------

async def generator(args: argparse.Namespace) -> None:
    template = load_call_template(Path(args.trace) / "ami.server.raw")
    k_events = len(template)
    offsets = [i * args.call_seconds / (k_events - 1) for i in range(k_events)]
    total_calls = int(args.rate * args.seconds)
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        frames: dict[int, list[bytes]] = {}
        nxt = [0] * k_events  # next call whose event k is due
        t0 = time.monotonic()
        while nxt[-1] < total_calls:
            now = time.monotonic() - t0
            out: list[bytes] = []
            for k in range(k_events):
                while nxt[k] < total_calls and nxt[k] / args.rate + offsets[k] <= now:
                    n = nxt[k]
                    call = frames.get(n)
                    if call is None:
                        call = frames[n] = [encode_message(e) for e in synth_call(template, n)]
                    out.append(call[k])
                    if k == k_events - 1:
                        del frames[n]
                    nxt[k] += 1
            if out:
                writer.write(b"".join(out))
                await writer.drain()
            await asyncio.sleep(0.005)
        writer.close()
        await writer.wait_closed()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print(json.dumps({"cpu": ru.ru_utime + ru.ru_stime}), flush=True)
        done.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": port}), flush=True)
    await done.wait()
    server.close()


# -- bridge: AMI parser + CallEventPipeline ----------------------------------------------

async def bridge(args: argparse.Namespace) -> None:
    cfg = EventsConfig(redis_url=args.redis_url, stream_prefix=args.prefix,
                       partitions=args.partitions)
    reader, _writer = await asyncio.open_connection("127.0.0.1", args.port)
    parser = AMIParser()
    ami = 0
    max_open = 0
    write_lat: list[float] = []
    t0 = time.monotonic()

    gc_pauses: list[float] = []
    gc_start = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        elif info.get("generation") == 2:
            gc_pauses.append(time.perf_counter() - gc_start[0])

    import gc

    gc.callbacks.append(on_gc)
    lags: list[float] = []

    async def watch_loop() -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - t - 0.01)

    watcher = asyncio.create_task(watch_loop())

    def record(start: float) -> Any:
        return lambda _f: write_lat.append(time.perf_counter() - start)

    async with CallEventPipeline(args.redis_url, cfg) as pipe:
        while data := await reader.read(65536):
            for item in parser.feed(data):
                if isinstance(item, Event):
                    ami += 1
                    fut = pipe.submit_ami_event(item)
                    if fut is not None and ami % 10 == 0:
                        fut.add_done_callback(record(time.perf_counter()))
            max_open = max(max_open, pipe.builder.open_calls)
            if pipe.outbox.backlog > 20_000:
                await pipe.flush()
        await pipe.flush()
        wall = time.monotonic() - t0
        built = pipe.events_built
    ru = resource.getrusage(resource.RUSAGE_SELF)
    write_lat.sort()
    wl = {q: round(write_lat[min(len(write_lat) - 1, int(q * len(write_lat)))] * 1000, 1)
          for q in (0.5, 0.99)} if write_lat else {}
    watcher.cancel()
    lags.sort()
    print(json.dumps({"write_latency_ms": wl,
                      "loop_lag_ms": {"p99": round(lags[int(0.99 * len(lags))] * 1000, 1),
                                      "max": round(lags[-1] * 1000, 1)} if lags else {},
                      "gc2_pauses_ms": [round(x * 1000) for x in gc_pauses],
                      "ami_events": ami, "call_events": built, "wall": wall,
                      "cpu": ru.ru_utime + ru.ru_stime, "max_open_calls": max_open}),
          flush=True)


# -- orchestrator ------------------------------------------------------------------------

def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def spawn(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *args, env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE)


async def first_line(proc: asyncio.subprocess.Process, wait: float = 30) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), wait)
    out: dict[str, Any] = json.loads(line)
    return out


async def orchestrate(args: argparse.Namespace) -> int:
    py = sys.executable
    me = ME
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp) / "redis", persist=not args.no_fsync)
        await asyncio.to_thread(redis.start)
        procs: list[asyncio.subprocess.Process] = []
        try:
            env = dict(os.environ, IVR_TICKET_SECRET=SECRET, PYTHONPATH=str(ROOT))
            sink = await spawn(py, "-m", "ivr.events", "ticket-sink", "--port", "0",
                               *(["--no-validate"] if args.no_validate else []), env=env)
            procs.append(sink)
            sink_url = (await first_line(sink))["events_url"]
            prefix = "bench"
            penv = dict(env, IVR_REDIS_URL=redis.url, IVR_TICKET_URL=sink_url,
                        IVR_EVENTS_PREFIX=prefix, IVR_EVENTS_PARTITIONS=str(args.partitions),
                        IVR_EVENTS_CONCURRENCY=str(args.concurrency),
                        IVR_EVENTS_BATCH_MAX=str(args.batch_max))
            stats_file = Path(tmp) / "pusher.json"
            pusher = await spawn(py, "-m", "ivr.events", "events", "push", "--consumer", "bench",
                                 "--stats-file", str(stats_file), env=penv)
            procs.append(pusher)
            await first_line(pusher)
            gen = await spawn(py, me, "--role", "generator", "--rate", str(args.rate),
                              "--seconds", str(args.seconds), "--call-seconds",
                              str(args.call_seconds), "--trace", args.trace, env=env)
            procs.append(gen)
            port = (await first_line(gen))["port"]
            br = await spawn(py, me, "--role", "bridge", "--port", str(port), "--redis-url",
                             redis.url, "--prefix", prefix, "--partitions",
                             str(args.partitions), env=env)
            procs.append(br)
            t0 = time.monotonic()
            bstats = await first_line(br, args.seconds + args.call_seconds + 120)
            await br.wait()
            gstats = await first_line(gen)
            await gen.wait()
            # drain: bounded polling of the outbox counters (the pusher is another process)
            cfg = EventsConfig(redis_url=redis.url, stream_prefix=prefix,
                               partitions=args.partitions)
            import redis.asyncio as aioredis

            r = aioredis.from_url(redis.url)
            deadline = time.monotonic() + 60
            while True:
                st = await read_status(r, keys_for(cfg))
                if st.delivered + st.dead_letters >= st.written or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            drain = time.monotonic() - t0 - bstats["wall"]
            await r.aclose()
            pusher_cpu = cpu_of(pusher.pid)
            sink_cpu = cpu_of(sink.pid)
            redis_cpu = cpu_of(redis.proc.pid) if redis.proc else 0.0
            pusher.send_signal(signal.SIGTERM)
            await pusher.wait()
            pstats = json.loads(stats_file.read_text())
        finally:
            for p in procs:
                if p.returncode is None:
                    p.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(p.wait(), 10)
                    except TimeoutError:
                        p.kill()
            await asyncio.to_thread(redis.stop)
    lat = sorted(pstats["latencies"])

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

    calls = int(args.rate * args.seconds)
    result = {
        "rate_target": args.rate, "calls": calls, "call_seconds": args.call_seconds,
        "max_open_calls": bstats["max_open_calls"],
        "bridge_wall_s": round(bstats["wall"], 2),
        # calls arrive for --seconds, the last one lasts --call-seconds more
        "calls_per_s": round(calls / max(0.001, bstats["wall"] - args.call_seconds), 1),
        "ami_events_per_s": round(bstats["ami_events"] / bstats["wall"], 1),
        "call_events": bstats["call_events"],
        "call_events_per_s": round(bstats["call_events"] / bstats["wall"], 1),
        "written": st.written, "delivered": st.delivered, "dead_letters": st.dead_letters,
        "events_lost": st.events_lost, "drain_after_last_ami_s": round(drain, 2),
        "bridge_to_redis_ms": bstats["write_latency_ms"],
        "bridge_loop_lag_ms": bstats["loop_lag_ms"],
        "bridge_gc2_pauses_ms": bstats["gc2_pauses_ms"],
        "latency_ms": {"p50": round(pct(0.50), 1), "p90": round(pct(0.90), 1),
                       "p99": round(pct(0.99), 1), "max": round(pct(1.0), 1)},
        "cpu_ms_per_call": {
            "bridge": round(bstats["cpu"] / calls * 1000, 2),
            "generator": round(gstats["cpu"] / calls * 1000, 2),
            "pusher": round(pusher_cpu / calls * 1000, 2),
            "sink": round(sink_cpu / calls * 1000, 2),
            "redis": round(redis_cpu / calls * 1000, 2)},
        "redis_fsync": not args.no_fsync, "sink_validates": not args.no_validate,
        "partitions": args.partitions, "batch_max": args.batch_max,
        "cores": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    return 0 if st.events_lost == 0 and st.delivered == st.written else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=["orchestrator", "generator", "bridge"],
                    default="orchestrator")
    ap.add_argument("--rate", type=float, default=150.0, help="new calls per second")
    ap.add_argument("--seconds", type=float, default=30.0, help="how long calls arrive")
    ap.add_argument("--call-seconds", type=float, default=20.0, help="length of each call")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--batch-max", type=int, default=100, help="events per POST (1=single)")
    ap.add_argument("--no-fsync", action="store_true", help="Redis without AOF")
    ap.add_argument("--no-validate", action="store_true", help="sink skips JSON Schema")
    ap.add_argument("--trace", default=str(TRACE))
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--redis-url", default="")
    ap.add_argument("--prefix", default="bench")
    args = ap.parse_args()
    if args.role == "generator":
        asyncio.run(generator(args))
        return 0
    if args.role == "bridge":
        asyncio.run(bridge(args))
        return 0
    return asyncio.run(orchestrate(args))


if __name__ == "__main__":
    sys.exit(main())
