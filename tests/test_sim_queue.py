"""app_queue strategies, penalties, pause and wrap-up, driven through the Python API."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ivr.sim import AgentScript, CallerScript, Emulator, EmulatorConfig
from ivr.sim.clock import VirtualClock
from ivr.sim.emulator import DEFAULT_ETC


def etc_with(tmp_path: Path, strategy: str, members: list[str], entry: str = "",
             extra: str = "") -> Path:
    """The emulator's etc plus queue ``t`` (``extra`` queue options, ``members``) and
    ``1@t-in``: Answer, the ``entry`` lines, Queue(t), Hangup."""
    etc = tmp_path / "etc"
    etc.mkdir()
    for f in DEFAULT_ETC.iterdir():
        (etc / f.name).write_text(f.read_text())
    with open(etc / "queues.conf", "a") as f:
        f.write(f"\n[t]\nstrategy = {strategy}\ntimeout = 5\nretry = 1\n{extra}")
        for m in members:
            f.write(f"member => {m}\n")
    with open(etc / "extensions.conf", "a") as f:
        f.write(f"\n[t-in]\nexten => 1,1,Answer()\n{entry}"
                " same => n,Queue(t,t,,,60)\n same => n,Hangup()\n")
    return etc


async def connected_members(emu: Emulator, n: int, gap: float = 1.0) -> list[str]:
    got: list[str] = []
    emu.bus.tap.append(lambda name, body: got.append(body.split("Interface: ")[1]
                                                     .split("\r\n")[0])
                       if name == "AgentConnect" else None)
    hs = []
    for _ in range(n):
        hs.append(await emu.place_call(CallerScript(context="t-in", exten="1", talk_time=2)))
        await emu.clock.sleep(gap)
    await asyncio.wait_for(asyncio.gather(*(h.wait() for h in hs)), 20)
    return got


async def test_rrmemory_rotates(tmp_path: Path) -> None:
    etc = etc_with(tmp_path, "rrmemory", ["SIP/a,0,A", "SIP/b,0,B", "SIP/c,0,C"])
    async with Emulator(EmulatorConfig(etc=etc, clock=VirtualClock())) as emu:
        got = await connected_members(emu, 4, gap=3)
    assert got == ["SIP/a", "SIP/b", "SIP/c", "SIP/a"]


async def test_penalty_pause_and_an_agent_who_never_answers(tmp_path: Path) -> None:
    etc = etc_with(tmp_path, "leastrecent", ["SIP/a,0,A", "SIP/b,1,B", "SIP/c,0,C"])
    agents = [AgentScript("SIP/c", answers=False)]
    async with Emulator(EmulatorConfig(etc=etc, clock=VirtualClock(), agents=agents)) as emu:
        called: list[str] = []
        emu.bus.tap.append(lambda name, body: called.append(body.split("Interface: ")[1]
                                                            .split("\r\n")[0])
                           if name == "AgentCalled" else None)
        emu.queues.pause("t", "SIP/a", True, "lunch")
        h = await emu.place_call(CallerScript(context="t-in", exten="1", patience=12))
        await asyncio.wait_for(h.wait(), 10)
        # a is paused; c (penalty 0) is rung again and again, b (penalty 1) never
        assert set(called) == {"SIP/c"} and len(called) >= 2
        assert emu.summary().abandoned == 1
        emu.queues.pause("t", "SIP/c", True, "")
        got = await connected_members(emu, 1)
    assert got == ["SIP/b"]


async def test_ringall_and_wrapup(tmp_path: Path) -> None:
    etc = etc_with(tmp_path, "ringall", ["SIP/a,0,A", "SIP/b,0,B"],
                   extra="wrapuptime = 30\n")
    agents = [AgentScript("SIP/a", ring_time=1), AgentScript("SIP/b", ring_time=3)]
    async with Emulator(EmulatorConfig(etc=etc, clock=VirtualClock(), agents=agents)) as emu:
        got = await connected_members(emu, 2, gap=4)
        s = emu.summary()
    # a answers first; during a's wrap-up the second caller gets b
    assert got == ["SIP/a", "SIP/b"]
    assert s.answered == 2
