"""Benchmark: what the queue and agent slice adds to the bridge's own work per call.

A measurement a busy 2-core box cannot spoil: one process, its CPU time
(``time.process_time``), the same recorded events replayed with the slice off and on,
several rounds interleaved, the best round of each kept.

1. Record: the emulator (its own virtual clock, no sockets) runs ``--calls`` queue calls
   of ``bench/sim_load.py``'s pure-dialplan ``load`` call (Answer, Read, Playback,
   Queue answered by a Local member), ``--agents`` members, and a break rota as
   ``ivr demo`` runs one: every ``--pause-every`` calls one member is paused with a
   catalog reason and another comes back (``QueueMemberPause``).  Every AMI event
   emitted is kept.
2. Replay, as the bridge's AMI filter would pass them (docs/ami.md): **off** — the events
   the call-event builder and ``CallStats`` read; **on** — those plus the queue and
   agent slice's (``QueueMonitor``: ``QueueMember*``, ``QueueCaller*``, ``Agent*``).
   Each round encodes the passed events as AMI bytes and runs what the bridge runs per
   event: the AMI codec's parse, ``CallEventBuilder.feed_ami`` (the call model),
   ``CallStats`` and, on, ``QueueMonitor.on_ami_event``.

Left out, because the slice does not change them: Redis and the outbox, the pusher,
FastAGI and the IVR, asyncio's socket reads.  So the printed ratio is the slice's share
of *this* part of the bridge: an upper bound of its share of the whole bridge (whose CPU
per call ``bench/events_pipeline.py`` measures).  Usage::

    .venv/bin/python bench/agents_slice.py                 # 2,000 calls, 5 rounds
    .venv/bin/python bench/agents_slice.py --calls 5000 --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ivr.agents.monitor import QueueMonitor  # noqa: E402
from ivr.agents.state import CONSUMED_AMI_EVENTS as SLICE_EVENTS  # noqa: E402
from ivr.ami.codec import AMIParser, encode_message  # noqa: E402
from ivr.ami.messages import Event  # noqa: E402
from ivr.callstats import CallStats  # noqa: E402
from ivr.events.builder import CONSUMED_AMI_EVENTS as BUILDER_EVENTS  # noqa: E402
from ivr.events.builder import CONSUMED_VARIABLES, CallEventBuilder  # noqa: E402

REASONS = ("午休 lunch", "培训 training", "小结 after-call work", "会议 meeting", "休息 break")


async def record(calls: int, agents: int, pause_every: int) -> list[Event]:
    """Every AMI event of ``calls`` emulated queue calls, with breaks."""
    from bench.sim_load import make_basic_etc
    from ivr.sim import CallerScript, Emulator, EmulatorConfig
    from ivr.sim.clock import VirtualClock

    events: list[Event] = []

    def tap(name: str, body: str) -> None:
        headers = {"Event": name}
        for line in body.split("\r\n"):
            if ": " in line:
                k, v = line.split(": ", 1)
                headers.setdefault(k, v)
        events.append(Event(headers))

    with tempfile.TemporaryDirectory() as tmp:
        etc = make_basic_etc(Path(tmp) / "etc", agents)
        clock = VirtualClock()
        async with Emulator(EmulatorConfig(etc=etc, clock=clock, seed=1)) as emu:
            emu.bus.tap.append(tap)
            members = [m.interface for m in emu.queues.queues["load"].members]
            on_break: list[str] = []
            handles = []
            for i in range(calls):
                handles.append(await emu.place_call(CallerScript(
                    number=f"138{i:08d}", exten="6100", context="load-in",
                    menu_digits=["1" if i % 2 else "2"], talk_time=8.0, patience=None)))
                if i % pause_every == 0:  # one goes on a break, the longest away comes back
                    who = members[(i // pause_every) % len(members)]
                    if who not in on_break:
                        emu.queues.pause("load", who, True,
                                         REASONS[(i // pause_every) % len(REASONS)])
                        on_break.append(who)
                    if len(on_break) > 3:
                        emu.queues.pause("load", on_break.pop(0), False, "")
                await clock.sleep(0.02)
            async with asyncio.timeout(600):
                for h in handles:
                    await h.wait()
    return events


def passed(events: list[Event], names: frozenset[str]) -> bytes:
    """The events the bridge's filter lets through for ``names`` (VarSet only of the
    variables the builder reads), as AMI bytes."""
    out = []
    for ev in events:
        if ev.name not in names:
            continue
        if ev.name == "VarSet" and ev.get("Variable") not in CONSUMED_VARIABLES:
            continue
        out.append(encode_message(ev))
    return b"".join(out)


def replay(data: bytes, slice_on: bool) -> tuple[float, int]:
    """CPU seconds to parse ``data`` and run the bridge's consumers on it; events."""
    builder = CallEventBuilder()
    stats = CallStats(calls=builder.calls)
    monitor = QueueMonitor() if slice_on else None
    stats_names = CallStats.CONSUMED_AMI_EVENTS
    t = time.process_time()
    parser = AMIParser(expect_banner=False)
    n = 0
    for msg in parser.feed(data):
        if not isinstance(msg, Event):
            continue
        n += 1
        builder.feed_ami(msg)
        if msg.name in stats_names:
            stats.on_event(msg)
        if monitor is not None and msg.name in SLICE_EVENTS:
            monitor.on_ami_event(msg)
    return time.process_time() - t, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--agents", type=int, default=1000,
                    help="queue members (enough that callers rarely wait, as at the peak)")
    ap.add_argument("--pause-every", type=int, default=10,
                    help="a member goes on a break (and another comes back) every N calls")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    events = asyncio.run(record(args.calls, args.agents, args.pause_every))
    off_names = BUILDER_EVENTS | CallStats.CONSUMED_AMI_EVENTS
    data = {False: passed(events, off_names), True: passed(events, off_names | SLICE_EVENTS)}
    best: dict[bool, float] = {False: float("inf"), True: float("inf")}
    counts: dict[bool, int] = {}
    for _ in range(args.rounds):
        for on in (False, True):  # interleaved: the box's drift hits both alike
            cpu, n = replay(data[on], on)
            best[on] = min(best[on], cpu)
            counts[on] = n
    per_call = {on: best[on] / args.calls * 1e6 for on in (False, True)}
    result: dict[str, Any] = {
        "calls": args.calls, "agents": args.agents, "rounds": args.rounds,
        "ami_events_emitted_per_call": round(len(events) / args.calls, 1),
        "passed_per_call": {"off": round(counts[False] / args.calls, 2),
                            "on": round(counts[True] / args.calls, 2)},
        "breaks": sum(1 for e in events if e.name == "QueueMemberPause"),
        "cpu_us_per_call": {"off": round(per_call[False], 1), "on": round(per_call[True], 1)},
        "slice_us_per_call": round(per_call[True] - per_call[False], 1),
        "ratio_on_over_off": round(per_call[True] / per_call[False], 3),
    }
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
