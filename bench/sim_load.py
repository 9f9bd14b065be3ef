"""Emulator load benchmark: the Asterisk emulator (``ivr.sim``) in its own process
generates simulated PSTN calls; this process reads its AMI stream (and, for the hotline
scenario, answers its FastAGI sessions).  See docs/bench-sim.md.

Scenarios (``--scenario``):

* ``hotline`` (default): the product's real default 12345 call — the shipped
  ``asterisk-conf/extensions.conf`` (rendered from ``dialplans/*.yaml``): Answer, the
  zero-navigation greeting by ``Read`` with barge-in (no key pressed), ONE FastAGI session
  whose commands are those the real IVR runtime sends on that path (taken from
  ``ivr.flow.runtime`` at start-up: one ``EXEC MSet``), ``Playback`` of the exit
  prompt, ``Queue(hotline)`` answered by a Local member, ``MixMonitor(…,b)`` recording
  (the product has no recording step yet: the line is added after ``Answer()`` in the
  load copy), talk time, the caller hangs up.
* ``basic``: the older pure-dialplan call (extension 6100: Answer, Read a menu digit,
  Set language, Playback, Queue(load)); no FastAGI, no recording.

    .venv/bin/python bench/sim_load.py --rate 200 --talk 15 --duration 25
    .venv/bin/python bench/sim_load.py --profile /tmp/emu.prof   # cProfile the emulator
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HOTLINE_ENTRY = "12345"
# the rendered AGI() URL (call = the channel's Linkedid, different for every call)
HOTLINE_QUERY = "ivr?entry=12345&call=1795883958.1&barge=&barge_status=TIMEOUT"
HOTLINE_SCRIPT = re.compile(rb"agi_network_script: ivr\?entry=12345&call=[0-9.]+"
                            rb"&barge=&barge_status=TIMEOUT\n")
RECORD_LINE = "same => n,MixMonitor(${UNIQUEID}.wav,b)\n"


# ------------------------------------------------------------------------ load configs


def make_basic_etc(dst: Path, agents: int) -> Path:
    from ivr.sim.emulator import DEFAULT_ETC

    shutil.copytree(DEFAULT_ETC, dst)
    with open(dst / "queues.conf", "a") as f:
        f.write("\n[load]\nstrategy = leastrecent\ntimeout = 15\nretry = 1\nringinuse = no\n")
        for i in range(agents):
            f.write(f"member => Local/{90000 + i}@agent-load/n,0,Agent {90000 + i}\n")
    with open(dst / "extensions.conf", "a") as f:
        f.write("\n[agent-load]\nexten => _9XXXX,1,Answer()\n same => n,Wait(3600)\n"
                "\n[load-in]\nexten => 6100,1,Answer()\n"
                " same => n,Read(CHOICE,beep,1,,1,3)\n"
                ' same => n,Set(CHANNEL(language)=${IF($["${CHOICE}" = "1"]?en:zh)})\n'
                " same => n,Playback(demo-thanks)\n"
                " same => n,Queue(load,t,,,600)\n same => n,Hangup()\n")
    return dst


def make_hotline_etc(dst: Path, agents: int) -> Path:
    """The emulator's etc (manager, cel…) with the product's shipped dialplan and queues;
    changes: the hotline queue has ``agents`` Local members (1NNNN@agent-local, whose
    ``_1XXXX`` extension is the site file's agent body), and the 12345 entry records
    with ``MixMonitor(${UNIQUEID}.wav,b)`` right after ``Answer()``."""
    from ivr.sim.emulator import DEFAULT_ETC

    shutil.copytree(DEFAULT_ETC, dst)
    return hotline_load_conf(dst, ROOT / "asterisk-conf", agents)


def hotline_load_conf(dst: Path, conf: Path, agents: int) -> Path:
    """The load changes of :func:`make_hotline_etc` applied to the hotline files of
    ``conf`` (``extensions.conf``, ``extensions_site.conf``, ``queues.conf``), written to
    ``dst`` (which may be ``conf`` itself, e.g. an etc the dialplan was published into)."""
    ext = (conf / "extensions.conf").read_text(encoding="utf-8")
    head = f"exten => {HOTLINE_ENTRY},1,"
    at = ext.index(head)
    answer = ext.index("same => n,Answer()\n", at) + len("same => n,Answer()\n")
    (dst / "extensions.conf").write_text(ext[:answer] + RECORD_LINE + ext[answer:],
                                         encoding="utf-8")
    site = (conf / "extensions_site.conf").read_text(encoding="utf-8")
    assert "exten => _10XX," in site, "agent-local body changed in extensions_site.conf"
    (dst / "extensions_site.conf").write_text(site.replace("exten => _10XX,", "exten => _1XXXX,"),
                                              encoding="utf-8")
    out: list[str] = []
    section = ""
    for line in (conf / "queues.conf").read_text(encoding="utf-8").splitlines(keepends=True):
        if line.startswith("["):
            section = line.strip()[1:-1]
        if section == "hotline" and line.startswith("member =>"):
            continue
        out.append(line)
    text = "".join(out)
    members = "".join(f"member => Local/{10000 + i}@agent-local/n\n" for i in range(agents))
    at = text.index("[hotline]\n") + len("[hotline]\n")
    nxt = text.find("\n[", at)
    nxt = len(text) if nxt < 0 else nxt + 1
    (dst / "queues.conf").write_text(text[:nxt] + members + text[nxt:], encoding="utf-8")
    return dst


# ------------------------------------------------------------------------ FastAGI side


async def runtime_commands() -> list[str]:
    """The AGI commands the real IVR runtime sends on the default 12345 path (the greeting
    played by the dialplan's Read, no key), taken from the runtime itself (the shipped
    definition, a Wednesday 10:00 clock as bench/ivr_agi.py, no open ticket)."""
    from bench.ivr_agi import shipped_runtime
    from ivr.agi.server import FastAGIServer
    from ivr.sim.runtime_peer import FakeAsterisk

    runtime, _store = shipped_runtime()
    async with FastAGIServer() as server:
        server.add_route("ivr", runtime.handle)
        await server.start(port=0)
        rec = await FakeAsterisk([]).run("127.0.0.1", server.port or 0, HOTLINE_QUERY,
                                         extension=HOTLINE_ENTRY, callerid="13800000001")
    await runtime.close()
    assert not rec.failed and rec.commands, rec
    return rec.commands


class Responder:
    """A minimal FastAGI server: reads the ``agi_*`` header block, sends ``commands`` one
    by one (each waits for Asterisk's reply line), then closes the session as the real
    server does when the handler returns.  No business logic; a session whose script is
    not the expected default path or a reply that is not ``200`` is counted."""

    def __init__(self, commands: list[str]) -> None:
        self.commands = [(c + "\n").encode() for c in commands]
        self.sessions = 0
        self.unexpected_script = 0
        self.bad_replies = 0
        self.port = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, backlog=4096)
        self.port = self.server.sockets[0].getsockname()[1]

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            head = await r.readuntil(b"\n\n")
            self.sessions += 1
            if HOTLINE_SCRIPT.search(head) is None:
                self.unexpected_script += 1
            for cmd in self.commands:
                w.write(cmd)
                reply = await r.readline()
                if not reply.startswith(b"200 "):
                    self.bad_replies += 1
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            self.bad_replies += 1
        finally:
            w.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


# ------------------------------------------------------------------------ emulator side


async def child(args: argparse.Namespace) -> None:
    from ivr.sim import CallerScript, Emulator, EmulatorConfig
    from ivr.sim.cli import tune_gc

    hotline = args.scenario == "hotline"
    emu = Emulator(EmulatorConfig(
        etc=Path(args.etc), ami_port=0, seed=1, cel=True, cdr=True,
        agi_host="127.0.0.1" if hotline else None, agi_port=args.agi_port or None,
        prompts=ROOT / "prompts", record_dir=Path(args.record_dir) if hotline else None))
    await emu.start()
    if not args.default_gc:
        tune_gc()  # as `ivr sim` does in its own process
    print(json.dumps({"port": emu.ami_port}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # reader ready

    def script(rng: random.Random, i: int) -> CallerScript:
        talk = args.talk * rng.uniform(0.8, 1.2)
        if hotline:  # zh caller, no key during the greeting, hangs up after talking
            return CallerScript(number=f"138{i:08d}", exten=HOTLINE_ENTRY, context="from-pstn",
                                language="zh", menu_digits=[""], talk_time=talk, patience=None)
        return CallerScript(number=f"138{i:08d}", exten="6100", context="load-in",
                            menu_digits=[rng.choice("12")], talk_time=talk, patience=None)

    pbx = emu.pbx
    gc_pauses: list[float] = []
    gc_by_gen: dict[int, list[float]] = {0: [], 1: [], 2: []}
    gc_start = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            pause = time.perf_counter() - gc_start[0]
            gc_pauses.append(pause)
            gc_by_gen.setdefault(info["generation"], []).append(pause)

    gc.callbacks.append(on_gc)
    cpu0 = time.process_time()
    loop_cpu0 = time.thread_time()  # the event loop's own thread (not the writer thread)
    t0 = time.monotonic()
    gen_done: list[float] = []
    count = int(args.rate * args.duration)
    gen = asyncio.ensure_future(emu.generate(count, args.rate, script))
    gen.add_done_callback(lambda _f: gen_done.append(time.monotonic() - t0))
    peak = 0
    max_lag = 0.0
    end_by = t0 + args.duration + args.drain
    while True:
        before = time.monotonic()
        await asyncio.sleep(1.0)
        now = time.monotonic()
        max_lag = max(max_lag, now - before - 1.0)
        up = sum(1 for r in pbx.records.values() if r.end is None)
        peak = max(peak, up)
        placed = len(pbx.records) + pbx.folded.placed
        print(json.dumps({"t": round(now - t0, 1), "placed": placed, "calls_up": up,
                          "channels": len(pbx.channels), "events": emu.bus.count,
                          "cpu_s": round(time.process_time() - cpu0, 2),
                          "loop_cpu_s": round(time.thread_time() - loop_cpu0, 2)}), flush=True)
        if gen_done and (up == 0 or now > end_by):
            break
    gen.cancel()
    s = emu.summary()
    print(json.dumps({"final": True, "placed": s.placed, "completed": s.completed,
                      "answered": s.answered, "agi_failures": s.agi_failures,
                      "peak_calls_up": peak, "events": emu.bus.count,
                      "elapsed": time.monotonic() - t0, "cpu_s": time.process_time() - cpu0,
                      "loop_cpu_s": time.thread_time() - loop_cpu0,
                      "max_loop_lag_s": round(max_lag, 2),
                      "gc": {"collections": len(gc_pauses), "total_s": round(sum(gc_pauses), 2),
                             "max_pause_s": round(max(gc_pauses, default=0.0), 3),
                             "by_generation": {g: [len(v), round(sum(v), 2),
                                                   round(max(v, default=0.0), 3)]
                                               for g, v in gc_by_gen.items()}},
                      "generator_s": gen_done[0] if gen_done else None}), flush=True)
    await emu.close()


def run_child(args: argparse.Namespace) -> None:
    if not args.profile:
        asyncio.run(child(args))
        return
    import cProfile

    prof = cProfile.Profile()
    prof.enable()
    try:
        asyncio.run(child(args))
    finally:
        prof.disable()
        prof.dump_stats(args.profile)


# ------------------------------------------------------------------------ AMI reader

# the first *Linkedid/LinkedID header of each frame (frames never contain a blank line)
_LINKED = re.compile(rb"Event: [^\r]*\r\n(?:[^\r]+\r\n)*?[A-Za-z]*Linked[iI][dD]: ([^\r]*)")
_ENDED = re.compile(rb"EventName: LINKEDID_END\r\n(?:[^\r]+\r\n)*?LinkedID: ([^\r]*)")


class Reader:
    def __init__(self) -> None:
        self.bytes = 0
        self.events = 0
        self.per_linkedid: Counter[bytes] = Counter()
        self.ended: set[bytes] = set()

    async def run(self, port: int, stop: asyncio.Event) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"Action: Login\r\nUsername: ivr\r\nSecret: ivrsecret\r\n\r\n")
        tail = b""
        while not stop.is_set():
            try:
                data = await asyncio.wait_for(r.read(1 << 20), 0.5)
            except TimeoutError:
                continue
            if not data:
                break
            self.bytes += len(data)
            chunk = tail + data
            cut = chunk.rfind(b"\r\n\r\n") + 4
            if cut < 4:
                tail = chunk
                continue
            done, tail = chunk[:cut], chunk[cut:]
            self.events += done.count(b"Event: ")
            self.per_linkedid.update(_LINKED.findall(done))
            self.ended.update(_ENDED.findall(done))
        w.close()


def check_recordings(folder: Path, sample: int = 20) -> dict[str, Any]:
    files = sorted(folder.glob("*.wav"))
    durations = []
    for p in files[:: max(1, len(files) // sample)][:sample]:
        with wave.open(str(p)) as wf:
            assert (wf.getframerate(), wf.getnchannels(), wf.getsampwidth()) == (8000, 1, 2)
            durations.append(wf.getnframes() / wf.getframerate())
    return {"files": len(files),
            "sample_seconds": [round(min(durations), 1), round(max(durations), 1)]
            if durations else None}


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp())
    hotline = args.scenario == "hotline"
    responder: Responder | None = None
    commands: list[str] = []
    agents = int(args.rate * (args.talk * 1.3 + 3)) + 200
    if hotline:
        etc = make_hotline_etc(tmp / "etc", agents)
        commands = await runtime_commands()
        responder = Responder(commands)
        await responder.start()
    else:
        etc = make_basic_etc(tmp / "etc", agents)
    rec_dir = tmp / "rec"
    cmd = [sys.executable, __file__, "--child", "--scenario", args.scenario, "--etc", str(etc),
           "--rate", str(args.rate), "--talk", str(args.talk),
           "--duration", str(args.duration), "--drain", str(args.drain),
           "--record-dir", str(rec_dir), "--agi-port", str(responder.port if responder else 0)]
    if args.profile:
        cmd += ["--profile", args.profile]
    if args.default_gc:
        cmd.append("--default-gc")
    proc = await asyncio.create_subprocess_exec(*cmd, stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    port = json.loads(await proc.stdout.readline())["port"]
    reader = Reader()
    stop = asyncio.Event()
    rd = asyncio.ensure_future(reader.run(port, stop))
    await asyncio.sleep(0.3)
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    t0 = time.monotonic()
    cpu0 = time.process_time()
    final: dict[str, Any] = {}
    samples: list[dict[str, Any]] = []
    while line := await proc.stdout.readline():
        rec = json.loads(line)
        if rec.get("final"):
            final = rec
            break
        rec["reader_events"] = reader.events
        samples.append(rec)
        print(json.dumps(rec), flush=True)
    elapsed = time.monotonic() - t0
    await asyncio.sleep(0.5)  # the last frames in flight
    stop.set()
    await rd
    await proc.wait()
    parent_cpu = time.process_time() - cpu0
    if responder is not None:
        await responder.close()
    recordings = check_recordings(rec_dir) if hotline else None
    shutil.rmtree(tmp, ignore_errors=True)

    gen_s = final["generator_s"]
    window = [s for s in samples if s["t"] <= gen_s + 0.5]
    pairs = list(zip(window, window[1:], strict=False))
    rates = [b["reader_events"] - a["reader_events"] for a, b in pairs]
    cpu = [(b["cpu_s"] - a["cpu_s"]) / (b["t"] - a["t"]) for a, b in pairs]
    # the last 10 s of generation: calls started and ended per second, emulator CPU
    last = [s for s in window if s["t"] >= gen_s - 10.5]
    span = last[-1]["t"] - last[0]["t"] if len(last) > 1 else 0.0

    def ended(x: dict[str, Any]) -> int:
        return int(x["placed"]) - int(x["calls_up"])
    finished = [n for lid, n in reader.per_linkedid.items() if lid in reader.ended]
    linked_total = sum(reader.per_linkedid.values())
    out = {
        "scenario": args.scenario, "target_rate": args.rate, "talk_s": args.talk,
        "duration_s": args.duration,
        "agi_commands": commands or None,
        "calls_placed": final["placed"], "calls_completed": final["completed"],
        "answered_by_agent": final["answered"], "agi_failures": final["agi_failures"],
        "generator_s": round(gen_s, 1),
        "calls_per_s": round(final["placed"] / gen_s, 1),
        "peak_concurrent_calls": final["peak_calls_up"],
        "peak_channels": max((s["channels"] for s in samples), default=0),
        "last_10s_of_generation": {
            "started_per_s": round((last[-1]["placed"] - last[0]["placed"]) / span, 1),
            "ended_per_s": round((ended(last[-1]) - ended(last[0])) / span, 1),
            "emulator_cpu": round((last[-1]["cpu_s"] - last[0]["cpu_s"]) / span, 2),
            "event_loop_cpu": round((last[-1]["loop_cpu_s"] - last[0]["loop_cpu_s"]) / span, 2),
        } if span else None,
        "emulator_cpu_max_1s": round(max(cpu, default=0.0), 2),
        "events_read": reader.events, "events_emitted": final["events"],
        "events_per_s_read_during_generation": round(statistics.mean(rates)) if rates else None,
        "events_per_s_read_max_1s": max(rates, default=None),
        "events_per_s_read_whole_run": round(reader.events / elapsed),
        "mbytes_per_s_read": round(reader.bytes / elapsed / 1e6, 2),
        "finished_calls_seen": len(finished),
        "events_per_finished_call_by_linkedid": {
            "median": statistics.median(finished), "min": min(finished),
            "max": max(finished)} if finished else None,
        "events_without_linkedid_per_call": round(
            (reader.events - linked_total) / max(1, final["placed"]), 1),
        "events_per_call_all": round(reader.events / max(1, final["placed"]), 1),
        "emulator_cpu_s": round(final["cpu_s"], 1),
        "emulator_cpu_ms_per_call": round(final["cpu_s"] * 1000 / max(1, final["placed"]), 2),
        "event_loop_cpu_ms_per_call": round(final["loop_cpu_s"] * 1000 / max(1, final["placed"]),
                                            2),
        "emulator_max_loop_lag_s": final["max_loop_lag_s"],
        "emulator_gc": final["gc"],
        "bench_process_cpu_s": round(parent_cpu, 1),
        "responder": {"sessions": responder.sessions,
                      "unexpected_script": responder.unexpected_script,
                      "bad_replies": responder.bad_replies} if responder else None,
        "recordings": recordings,
    }
    print(json.dumps(out, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", choices=("hotline", "basic"), default="hotline")
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--talk", type=float, default=15.0)
    ap.add_argument("--duration", type=float, default=25.0)
    ap.add_argument("--drain", type=float, default=90.0,
                    help="after generating, wait at most this long for the calls to end")
    ap.add_argument("--profile", default="", help="cProfile the emulator process into FILE")
    ap.add_argument("--default-gc", action="store_true",
                    help="keep CPython's default GC thresholds in the emulator process")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--etc", default="", help=argparse.SUPPRESS)
    ap.add_argument("--record-dir", default="", help=argparse.SUPPRESS)
    ap.add_argument("--agi-port", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        run_child(a)
    else:
        asyncio.run(main(a))
