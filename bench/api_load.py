"""Benchmark: the HTTP API and its live feed under call load (issue 12).

The emulator (``ivr.sim``, its own process) places ``--rate`` new calls/s, each talking
``--talk`` s ± 20 % after a short menu and a queue answered by a Local agent (the
``basic`` calls of bench/sim_load.py), with ``timestampevents = yes`` (every AMI event
carries its emission time).  The *bridge* is the real application (``ivr.app.build_app``
as ``ivr serve`` builds it: AMI consumers, the call-event pipeline into a private Redis,
the HTTP API on a TCP port) in its own process.  Once ``--calls-up`` calls are up, for
``--window`` s:

* **calls list**: ``--pollers`` clients each GET ``/api/calls`` (a supervisor token, every
  call, numbers masked) back to back with ``--poll-pause`` s between; p50/p99 latency;
* **feed fan-out**: ``--clients`` WebSocket clients on ``/api/feed`` (supervisors: every
  call; ``--deltas``: calls as deltas); delay = client-side receipt of the first message
  that holds a call - the emission time of the call's first AMI event (``Newchannel``,
  which the call model keeps as ``started_at``); one probe client parses every message to
  learn which ``seq`` first held which call, the others only note when each ``seq``
  arrived.

Anchors, in the same run, in an *anchor* process of their own: a bare aiohttp endpoint
serving the same list (the bridge's ``/api/calls`` body, re-read every second, encoded per
request as the API does), polled the same way; and a bare WebSocket broadcast to as many
clients of the ``Newchannel`` events read from the same emulator's AMI (its own session,
filtered to them), coalesced as the feed is (one message per 50 ms at most).  Printed:
figures, and project / anchor ratios.  One JSON line at the end.

    .venv/bin/python bench/api_load.py                     # 150/s, 3,000 up, 200 clients
    .venv/bin/python bench/api_load.py --deltas
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ME = str(Path(__file__).resolve())


def q(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p * len(xs)))] * 1000, 1) if xs else float("nan")


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


async def stdin_line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def loop_lag(lags: list[float]) -> None:
    while True:
        t = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - t - 0.01)


# -- the emulator ----------------------------------------------------------------------

async def emulator(args: argparse.Namespace) -> None:
    from bench.sim_load import make_basic_etc
    from ivr.sim import CallerScript, Emulator, EmulatorConfig
    from ivr.sim.cli import tune_gc

    agents = int(args.rate * (args.talk * 1.3 + 3)) + 200
    etc = make_basic_etc(Path(args.workdir) / "etc", agents)
    conf = etc / "manager.conf"
    conf.write_text(conf.read_text().replace("[general]\n", "[general]\ntimestampevents = yes\n",
                                             1))
    emu = Emulator(EmulatorConfig(etc=etc, ami_port=0, seed=1, cel=False, cdr=False,
                                  prompts=ROOT / "prompts"))
    await emu.start()
    tune_gc()
    emit({"port": emu.ami_port})
    await stdin_line()  # "go": the bridge and the anchor are logged in

    def script(rng: random.Random, i: int) -> CallerScript:
        return CallerScript(number=f"138{i:08d}", exten="6100", context="load-in",
                            menu_digits=[rng.choice("12")],
                            talk_time=args.talk * rng.uniform(0.8, 1.2), patience=None)

    t0 = time.monotonic()
    gen = asyncio.ensure_future(emu.generate(int(args.rate * args.seconds), args.rate, script))
    while not gen.done():
        await asyncio.sleep(1.0)  # progress sampling
        emit({"t": round(time.monotonic() - t0, 1), "calls_up": emu.summary().active,
              "events": emu.bus.count})
    emit({"final": True, "placed": emu.summary().placed})
    await stdin_line()  # "quit"
    await emu.close()


# -- the bridge (the real application, the API in it) ------------------------------------

async def bridge(args: argparse.Namespace) -> None:
    import redis.asyncio as aioredis

    from ivr.ami.client import AMISettings
    from ivr.api.auth import TokenStore
    from ivr.app import AppOptions, build_app, running
    from ivr.config import load_settings
    from ivr.demo import SIM_AMI_SECRET, SIM_AMI_USER
    from ivr.log import setup_logging

    setup_logging("warning", sys.stderr)  # with the fields (why a Redis error, …)
    s = load_settings(env={})
    s = replace(s, ami_host="127.0.0.1", ami_port=args.ami_port, ami_user=SIM_AMI_USER,
                ami_secret=SIM_AMI_SECRET, agi_host="127.0.0.1", agi_port=0,
                redis_url=args.redis_url, http_port=args.http_port,
                asterisk_conf_dir=Path(args.workdir) / "asterisk-conf")
    s = replace(s, events=s.events.with_(stream_prefix=f"bench:api:{uuid.uuid4().hex[:6]}"))
    app = build_app(s, AppOptions(pusher=False, watch_s=None,
                                  ami=AMISettings(ping_interval=0)))
    lags: list[float] = []
    async with running(app):
        r = aioredis.from_url(args.redis_url)
        token, _ = await TokenStore(r, "ivr:api").create("supervisor", name="bench")
        await r.aclose()
        emit({"ready": True, "token": token})
        await stdin_line()  # "start": measure from here
        watcher = asyncio.create_task(loop_lag(lags))
        prof = None
        if args.profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        c0, t0 = cpu_s(), time.monotonic()
        await stdin_line()  # "stop"
        watcher.cancel()
        if prof is not None:
            prof.disable()
            prof.dump_stats(args.profile)
        emit({"final": True, "cpu_share": round((cpu_s() - c0) / (time.monotonic() - t0), 3),
              "loop_lag_ms": {"p99": q(lags, 0.99), "max": q(lags, 1.0)}})
        await stdin_line()  # "quit"


# -- the anchors: a bare JSON endpoint, a bare WebSocket broadcast ----------------------

_NEWCHANNEL = re.compile(rb"Event: Newchannel\r\n(?:[^\r]+\r\n)*?\r\n")
_FIELD = re.compile(rb"(Timestamp|Uniqueid|Linkedid): ([^\r]*)\r\n")


async def anchor(args: argparse.Namespace) -> None:
    import aiohttp
    from aiohttp import web

    clients: set[web.WebSocketResponse] = set()
    box: dict[str, Any] = {"list": {"calls": []}}

    async def get_list(request: web.Request) -> web.StreamResponse:
        return web.json_response(box["list"], dumps=lambda o: json.dumps(o, ensure_ascii=False))

    async def get_ws(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        clients.add(ws)
        async for _ in ws:
            pass
        clients.discard(ws)
        return ws

    pending: list[dict[str, Any]] = []

    async def flush() -> None:  # coalesced as the feed is: a message per 50 ms at most
        while True:
            await asyncio.sleep(0.05)
            if not pending:
                continue
            text = json.dumps(pending)
            pending.clear()
            for ws in list(clients):
                try:
                    await ws.send_str(text)
                except (ConnectionResetError, RuntimeError):
                    clients.discard(ws)

    async def ami() -> None:  # its own AMI session on the same emulator
        reader, writer = await asyncio.open_connection("127.0.0.1", args.ami_port)
        writer.write(b"Action: Login\r\nUsername: ivr\r\nSecret: ivrsecret\r\n\r\n"
                     b"Action: Filter\r\nOperation: Add\r\nFilter: ^Event: Newchannel\r\n\r\n")
        buf = b""
        while data := await reader.read(1 << 16):
            buf += data
            cut = buf.rfind(b"\r\n\r\n") + 4
            if cut < 4:
                continue
            frames, buf = buf[:cut], buf[cut:]
            for m in _NEWCHANNEL.finditer(frames):
                f = dict(_FIELD.findall(m.group(0)))
                if f.get(b"Uniqueid") == f.get(b"Linkedid") and b"Timestamp" in f:
                    pending.append({"call_id": f[b"Linkedid"].decode(),
                                    "ts": float(f[b"Timestamp"])})

    async def refresh() -> None:  # the same list the API serves
        async with aiohttp.ClientSession() as http:
            while True:
                async with http.get(f"http://127.0.0.1:{args.http_port}/api/calls",
                                    headers={"Authorization": f"Bearer {args.token}"}) as r:
                    if r.status == 200:
                        box["list"] = await r.json()
                await asyncio.sleep(1.0)

    app = web.Application()
    app.router.add_get("/list", get_list)
    app.router.add_get("/ws", get_ws)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.anchor_port)
    await site.start()
    tasks = [asyncio.create_task(ami()), asyncio.create_task(refresh()),
             asyncio.create_task(flush())]
    emit({"ready": True})
    lags: list[float] = []
    await stdin_line()  # "start"
    watcher = asyncio.create_task(loop_lag(lags))
    c0, t0 = cpu_s(), time.monotonic()
    await stdin_line()  # "stop"
    watcher.cancel()
    emit({"final": True, "cpu_share": round((cpu_s() - c0) / (time.monotonic() - t0), 3),
          "loop_lag_ms": {"p99": q(lags, 0.99), "max": q(lags, 1.0)}})
    await stdin_line()  # "quit"
    for t in tasks:
        t.cancel()
    await runner.cleanup()


# -- the clients ------------------------------------------------------------------------

_SEQ = re.compile(r'"seq": (\d+), "type": "(\w+)"')


async def clients(args: argparse.Namespace) -> None:
    import aiohttp

    base = f"http://127.0.0.1:{args.http_port}"
    anchor_base = f"http://127.0.0.1:{args.anchor_port}"
    window = {"on": False}
    seq_at: list[dict[int, float]] = [{} for _ in range(args.clients)]  # per client
    first_seen: dict[str, tuple[int, float]] = {}  # call id -> (seq, started_at)
    anchor_delay: list[float] = []
    closed = {"project": 0, "anchor": 0, "refused": 0}
    polled: dict[str, list[float]] = {"project": [], "anchor": []}
    sizes: dict[str, int] = {}
    received = {"project_bytes": 0, "messages": 0}
    timeout = aiohttp.ClientTimeout(total=None)
    http = aiohttp.ClientSession(timeout=timeout,
                                 connector=aiohttp.TCPConnector(limit=0))

    async def project_client(i: int) -> None:
        """A console: reconnects (with the last seq seen) when refused or dropped."""
        known: set[str] = set()
        since: int | None = None
        while True:
            try:
                ws = await http.ws_connect(base + "/api/feed", max_msg_size=0, heartbeat=None)
            except aiohttp.ClientError:
                closed["refused"] += 1
                await asyncio.sleep(0.5)
                continue
            await ws.send_json({"token": args.token, "since": since, "deltas": args.deltas})
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                now = time.time()
                text = msg.data
                received["project_bytes"] += len(text)
                received["messages"] += 1
                m = _SEQ.search(text, 0, 80)
                if m is None:
                    continue
                seq = since = int(m.group(1))
                if window["on"]:
                    seq_at[i].setdefault(seq, now)
                if i == 0 and '"topic": "calls"' in text[:120]:  # the probe
                    body = json.loads(text)
                    calls = body.get("upsert") if body["type"] == "delta" else body.get("data")
                    for c in calls or ():
                        cid = c["call_id"]
                        if cid not in known:
                            known.add(cid)
                            first_seen.setdefault(cid, (seq, c["started_at"]))
            closed["project"] += 1
            await asyncio.sleep(0.5)

    async def anchor_client() -> None:
        ws = await http.ws_connect(anchor_base + "/ws", max_msg_size=0, heartbeat=None)
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            if window["on"]:
                now = time.time()
                anchor_delay.extend(now - e["ts"] for e in json.loads(msg.data))
        closed["anchor"] += 1

    async def poller(kind: str, url: str, headers: dict[str, str]) -> None:
        while True:
            t = time.perf_counter()
            async with http.get(url, headers=headers) as r:
                body = await r.read()
                assert r.status == 200, (url, r.status, body[:200])
            if window["on"]:
                polled[kind].append(time.perf_counter() - t)
                sizes[kind] = len(body)
            await asyncio.sleep(args.poll_pause)

    tasks = [asyncio.create_task(project_client(i)) for i in range(args.clients)]
    tasks += [asyncio.create_task(anchor_client()) for _ in range(args.clients)]
    auth = {"Authorization": f"Bearer {args.token}"}
    for _ in range(args.pollers):
        tasks.append(asyncio.create_task(poller("project", base + "/api/calls", auth)))
        tasks.append(asyncio.create_task(poller("anchor", anchor_base + "/list", {})))
    emit({"ready": True})
    await stdin_line()  # "start"
    c0, t0 = cpu_s(), time.monotonic()
    window["on"] = True
    window_start = time.time()
    await stdin_line()  # "stop"
    window["on"] = False
    window_end = time.time()
    client_cpu = (cpu_s() - c0) / (time.monotonic() - t0)
    # project delays: a call first held by message `seq`, which client i received at t
    feed_delay: list[float] = []
    for seq, started in first_seen.values():
        if not window_start <= started <= window_end - 1.0:
            continue
        for per in seq_at:
            t = per.get(seq)
            if t is not None:
                feed_delay.append(t - started)
    calls_measured = sum(1 for _s, st in first_seen.values()
                         if window_start <= st <= window_end - 1.0)
    expected = calls_measured * args.clients
    emit({"final": True,
          "calls_list_ms": {k: {"p50": q(v, 0.5), "p99": q(v, 0.99), "n": len(v),
                                "bytes": sizes.get(k)} for k, v in polled.items()},
          "feed_delay_ms": {"project": {"p50": q(feed_delay, 0.5), "p99": q(feed_delay, 0.99),
                                        "n": len(feed_delay), "expected": expected},
                            "anchor": {"p50": q(anchor_delay, 0.5),
                                       "p99": q(anchor_delay, 0.99), "n": len(anchor_delay)}},
          "feed_closed": closed, "feed_messages": received["messages"],
          "feed_mbytes": round(received["project_bytes"] / 1e6, 1),
          "client_cpu_share": round(client_cpu, 2)})
    await stdin_line()  # "quit"
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await http.close()


# -- orchestrator -----------------------------------------------------------------------

class Proc:
    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name, self.proc = name, proc

    async def line(self, wait: float = 120) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), wait)
            if not raw:
                raise RuntimeError(f"{self.name} ended early (exit {self.proc.returncode})")
            try:
                out: dict[str, Any] = json.loads(raw)
                return out
            except ValueError:
                sys.stderr.write(f"[{self.name}] {raw.decode(errors='replace')}")

    async def say(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()


async def spawn(name: str, *argv: str) -> Proc:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, ME, "--role", name, *argv, cwd=ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    return Proc(name, proc)


async def orchestrate(args: argparse.Namespace) -> int:
    from ivr.redisproc import RedisServer, free_port

    common = ["--rate", str(args.rate), "--talk", str(args.talk), "--seconds",
              str(args.seconds)]
    with tempfile.TemporaryDirectory(prefix="ivr-bench-api-") as tmp:
        redis = RedisServer(Path(tmp) / "redis")
        await asyncio.to_thread(redis.start)
        procs: list[Proc] = []
        try:
            emu = await spawn("emulator", *common, "--workdir", tmp)
            procs.append(emu)
            ami_port = (await emu.line())["port"]
            http_port, anchor_port = free_port(), free_port()
            ports = ["--ami-port", str(ami_port), "--http-port", str(http_port),
                     "--anchor-port", str(anchor_port)]
            br = await spawn("bridge", *ports, "--redis-url", redis.url, "--workdir", tmp,
                             *(["--profile", args.profile] if args.profile else []))
            procs.append(br)
            token = (await br.line())["token"]
            an = await spawn("anchor", *ports, "--token", token)
            procs.append(an)
            await an.line()
            cl = await spawn("clients", *ports, "--token", token, "--clients",
                             str(args.clients), "--pollers", str(args.pollers),
                             "--poll-pause", str(args.poll_pause),
                             *(["--deltas"] if args.deltas else []))
            procs.append(cl)
            await cl.line()
            await asyncio.sleep(1.0)  # every client connected and past its snapshot
            await emu.say("go")
            up = 0
            while up < args.calls_up:
                rec = await emu.line()
                if rec.get("final"):
                    raise RuntimeError(f"the load ended before {args.calls_up} calls were up")
                up = rec["calls_up"]
                print(f"  t={rec['t']:5.1f}s calls up {up}", file=sys.stderr)
            load0 = os.getloadavg()[0]
            for p in (br, an, cl):
                await p.say("start")
            t_end = time.monotonic() + args.window
            ups = []
            while time.monotonic() < t_end:
                rec = await emu.line()
                if rec.get("final"):
                    raise RuntimeError("the load ended inside the window: raise --seconds")
                ups.append(rec["calls_up"])
            for p in (br, an, cl):
                await p.say("stop")
            bridge_final, anchor_final, client_final = [await p.line() for p in (br, an, cl)]
            load1 = os.getloadavg()[0]
            for p in (cl, an, br, emu):
                await p.say("quit")
        finally:
            for p in procs:
                if p.proc.returncode is None:
                    try:
                        await asyncio.wait_for(p.proc.wait(), 15)
                    except TimeoutError:
                        p.proc.kill()
                        await p.proc.wait()
            await asyncio.to_thread(redis.stop)
    lists = client_final["calls_list_ms"]
    feed = client_final["feed_delay_ms"]
    out = {
        "rate": args.rate, "talk_s": args.talk, "window_s": args.window,
        "calls_up": [min(ups), max(ups)], "clients": args.clients, "deltas": args.deltas,
        "calls_list_ms": lists, "feed_delay_ms": feed,
        "ratio_calls_list_p99": round(lists["project"]["p99"] / lists["anchor"]["p99"], 2),
        "ratio_feed_p99": round(feed["project"]["p99"] / feed["anchor"]["p99"], 2),
        "feed_closed": client_final["feed_closed"], "feed_messages":
            client_final["feed_messages"], "feed_mbytes": client_final["feed_mbytes"],
        "bridge": bridge_final, "anchor": anchor_final,
        "client_cpu_share": client_final["client_cpu_share"],
        "loadavg_1m": [round(load0, 1), round(load1, 1)], "cpus": os.cpu_count(),
    }
    print(f"GET /api/calls ({lists['project']['bytes']} bytes, {min(ups)}-{max(ups)} calls "
          f"up): p50 {lists['project']['p50']} ms, p99 {lists['project']['p99']} ms; "
          f"anchor p99 {lists['anchor']['p99']} ms; ratio {out['ratio_calls_list_p99']}")
    print(f"feed to {args.clients} clients ({'deltas' if args.deltas else 'whole lists'}): "
          f"delay p50 {feed['project']['p50']} ms, p99 {feed['project']['p99']} ms "
          f"({feed['project']['n']}/{feed['project']['expected']} deliveries); anchor p99 "
          f"{feed['anchor']['p99']} ms; ratio {out['ratio_feed_p99']}")
    print(json.dumps(out))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--role", default="orchestrator")
    p.add_argument("--rate", type=float, default=150.0)
    p.add_argument("--talk", type=float, default=19.0)
    p.add_argument("--seconds", type=float, default=60.0, help="how long calls are placed")
    p.add_argument("--calls-up", type=int, default=3000)
    p.add_argument("--window", type=float, default=15.0)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--pollers", type=int, default=2)
    p.add_argument("--poll-pause", type=float, default=0.1)
    p.add_argument("--deltas", action="store_true")
    p.add_argument("--workdir")
    p.add_argument("--ami-port", type=int)
    p.add_argument("--http-port", type=int)
    p.add_argument("--anchor-port", type=int)
    p.add_argument("--redis-url")
    p.add_argument("--token")
    p.add_argument("--profile", help="cProfile the bridge during the window, to this file")
    args = p.parse_args()
    role = {"orchestrator": orchestrate, "emulator": emulator, "bridge": bridge,
            "anchor": anchor, "clients": clients}[args.role]
    result = asyncio.run(role(args))
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
