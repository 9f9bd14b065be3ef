"""IVR step cost: this project's FastAGI IVR vs a typical panoramisk FastAGI app.

The same menu both ways — the ``perf`` extension 7000 of the trace configuration:
answer, read one digit (1 = English), set the language and the queue:

* (a) ``ivr``: the dialplan runtime (``ivr.flow.runtime``) on ``ivr.agi.server``,
  definition entry ``7000``: a language step (prompt ``welcome``, 1 = en, 3 s) then the
  queue ``hotline``; the rendered dialplan answers before AGI.
* ``agi-bare``: the same three commands on ``ivr.agi.server`` with no runtime (what the
  FastAGI layer costs by itself);
* (b) ``panoramisk``: ``panoramisk.fast_agi.Application`` with the handler a typical app
  has: ANSWER, GET DATA, SET VARIABLE CHANNEL(language), SET VARIABLE IVR_QUEUE.

Each server runs in its own subprocess; this process plays Asterisk with the fake peer
of ``ivr.sim.runtime_peer`` (real sockets on 127.0.0.1; it answers ``GET DATA a&b``
with ``result=-1`` as Asterisk 20 does), half the callers pressing 1, half timing out.
Printed per call: AGI round trips (each costs Asterisk CPU) and the CPU time of the IVR
process (``time.process_time`` in the server subprocess, measured around the timed calls
only, after a warm-up).

Then ``paths``: the exact AGI commands per call for each path of the shipped definition
(``dialplans/``), counted on the fake peer — now (the zero-navigation greeting played by
the rendered dialplan's ``Read`` before ``AGI()``, its key in ``?barge=``) and before
(the greeting played over AGI: ``EXEC Read`` + ``GET FULL VARIABLE``).

    .venv/bin/python bench/ivr_agi.py [--calls 2000] [--concurrency 20] [--paths-only]
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

from ivr.sim.runtime_peer import FakeAsterisk  # noqa: E402

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
    from ivr.flow.runtime import DefinitionStore, IvrRuntime

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
        data = await channel.read_digits(["zh/welcome", "en/lang-offer"], 3000, 1)
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


# --------------------------------------------------------------------------- paths

# (entry, caller's digits per collect, query, label); office hours on a Wednesday morning
PATHS: tuple[tuple[str, list[str], str, str], ...] = (
    ("12345", [""], "", "zero navigation, no key"),
    ("12345", ["0"], "", "press 0 during the greeting"),
    ("12345", ["9", ""], "", "barge-in 9 (English)"),
    ("12345", ["8", ""], "", "barge-in 8 (Cantonese)"),
    ("12345", ["1", "1"], "", "shortcut 1 emergency → 1 (110)"),
    ("12345", ["2", "1"], "", "shortcut 2 enterprise → 1 desk"),
    ("12345", ["2", "", ""], "", "shortcut 2 enterprise, two menu timeouts"),
    ("12345", ["3"], "", "shortcut 3 ticket status"),
    ("12345", ["1"], "&resume=missed", "queue timeout → callback accepted"),
    ("12345", ["2"], "&resume=missed", "queue timeout → callback declined"),
    ("12315", [""], "", "12315 no key"),
    ("12315", ["9", ""], "", "12315 barge-in 9"),
    ("12333", [""], "", "12333 office open, no key"),
    ("12333", ["9", ""], "", "12333 barge-in 9"),
    ("8890", ["", "1"], "", "8890 menu 1"),
    ("8890", ["", "", "", ""], "", "8890 menu, three timeouts"),
    ("8890", ["", "4", "3", "1"], "", "8890 menu 4 language → 3 en → menu 1"),
)


def shipped_runtime() -> tuple[Any, Any]:
    """The real IVR runtime on the shipped definition, a Wednesday 10:00 (Shanghai)
    clock (office open, no holiday) and no open ticket for anyone: (runtime, store)."""
    import datetime as dt

    from ivr.flow.runtime import DefinitionStore, IvrRuntime

    class NoTickets:
        async def status(self, caller: str, exclude_call: str = "") -> str:
            return "none"

    shanghai = dt.timezone(dt.timedelta(hours=8))
    store = DefinitionStore(ROOT / "dialplans", prompts_dir=ROOT / "prompts")
    store.load()
    runtime = IvrRuntime(store, tickets=NoTickets(),  # type: ignore[arg-type]
                         clock=lambda: dt.datetime(2025, 11, 26, 10, 0, tzinfo=shanghai))
    return runtime, store


async def run_paths() -> list[tuple[str, str, int, int]]:
    """(label, commands now, round trips now, round trips before) per path.

    "now": an entry whose greeting the rendered dialplan plays (``static_greeting``) gets
    the caller's greeting key in the query, as ``Read(IVR_BARGE,…)`` + ``AGI(…&barge=…)``
    hand it over; "before": the same call with the greeting played over AGI (``EXEC Read``
    + ``GET FULL VARIABLE``), what the runtime did before the greeting was rendered."""
    from ivr.agi.server import FastAGIServer
    from ivr.dialplan.greeting import static_greeting

    runtime, store = shipped_runtime()
    d = store.current.definition
    out = []
    async with FastAGIServer() as server:
        server.add_route("ivr", runtime.handle)
        await server.start(port=0)
        assert server.port is not None

        async def run(entry: str, script: list[str], query: str) -> Any:
            rec = await FakeAsterisk(script).run("127.0.0.1", server.port or 0,
                                                 f"ivr?entry={entry}{query}",
                                                 extension=entry, callerid="13700137000")
            assert not rec.failed, (entry, script, query, rec.failed)
            return rec

        for entry, script, query, label in PATHS:
            before = await run(entry, script, query)
            rendered = not query and static_greeting(d, d.entries[entry]) is not None
            if rendered:  # the dialplan's Read got script[0]
                key = script[0]
                status = "OK" if key else "TIMEOUT"
                rec = await run(entry, script[1:], f"{query}&barge={key}&barge_status={status}")
            else:
                rec = before
            kinds = []
            for line in rec.commands:
                words = line.split()
                kinds.append(words[1] if words[0] == "EXEC" else " ".join(words[:2]))
            short = " + ".join(k.replace("GET FULL", "GETFULL") for k in kinds)
            if rendered:
                short = "(dialplan Read) " + short
            out.append((label, short, rec.round_trips, before.round_trips))
    return out


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--paths-only", action="store_true", help="only the per-path counts")
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
    if not args.paths_only:
        print(f"{args.calls} calls per mode, concurrency {args.concurrency}, python "
              f"{sys.version.split()[0]}")
        print(f"{'mode':<12}{'AGI round trips/call':>22}{'IVR CPU ms/call':>18}"
              f"{'calls/s':>10}{'  en/zh':>12}")
        for mode in ("ivr", "agi-bare", "panoramisk"):
            r = await run_mode(mode, args.calls, args.concurrency, args.warmup)
            print(f"{mode:<12}{r['round_trips']:>22.2f}{r['cpu_ms_per_call']:>18.3f}"
                  f"{r['calls_per_s']:>10.0f}{int(r['en']):>7}/{int(r['zh'])}")
        print()
    print("AGI round trips per call, shipped dialplans/ (now | before: greeting over AGI)")
    for label, short, now, before in await run_paths():
        print(f"  {label:<42}{now:>3} |{before:>3}   {short}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main())
