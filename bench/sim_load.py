"""Emulator load benchmark: the emulator in its own process generates PSTN calls into a
pure-dialplan extension (6100: Answer, Read a menu digit, Set language, Playback,
Queue(load) with auto-answering simulated agents; no FastAGI); this process is a
plain AMI socket reader counting bytes/events.

    .venv/bin/python bench/sim_load.py --rate 200 --talk 15 --duration 25
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_etc(dst: Path, agents: int) -> Path:
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


async def child(args: argparse.Namespace) -> None:
    from ivr.sim import CallerScript, Emulator, EmulatorConfig

    emu = Emulator(EmulatorConfig(etc=Path(args.etc), ami_port=0, seed=1))
    await emu.start()
    print(json.dumps({"port": emu.ami_port}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # reader ready

    def script(rng: random.Random, i: int) -> CallerScript:
        return CallerScript(number=f"138{i:08d}", exten="6100", context="load-in",
                            menu_digits=[rng.choice("12")],
                            talk_time=args.talk * rng.uniform(0.8, 1.2), patience=None)

    t0 = time.monotonic()
    gen_done: list[float] = []
    gen = asyncio.ensure_future(emu.generate(int(args.rate * args.duration), args.rate, script))
    gen.add_done_callback(lambda _f: gen_done.append(time.monotonic() - t0))
    peak = 0
    while time.monotonic() - t0 < args.duration + 1 or not gen_done:
        await asyncio.sleep(1.0)
        up = sum(1 for r in emu.pbx.records.values() if r.end is None)
        peak = max(peak, up)
        print(json.dumps({"t": round(time.monotonic() - t0, 1), "placed": len(emu.pbx.records),
                          "calls_up": up, "channels": len(emu.pbx.channels),
                          "events": emu.bus.count}), flush=True)
    gen.cancel()
    print(json.dumps({"final": True, "placed": len(emu.pbx.records), "peak_calls_up": peak,
                      "events": emu.bus.count, "elapsed": time.monotonic() - t0,
                      "generator_s": gen_done[0] if gen_done else None}), flush=True)
    await emu.close()


async def reader(port: int, stop: asyncio.Event, stats: dict[str, int]) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"Action: Login\r\nUsername: ivr\r\nSecret: ivrsecret\r\n\r\n")
    tail = b""
    needle = b"\r\nEvent: "
    while not stop.is_set():
        try:
            data = await asyncio.wait_for(r.read(1 << 20), 0.5)
        except TimeoutError:
            continue
        if not data:
            break
        stats["bytes"] += len(data)
        chunk = tail + data
        stats["events"] += chunk.count(needle)
        tail = chunk[-(len(needle) - 1):]
    w.close()


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp())
    etc = make_etc(tmp / "etc", int(args.rate * (args.talk * 1.3 + 3)) + 200)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", "--etc", str(etc), "--rate", str(args.rate),
        "--talk", str(args.talk), "--duration", str(args.duration),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    port = json.loads(await proc.stdout.readline())["port"]
    stats = {"bytes": 0, "events": 0}
    stop = asyncio.Event()
    rd = asyncio.ensure_future(reader(port, stop, stats))
    await asyncio.sleep(0.3)
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    t0 = time.monotonic()
    final: dict[str, float] = {}
    samples = []
    while line := await proc.stdout.readline():
        rec = json.loads(line)
        if rec.get("final"):
            final = rec
            break
        rec["reader_events"] = stats["events"]
        samples.append(rec)
        print(json.dumps(rec), flush=True)
    elapsed = time.monotonic() - t0
    stop.set()
    await rd
    await proc.wait()
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({
        "target_rate": args.rate, "talk_s": args.talk, "duration_s": args.duration,
        "calls_placed": final.get("placed"),
        "generator_s": round(final["generator_s"], 1),
        "calls_per_s": round(final["placed"] / final["generator_s"], 1),
        "peak_concurrent_calls": final.get("peak_calls_up"),
        "events_emitted": final.get("events"), "events_read": stats["events"],
        "events_per_s_read": round(stats["events"] / elapsed),
        "mbytes_per_s_read": round(stats["bytes"] / elapsed / 1e6, 2),
        "events_per_call": round(final["events"] / max(1, final["placed"]), 1),
    }), flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--talk", type=float, default=15.0)
    ap.add_argument("--duration", type=float, default=25.0)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--etc", default="")
    a = ap.parse_args()
    asyncio.run(child(a) if a.child else main(a))
