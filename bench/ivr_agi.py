"""IVR step cost: this project's FastAGI IVR vs a typical panoramisk FastAGI app.

The same menu both ways — the ``perf`` extension 7000 of the trace configuration:
answer, read one digit (1 = English), set the language and the queue:

* (a) ``ivr``: the dialplan runtime (``ivr.dialplan.runtime``) on ``ivr.agi.server``,
  definition entry ``7000``: a language step (prompt ``welcome``, 1 = en, 3 s) then the
  queue ``hotline``; the rendered dialplan answers before AGI.
* ``agi-bare``: the same two commands on ``ivr.agi.server`` with no runtime (what the
  FastAGI layer costs by itself);
* (b) ``panoramisk``: ``panoramisk.fast_agi.Application`` with the handler a typical app
  has: ANSWER, GET DATA, SET VARIABLE CHANNEL(language), SET VARIABLE IVR_QUEUE.

Each server runs in its own subprocess; this process plays Asterisk with the fake peer
of ``ivr.dialplan.runtime_peer`` (real sockets on 127.0.0.1), half the callers pressing
1, half timing out.  Printed per call: AGI round trips (each costs Asterisk CPU) and the
CPU time of the IVR process (``time.process_time`` in the server subprocess, measured
around the timed calls only, after a warm-up).

    .venv/bin/python bench/ivr_agi.py [--calls 2000] [--concurrency 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ivr.dialplan.runtime_peer import FakeAsterisk  # noqa: E402

DEFINITION = """
version: 1
settings: {default_language: zh, general_queue: hotline, recording_notice: false}
languages:
  zh: {name: "普通话", fallback: []}
  en: {name: "English", fallback: [zh]}
queues:
  hotline: {members: ["Local/1001@agent-local/n"]}
hours:
  always: {always_open: true, weekly: []}
entries:
  "7000":
    name: perf
    language: zh
    zero_navigation: false
    operator: {queue: hotline, enabled: false}
    start: choose
    steps:
      choose:
        type: language
        prompt: welcome
        options: {"1": en}
        timeout: 3
        retries: 0
        next: queue
      queue: {type: queue, queue: hotline}
"""


# --------------------------------------------------------------------------- servers


async def serve_ivr() -> None:
    from ivr.agi.server import FastAGIServer
    from ivr.dialplan.runtime import DefinitionStore, IvrRuntime

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "perf.yaml").write_text(DEFINITION, encoding="utf-8")
        store = DefinitionStore(tmp, prompts_dir=ROOT / "prompts")
        store.load()
        server = FastAGIServer()
        server.add_route("ivr", IvrRuntime(store).handle)
        await server.start(port=0)
        await _control(server.port)
        await server.close()


async def serve_bare() -> None:
    """The same two AGI commands on ivr.agi.server without the dialplan runtime: what
    the FastAGI layer itself costs."""
    from ivr.agi.channel import AGIChannel
    from ivr.agi.server import FastAGIServer

    async def perf(channel: AGIChannel) -> None:
        data = await channel.get_data("zh/welcome&en/lang-offer", 3000, 1)
        lang = "en" if data.digits == "1" else "zh"
        await channel.exec("MSet", f"CHANNEL(language)={lang}", "IVR_QUEUE=hotline")

    server = FastAGIServer()
    server.add_route("ivr", perf)
    await server.start(port=0)
    await _control(server.port)
    await server.close()


async def serve_panoramisk() -> None:
    from panoramisk.fast_agi import Application

    async def perf(request: Any) -> None:  # what a typical panoramisk IVR does
        await request.send_command("ANSWER")
        res = await request.send_command("GET DATA welcome 3000 1")
        digit = res.get("result", ("", ""))[0]
        lang = "en" if digit == "1" else "zh"
        await request.send_command(f"SET VARIABLE CHANNEL(language) {lang}")
        await request.send_command("SET VARIABLE IVR_QUEUE hotline")

    app = Application(loop=asyncio.get_running_loop())
    app.add_route("perf", perf)
    server = await asyncio.start_server(app.handler, "127.0.0.1", 0)
    await _control(server.sockets[0].getsockname()[1])
    server.close()


async def _control(port: int | None) -> None:
    """Tell the parent the port; answer 'start'/'stop' with CPU figures."""
    print(f"PORT {port}", flush=True)
    loop = asyncio.get_running_loop()
    start = 0.0
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "start":
            start = time.process_time()
            print("OK", flush=True)
        elif line == "stop":
            print(json.dumps({"cpu_s": time.process_time() - start}), flush=True)
        else:
            return


# --------------------------------------------------------------------------- driver


async def run_mode(mode: str, calls: int, concurrency: int, warmup: int) -> dict[str, float]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", mode,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    port = int((await proc.stdout.readline()).decode().split()[1])
    script_path = "perf" if mode == "panoramisk" else "ivr?entry=7000"
    trips: list[int] = []
    choices: dict[str, int] = {}

    async def one(i: int) -> None:
        rec = await FakeAsterisk(["1" if i % 2 else ""]).run("127.0.0.1", port, script_path,
                                                             extension="7000")
        trips.append(rec.round_trips)
        lang = rec.variables.get("CHANNEL(language)", "?")
        choices[lang] = choices.get(lang, 0) + 1

    async def batch(n: int) -> float:
        sem = asyncio.Semaphore(concurrency)

        async def guarded(i: int) -> None:
            async with sem:
                await one(i)

        t0 = time.perf_counter()
        await asyncio.gather(*(guarded(i) for i in range(n)))
        return time.perf_counter() - t0

    await batch(warmup)
    trips.clear()
    choices.clear()
    proc.stdin.write(b"start\n")
    await proc.stdin.drain()
    await proc.stdout.readline()
    wall = await batch(calls)
    proc.stdin.write(b"stop\n")
    await proc.stdin.drain()
    cpu = json.loads(await proc.stdout.readline())["cpu_s"]
    proc.stdin.write(b"quit\n")
    await proc.stdin.drain()
    await proc.wait()
    return {"round_trips": sum(trips) / len(trips), "cpu_ms_per_call": cpu * 1000 / calls,
            "calls_per_s": calls / wall, "en": choices.get("en", 0), "zh": choices.get("zh", 0)}


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--serve", choices=("ivr", "agi-bare", "panoramisk"),
                   help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve == "ivr":
        await serve_ivr()
        return
    if args.serve == "agi-bare":
        await serve_bare()
        return
    if args.serve == "panoramisk":
        await serve_panoramisk()
        return
    print(f"{args.calls} calls per mode, concurrency {args.concurrency}, python "
          f"{sys.version.split()[0]}")
    print(f"{'mode':<12}{'AGI round trips/call':>22}{'IVR CPU ms/call':>18}{'calls/s':>10}"
          f"{'  en/zh':>12}")
    for mode in ("ivr", "agi-bare", "panoramisk"):
        r = await run_mode(mode, args.calls, args.concurrency, args.warmup)
        print(f"{mode:<12}{r['round_trips']:>22.2f}{r['cpu_ms_per_call']:>18.3f}"
              f"{r['calls_per_s']:>10.0f}{int(r['en']):>7}/{int(r['zh'])}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main())
