"""Issue 11 in one run: (1) the time from an agent's request to the target's leg ringing,
p50/p99, for an attended transfer and for a three-way call with a department, while the
emulator takes 150 new calls/s; (2) recording
post-processing throughput, the product's pydub path vs ffmpeg called directly
(``bench/recordings.py``, run as it is).

(1) The emulator runs in its own process (``bench/sim_load.py``'s child, scenario
``basic``: Answer, a menu digit, Playback, Queue(load) answered by a Local member, the
caller talks then hangs up) with an ``[outbound]`` context added (``Ringing()``, 1 s,
``Answer()``).  This process runs the product: the application of ``ivr/app.py`` (the
call-event pipeline into a private Redis, the live call model, the bridge's AMI client,
``app[TRANSFERS]``) — every AMI event of the load goes through it.  Every ``--every``-th
call an agent answers gets an attended transfer (``TransferService.attended`` → ``Atxfer``
on the agent's leg) to a number of the dial context, ``--after`` s after the answer; the
latency is from the call of ``attended()`` to the bridge seeing the target's ``;1``
ringing (``Newstate``, the service's ``ringing`` change); the consultation is then
cancelled (the agent back with the caller).  Both figures are the bridge's own view: the
request goes out over AMI and the ringing comes back over AMI under the full load.
Three-way calls, in the same run: every third sampled call gets ``ThreeWayService.add``
(``app[THREEWAY]``: the checks, the ``Redirect`` of caller and agent into the call's
ConfBridge, the ``Originate`` of the department's leg through the rendered
``ivr-threeway-leg`` context and the dial context) to a number of its own; the latency is
from the call of ``add()`` to the department's ``;1`` ringing.
Anchor, in the same run: every third sampled call gets the bare ``Atxfer`` instead, sent
on the same AMI client without the service (no checks, no call events), its ringing
seen by a plain AMI consumer — the ratios are each service's cost over that AMI round
trip.

    .venv/bin/python bench/transfers.py [--rate 150] [--duration 20] [--every 10]

The last line printed is one JSON object with both parts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.sim_load import make_basic_etc  # noqa: E402
from ivr.ami.client import AMISettings  # noqa: E402
from ivr.ami.messages import Event  # noqa: E402
from ivr.app import AMI_CONSUMERS, BRIDGE, PIPELINE, AppOptions, build_app, running  # noqa: E402
from ivr.asterisk.conf import render_conf  # noqa: E402
from ivr.config import load_settings  # noqa: E402
from ivr.dialplan.render import threeway_contexts  # noqa: E402
from ivr.events.model import CallEvent  # noqa: E402
from ivr.redisproc import RedisServer  # noqa: E402
from ivr.threeway.service import THREEWAY, ThreeWayService  # noqa: E402
from ivr.transfers.service import TRANSFERS, TransferService  # noqa: E402
from ivr.transfers.state import Change  # noqa: E402

OUTBOUND = ("\n[outbound]\nexten => _X.,1,Ringing()\n same => n,Wait(1)\n"
            " same => n,Answer()\n same => n,Wait(600)\n same => n,Hangup()\n")
TARGET = "86001"  # a number of the dial context, in no directory entry (no hours)


def department(n: int) -> str:
    """The three-way target of sample ``n``: a number of its own (its leg's channel names
    the sample), of the dial context, in no directory entry."""
    return f"87{n % 1000:03d}"


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))]


class BareRinging:
    """The anchor's AMI consumer: the first ``Newstate Ringing`` of a target leg per call."""

    consumed_ami_events = frozenset({"Newstate"})
    consumed_variables: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[str]] = {}  # call id -> target channel
        # three-way department number -> perf_counter of its first ringing
        self.departments: dict[str, asyncio.Future[float]] = {}

    def on_ami_event(self, event: Event) -> None:
        chan = event.get("Channel") or ""
        if (self.departments and chan.startswith("Local/87") and chan.endswith(";1")
                and event.get("ChannelStateDesc") == "Ringing"):
            number = chan[len("Local/"):].split("@", 1)[0]
            ring = self.departments.get(number)
            if ring is not None and not ring.done() and "@outbound" in chan:
                ring.set_result(time.perf_counter())
        fut = self.waiting.get(event.get("Linkedid") or "")
        if (fut is not None and not fut.done() and chan.startswith(f"Local/{TARGET}@")
                and chan.endswith(";1") and event.get("ChannelStateDesc") == "Ringing"):
            fut.set_result(chan)

    async def resync(self, client: Any) -> bool:
        return True


class Sampler:
    """Every ``every``-th answered call: an attended transfer, timed to the ringing."""

    def __init__(self, svc: TransferService, every: int, after_s: float,
                 bare: BareRinging, client: Any, threeway: ThreeWayService) -> None:
        self.svc, self.every, self.after_s = svc, every, after_s
        self.threeway = threeway
        self.threeway_latency: list[float] = []
        self.bare, self.client = bare, client
        self.bare_latency: list[float] = []
        self.connected = 0
        # call id -> perf_counter when attended() was called (its ringing can come before
        # attended() returns: the events of the Atxfer can precede its response)
        self.requested: dict[str, float] = {}
        self.latency: list[float] = []
        self.refused: dict[str, int] = {}
        self.outcomes: dict[str, int] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        svc.listeners.append(self.on_change)

    def on_events(self, events: list[CallEvent]) -> None:
        for ev in events:
            if ev.type == "agent.connected":
                self.connected += 1
                if self.connected % self.every == 0:
                    k = self.connected // self.every
                    job = (self.bare_atxfer(ev.call_id) if k % 3 == 0 else
                           self.transfer(ev.call_id) if k % 3 == 1 else
                           self.add_department(ev.call_id, k))
                    task = asyncio.get_running_loop().create_task(job)
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)

    def on_change(self, change: Change) -> None:
        t = change.transfer
        if change.what == "ringing" and t.call_id in self.requested:
            self.latency.append(time.perf_counter() - self.requested.pop(t.call_id))
        if t.done:
            key = f"{t.outcome}:{t.reason}"
            self.outcomes[key] = self.outcomes.get(key, 0) + 1

    async def bare_atxfer(self, call_id: str) -> None:
        """The anchor: Atxfer on the agent's leg straight over AMI, timed to the ringing."""
        await asyncio.sleep(self.after_s)
        try:
            agent = self.svc.legs(call_id)[1].name
        except Exception as exc:  # noqa: BLE001 - the caller hung up first
            self.refused[f"anchor {type(exc).__name__}"] = 1 + self.refused.get(
                f"anchor {type(exc).__name__}", 0)
            return
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.bare.waiting[call_id] = fut
        started = time.perf_counter()
        try:
            await self.client.send_action("Atxfer", {"Channel": agent, "Context": "outbound",
                                                     "Exten": TARGET}, timeout=10)
            async with asyncio.timeout(30):
                target = await fut
            self.bare_latency.append(time.perf_counter() - started)
            await self.client.send_action("Hangup", {"Channel": target}, timeout=10)
        except Exception as exc:  # noqa: BLE001 - counted
            name = f"anchor {type(exc).__name__}"
            self.refused[name] = self.refused.get(name, 0) + 1
        finally:
            self.bare.waiting.pop(call_id, None)

    async def add_department(self, call_id: str, k: int) -> None:
        """A three-way call: ``add()`` to the department's leg ringing."""
        await asyncio.sleep(self.after_s)
        number = department(k)
        ring: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.bare.departments[number] = ring
        started = time.perf_counter()
        try:
            await self.threeway.add(call_id, number)
            async with asyncio.timeout(30):
                rang = await ring
            self.threeway_latency.append(rang - started)
        except Exception as exc:  # noqa: BLE001 - counted (the caller hung up first …)
            name = f"threeway {type(exc).__name__}"
            self.refused[name] = self.refused.get(name, 0) + 1
        finally:
            self.bare.departments.pop(number, None)

    async def transfer(self, call_id: str) -> None:
        await asyncio.sleep(self.after_s)
        self.requested[call_id] = time.perf_counter()
        try:
            t = await self.svc.attended(call_id, TARGET)
            await self.svc.wait(t, phase="answered", timeout=30)
            if not t.done:
                await self.svc.cancel(call_id)
        except Exception as exc:  # noqa: BLE001 - counted (the caller hung up first …)
            self.requested.pop(call_id, None)
            name = type(exc).__name__
            self.refused[name] = self.refused.get(name, 0) + 1


async def load_part(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-transfers-"))
    agents = int(args.rate * (args.talk * 1.3 + 3)) + 200
    etc = make_basic_etc(tmp / "etc", agents)
    conf = etc / "extensions.conf"
    # the rendered three-way contexts (ivr/dialplan/render.py) and their dial context
    text = conf.read_text().replace("[globals]\n", "[globals]\nIVR_DIAL_CONTEXT=outbound\n", 1)
    conf.write_text(text + OUTBOUND + "\n" + render_conf(threeway_contexts()))
    redis = RedisServer(tmp / "redis")
    redis.start()
    cmd = [sys.executable, str(ROOT / "bench" / "sim_load.py"), "--child", "--scenario",
           "basic", "--etc", str(etc), "--rate", str(args.rate), "--talk", str(args.talk),
           "--duration", str(args.duration), "--drain", str(args.drain),
           "--record-dir", str(tmp / "rec")]
    proc = await asyncio.create_subprocess_exec(*cmd, stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        port = json.loads(await proc.stdout.readline())["port"]
        base = load_settings(env={})
        settings = replace(base, ami_host="127.0.0.1", ami_port=port, ami_user="ivr",
                           ami_secret="ivrsecret", agi_host="127.0.0.1", agi_port=0,
                           redis_url=redis.url, events=base.events.with_(
                               redis_url=redis.url,
                               stream_prefix=f"bench:transfers:{uuid.uuid4().hex[:8]}"))
        app = build_app(settings, AppOptions(pusher=False, watch_s=None,
                                             ami=AMISettings(ping_interval=0)))
        bare = BareRinging()
        app[AMI_CONSUMERS].append(bare)  # first in line; it only looks at Newstate
        async with running(app):
            sampler = Sampler(app[TRANSFERS], args.every, args.after, bare, app[BRIDGE].ami,
                              app[THREEWAY])
            app[PIPELINE].add_listener(sampler.on_events)
            cpu0 = time.process_time()
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
            final: dict[str, Any] = {}
            while line := await proc.stdout.readline():
                rec = json.loads(line)
                if rec.get("final"):
                    final = rec
                    break
                print(json.dumps({"t": rec["t"], "placed": rec["placed"],
                                  "calls_up": rec["calls_up"],
                                  "transfers_timed": len(sampler.latency),
                                  "threeways_timed": len(sampler.threeway_latency)}),
                      flush=True)
            bridge_cpu = time.process_time() - cpu0
            for task in list(sampler.tasks):
                task.cancel()
            await asyncio.gather(*sampler.tasks, return_exceptions=True)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        redis.stop()
    lat, anchor, tw = sampler.latency, sampler.bare_latency, sampler.threeway_latency

    def ms(values: list[float]) -> dict[str, float] | None:
        return {"p50": round(pct(values, 50) * 1000, 1), "p99": round(pct(values, 99) * 1000, 1),
                "max": round(max(values) * 1000, 1), "n": len(values)} if values else None

    gen_s = final.get("generator_s") or args.duration
    return {
        "target_rate": args.rate, "duration_s": args.duration, "talk_s": args.talk,
        "calls_placed": final.get("placed"), "calls_per_s": round(final.get("placed", 0)
                                                                 / gen_s, 1),
        "answered_by_agent": final.get("answered"), "emulator_cpu_s": round(
            final.get("cpu_s", 0.0), 1),
        "bridge_cpu_s": round(bridge_cpu, 1),
        "transfers_timed": len(lat),
        "request_to_ringing_ms": ms(lat),
        "anchor_bare_atxfer_to_ringing_ms": ms(anchor),
        "ratio_p50": round(pct(lat, 50) / pct(anchor, 50), 2) if lat and anchor else None,
        "ratio_p99": round(pct(lat, 99) / pct(anchor, 99), 2) if lat and anchor else None,
        "threeways_timed": len(tw),
        "threeway_request_to_department_ringing_ms": ms(tw),
        "threeway_ratio_p50": round(pct(tw, 50) / pct(anchor, 50), 2) if tw and anchor else None,
        "threeway_ratio_p99": round(pct(tw, 99) / pct(anchor, 99), 2) if tw and anchor else None,
        "outcomes": sampler.outcomes, "refused": sampler.refused,
    }


def recordings_part(args: argparse.Namespace) -> dict[str, Any]:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "recordings.py"),
                          "--calls", str(args.rec_calls), "--seconds", str(args.rec_seconds),
                          "--rounds", str(args.rec_rounds)],
                         check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        print(line, flush=True)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=150.0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--talk", type=float, default=15.0)
    ap.add_argument("--drain", type=float, default=60.0)
    ap.add_argument("--every", type=int, default=10, help="transfer every N-th answered call")
    ap.add_argument("--after", type=float, default=1.0, help="seconds after the answer")
    ap.add_argument("--rec-calls", type=int, default=6)
    ap.add_argument("--rec-seconds", type=float, default=60.0)
    ap.add_argument("--rec-rounds", type=int, default=3)
    args = ap.parse_args()
    load = asyncio.run(load_part(args))
    rec = recordings_part(args)
    print(json.dumps({"transfers_under_load": load, "recordings": rec,
                      "python": platform.python_version(), "cpus": os.cpu_count()},
                     ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
