"""Benchmark (``bench/events_pipeline.py --scale``): scale-out of call events, one run.

1. **Pushers.** New calls per second sustained with p99 ≤ 200 ms from AMI emission
   (the emulator's ``timestampevents`` Timestamp) to the ticket backend's
   acknowledgement, with 1, 2 and 4 ``ivr events push`` processes: at each rate of
   ``--rates`` the three counts run in turn (interleaved, so the shared box's drift hits
   them alike; ``--seconds`` of arrivals each, a fresh outbox; each run records the
   partitions each pusher held) and per count the highest rate whose p99 stayed within
   200 ms with every event delivered is kept.
2. **Two bridges per Asterisk.** CPU per call of the bridge processes (``ivr serve
   --no-pusher``) for the same load: one bridge (``[events] failover`` off, today's
   deployment) vs two (failover on: the owner and a hot standby, each reading the whole
   AMI stream) — the ratio is printed.

Real parts only: the Asterisk emulator (in this process) with the published 12345
dialplan (IVR on the bridges' FastAGI: the second bridge is the dialplan's backup),
``ivr serve`` processes, ``ivr events push`` processes, ``ivr ticket-sink``, a private
redis-server (AOF, appendfsync always).  Usage::

    .venv/bin/python bench/events_pipeline.py --scale [--rates 10,20,40] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ivr.config import load_settings  # noqa: E402
from ivr.demo import SIM_AMI_SECRET, SIM_AMI_USER, _prepare_etc, _publish, agent_scripts  # noqa: E402
from ivr.events.config import EventsConfig  # noqa: E402
from ivr.events.outbox import keys_for, read_status  # noqa: E402
from ivr.redisconn import connect as redis_connect  # noqa: E402
from ivr.redisproc import RedisServer, free_port  # noqa: E402
from ivr.sim.callers import CallerScript  # noqa: E402
from ivr.sim.emulator import Emulator, EmulatorConfig  # noqa: E402

SECRET = "bench-secret"
P99_TARGET_MS = 200.0
PY = sys.executable


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.runs = 0
        self.procs: list[asyncio.subprocess.Process] = []

    async def spawn(self, *argv: str, env: dict[str, str], log: str) -> asyncio.subprocess.Process:
        out = (self.tmp / log).open("wb")
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=out)
        out.close()
        self.procs.append(proc)
        return proc

    async def stop(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _roles(r: Any, key: str) -> dict[str, dict[str, Any]]:
    raw: Any = await r.hgetall(key)
    now = time.time()
    return {k.decode(): rec for k, v in raw.items()
            if now - float((rec := json.loads(v))["updated"]) < 2.0}


async def one_run(b: Bench, emu: Emulator, redis: RedisServer, sink_url: str,
                  agi: list[int], *, rate: float, pushers: int, bridges: int,
                  failover: bool) -> dict[str, Any]:
    """``rate`` new calls/s for ``--seconds`` through ``bridges`` bridge processes and
    ``pushers`` pusher processes on a fresh outbox prefix."""
    args = b.args
    b.runs += 1
    prefix = f"bench-scale-{b.runs}"
    env = dict(os.environ, PYTHONPATH=str(ROOT), IVR_TICKET_SECRET=SECRET,
               IVR_REDIS_URL=redis.url, IVR_TICKET_URL=sink_url, IVR_EVENTS_PREFIX=prefix,
               IVR_EVENTS_PARTITIONS=str(args.partitions))
    cfg = EventsConfig(redis_url=redis.url, stream_prefix=prefix, partitions=args.partitions)
    r = redis_connect(redis.url)
    bridge_procs = []
    for i in range(bridges):
        benv = dict(env, IVR_AMI_PORT=str(emu.ami_port), IVR_AMI_USER=SIM_AMI_USER,
                    IVR_AMI_SECRET=SIM_AMI_SECRET, IVR_AGI_PORT=str(agi[i]),
                    IVR_ASTERISK_CONF_DIR=str(emu.config.etc),
                    IVR_EVENTS_CONSUMER=f"bridge{i + 1}",
                    IVR_EVENTS_FAILOVER="true" if failover else "false")
        bridge_procs.append(await b.spawn(PY, "-m", "ivr", "--log-level", "info", "serve",
                                          "--no-pusher", env=benv, log=f"b{b.runs}-{i}.log"))
    pusher_procs = []
    for i in range(pushers):
        pusher_procs.append(await b.spawn(
            PY, "-m", "ivr", "events", "push", "--consumer", f"p{i}", "--stats-file",
            str(b.tmp / f"p{b.runs}-{i}.json"), env=env, log=f"p{b.runs}-{i}.log"))
    try:
        # ready: the pushers print a line; the bridges own / stand by (failover) or
        # have logged serve.started
        for p in pusher_procs:
            assert p.stdout is not None
            await asyncio.wait_for(p.stdout.readline(), 120)
        roles_key = keys_for(cfg).owner("", "bridges")
        async with asyncio.timeout(120):
            while True:
                if failover:
                    roles = await _roles(r, roles_key)
                    owners = sum(x["role"] == "owner" for x in roles.values())
                    ready = sum(x["role"] == "standby" and x["ready"] for x in roles.values())
                    if owners == 1 and ready == bridges - 1:
                        break
                elif all("serve.started" in (b.tmp / f"b{b.runs}-{i}.log").read_text()
                         for i in range(bridges)):
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # the bridges' start-up is done: measure the calls only
        cpu0 = [cpu_of(p.pid) for p in bridge_procs]
        rng = random.Random(b.runs)
        n = int(rate * args.seconds)
        handles = []
        t0 = time.monotonic()
        for i in range(n):
            handles.append(await emu.place_call(CallerScript(
                number=f"139{i:08d}", exten="12345", menu_digits=[],
                talk_time=rng.uniform(0.5, 2.0), patience=30.0)))
            delay = t0 + (i + 1) / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        arrival_s = time.monotonic() - t0
        # the partitions each pusher holds at the end of the arrivals (they share them, each
        # its fair share, a few seconds after they start)
        leases = [await r.get(keys_for(cfg).lease(p)) for p in range(args.partitions)]
        held: dict[str, int] = {}
        for v in leases:
            name = (v.decode() if isinstance(v, bytes) else str(v or "-/")).split("/")[0]
            held[name] = held.get(name, 0) + 1
        async with asyncio.timeout(120):
            for h in handles:
                await h.wait()
            while True:
                st = await read_status(r, keys_for(cfg))
                if st.written and st.undelivered == 0 and st.pending == 0:
                    break
                await asyncio.sleep(0.1)
        cpu = sum(cpu_of(p.pid) for p in bridge_procs) - sum(cpu0)
    finally:
        for p in pusher_procs:
            await b.stop(p)
        for p in bridge_procs:
            await b.stop(p)
        await r.aclose()
    lat: list[float] = []
    for i in range(pushers):
        f = b.tmp / f"p{b.runs}-{i}.json"
        if f.exists():
            lat += json.loads(f.read_text())["latencies"]
    lat.sort()

    def pct(q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 1) if lat else 0.0

    return {"rate": rate, "pushers": pushers, "bridges": bridges, "failover": failover,
            "calls": n, "arrival_calls_per_s": round(n / arrival_s, 1),
            "events": st.written, "delivered": st.delivered, "lost": st.events_lost,
            "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0),
            "partitions_held": dict(sorted(held.items())),
            "load_1m": round(os.getloadavg()[0], 2),
            "bridge_cpu_ms_per_call": round(cpu / n * 1000, 2)}


async def run(args: argparse.Namespace) -> int:
    rates = [float(x) for x in args.rates.split(",")]
    settings = load_settings(env={})
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmpname:
        tmp = Path(tmpname)
        b = Bench(args, tmp)
        redis = RedisServer(tmp / "redis", persist=True)
        await asyncio.to_thread(redis.start)
        agi = [free_port(), free_port()]
        etc = _prepare_etc(tmp)
        emu = Emulator(EmulatorConfig(etc=etc, agi_host="127.0.0.1", agi_port=agi[0],
                                      speed=args.speed, seed=7, cel=False,
                                      prompts=settings.prompts_dir))
        emu.bus.timestamps = True  # manager.conf timestampevents: emission time per event
        results: list[dict[str, Any]] = []
        try:
            await emu.start()
            source = tmp / "dialplans"
            shutil.copytree(settings.dialplans_dir, source)
            hotline = source / "hotline.yaml"
            hotline.write_text(hotline.read_text("utf-8").replace(
                "agi_port: 4573", f"agi_port: {agi[0]}\n  agi_backup_host: 127.0.0.1\n"
                f"  agi_backup_port: {agi[1]}"), "utf-8")
            await _publish(replace(settings, dialplans_dir=source), etc, emu.ami_port,
                           lambda line: None)
            agent_scripts(emu, random.Random(1))
            sink = await b.spawn(PY, "-m", "ivr", "ticket-sink", "--port", "0",
                                 env=dict(os.environ, IVR_TICKET_SECRET=SECRET,
                                          PYTHONPATH=str(ROOT)), log="sink.log")
            assert sink.stdout is not None
            sink_url = json.loads(await sink.stdout.readline())["events_url"]
            sustained: dict[int, float] = dict.fromkeys((1, 2, 4), 0.0)
            # the pusher counts interleaved at each rate, so the shared box's drift in
            # load hits them alike
            for rate in rates:
                for pushers in (1, 2, 4):
                    res = await one_run(b, emu, redis, sink_url, agi, rate=rate,
                                        pushers=pushers, bridges=1, failover=False)
                    results.append(res)
                    print(json.dumps(res), file=sys.stderr, flush=True)
                    # every rate is tried (one short run's p99 on a shared box is noisy):
                    # the highest that met the target counts
                    if res["p99_ms"] <= P99_TARGET_MS and res["lost"] == 0:
                        sustained[pushers] = max(sustained[pushers],
                                                 res["arrival_calls_per_s"])
            cpu_runs = []
            for bridges, failover in ((1, False), (2, True)):
                res = await one_run(b, emu, redis, sink_url, agi, rate=args.cpu_rate,
                                    pushers=2, bridges=bridges, failover=failover)
                cpu_runs.append(res)
                print(json.dumps(res), file=sys.stderr, flush=True)
            await b.stop(sink)
        finally:
            for p in b.procs:
                if p.returncode is None:
                    p.kill()
                    await p.wait()
            await emu.close()
            await asyncio.to_thread(redis.stop)
    one, two = cpu_runs
    ratio = two["bridge_cpu_ms_per_call"] / max(one["bridge_cpu_ms_per_call"], 1e-9)
    summary = {
        "p99_target_ms": P99_TARGET_MS, "rates_tried": rates, "seconds": args.seconds,
        "sustained_calls_per_s": {str(k): v for k, v in sustained.items()},
        "runs": results,
        "bridge_cpu_ms_per_call": {"one_bridge": one["bridge_cpu_ms_per_call"],
                                   "two_bridges_failover": two["bridge_cpu_ms_per_call"]},
        "cpu_rate_calls_per_s": args.cpu_rate,
        "two_vs_one_bridge_cpu_ratio": round(ratio, 2),
        "cores": os.cpu_count(), "load_before": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(summary, indent=2))
    print(f"sustained calls/s at p99 <= {P99_TARGET_MS:g} ms: "
          + ", ".join(f"{k} pusher(s) {v:g}" for k, v in sustained.items())
          + f"; bridge CPU per call, two bridges (failover) / one: {ratio:.2f}")
    lost = sum(x["lost"] for x in results + cpu_runs)
    return 0 if lost == 0 else 1


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--scale", action="store_true",
                    help="scale-out: sustained calls/s at p99 <= 200 ms with 1, 2, 4 "
                    "pushers, and bridge CPU per call of two bridges (failover) vs one")
    ap.add_argument("--rates", default="5,10,20,40",
                    help="--scale: new calls/s tried in turn per pusher count")
    ap.add_argument("--cpu-rate", type=float, default=10.0,
                    help="--scale: calls/s of the one-vs-two-bridges CPU runs")
    ap.add_argument("--speed", type=float, default=1.0,
                    help="--scale: emulator time scale (1: its AMI Timestamps are real "
                    "time, which the latency needs)")
