"""Which member app_queue rings (issue 14 item 11), on the virtual clock: calc_metric()'s
order (``leastrecent``: the time of the last *completed* call, never-called first),
``ringinuse = yes`` (a member ringing for another caller is rung again), the best
member for every caller whose turn it is (is_our_turn with autofill, then ring_one),
``rrmemory``'s rrpos stored when the ring ends (store_next_rr), ties broken as the
hash container orders members (apps/app_queue.c)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ivr.sim import AgentScript, CallerScript, Emulator, EmulatorConfig
from ivr.sim.clock import VirtualClock
from ivr.sim.emulator import DEFAULT_ETC


def etc_with(tmp_path: Path, queue: str, members: tuple[str, ...]) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir(parents=True)
    for f in DEFAULT_ETC.iterdir():
        (etc / f.name).write_text(f.read_text())
    with open(etc / "queues.conf", "a") as f:
        f.write(f"\n[pick]\ntimeout = 10\nretry = 1\n{queue}")
        for n in members:
            f.write(f"member => Local/{n}@agent-local/n,0,Agent {n}\n")
    with open(etc / "extensions.conf", "a") as f:
        f.write("\n[p-in]\nexten => 1,1,Answer()\n same => n,Queue(pick,t,,,25)\n"
                " same => n,Hangup()\n[agent-local](+)\nexten => 1003,1,Answer()\n"
                " same => n,Wait(120)\n")
    return etc


async def rung(etc: Path, agents: list[AgentScript], starts: list[float],
               when: list[float] | None = None) -> list[str]:
    """Place a caller at each of ``starts`` (s); the members rung (DialBegin), in order
    (their times appended to ``when``)."""
    dials: list[str] = []

    def tap(name: str, body: str) -> None:
        if name == "DialBegin":
            dest = next(v for k, _, v in (line.partition(": ") for line in body.split("\r\n"))
                        if k == "DestChannel")
            dials.append(dest.split("@")[0].removeprefix("Local/"))
            if when is not None:
                when.append(clock.now())

    clock = VirtualClock()
    async with Emulator(EmulatorConfig(etc=etc, clock=clock, agents=agents)) as emu:
        emu.bus.tap.append(tap)
        handles = []
        at = 0.0
        for start in starts:
            await emu.clock.sleep(start - at)
            at = start
            handles.append(await emu.place_call(CallerScript(
                context="p-in", exten="1", patience=1000, talk_time=None)))
        await asyncio.wait_for(asyncio.gather(*(h.wait() for h in handles)), 60)
    return dials


def talker(n: str, ring: float = 1.0, talk: float = 5.0) -> AgentScript:
    return AgentScript(f"Local/{n}@agent-local/n", ring_time=ring, talk_time=talk)


async def test_leastrecent_ranks_by_last_completed_call(tmp_path: Path) -> None:
    """A member that rang and was not answered completed no call: its metric stays 0 and
    it is rung again (the emulator used to rank by idle time and move on).  Of the two
    never-called members 1002 wins the tie: 1001 hashes to bucket 8, 1002 to 18, and the
    member iterated last is kept by find_best()."""
    etc = etc_with(tmp_path, "strategy = leastrecent\nringinuse = no\n", ("1001", "1002"))
    agents = [talker("1001"), AgentScript("Local/1002@agent-local/n", ring_time=12)]
    # rings 1002 10 s, waits 1 s, again 10 s, waits 1 s, again 3 s: the queue times out
    assert await rung(etc, agents, [0.0]) == ["1002", "1002", "1002"]


async def test_leastrecent_after_completed_calls(tmp_path: Path) -> None:
    """Never-called members first; then the one whose last call completed earliest."""
    etc = etc_with(tmp_path, "strategy = leastrecent\nringinuse = no\n",
                   ("1001", "1002", "1003"))
    agents = [talker("1001"), talker("1002"), talker("1003")]
    # ties among the never-called: bucket 28 (1003), 18 (1002), then 1001 (8); each
    # call ends 6 s after it starts, so the 4th caller finds 1003's call the oldest
    got = await rung(etc, agents, [0.0, 10.0, 20.0, 30.0, 40.0])
    assert got == ["1003", "1002", "1001", "1003", "1002"]


async def test_ringinuse_yes_rings_a_ringing_member_again(tmp_path: Path) -> None:
    """With ringinuse = yes (app_queue's default) can_ring_entry() lets a member ringing
    for one caller be rung for the next: both callers, whose turn it is at once (two
    members available), ring the best member, 1002; without ringinuse the second takes
    the next best (pending_members)."""
    members = ("1001", "1002")
    agents = [talker("1001", ring=3), talker("1002", ring=3)]
    yes = await rung(etc_with(tmp_path / "y", "strategy = leastrecent\n", members),
                     agents, [0.0, 0.5])
    assert yes == ["1002", "1002"]
    no = await rung(etc_with(tmp_path / "n", "strategy = leastrecent\nringinuse = no\n",
                             members), agents, [0.0, 0.5])
    assert no == ["1002", "1001"]


async def test_rrmemory_moves_rrpos_when_the_ring_ends(tmp_path: Path) -> None:
    """rrmemory: calc_metric() ranks from rrpos, which store_next_rr() moves only after
    wait_for_answer(): two callers ringing at once both ring the member at rrpos when
    it may ring in use; the next caller then starts after it."""
    members = ("1001", "1002", "1003")
    agents = [talker("1001", ring=3), talker("1002", ring=3), talker("1003", ring=3)]
    got = await rung(etc_with(tmp_path, "strategy = rrmemory\n", members), agents,
                     [0.0, 0.5, 20.0])
    assert got == ["1001", "1001", "1002"]


async def test_ringall_rings_every_member_for_each_caller_with_ringinuse(
        tmp_path: Path) -> None:
    """ringall: num_available_members() counts one, so only the first caller not ringing
    may ring; with ringinuse = yes the second (the first is pending) rings all again."""
    members = ("1001", "1002")
    agents = [talker("1001", ring=3), AgentScript("Local/1002@agent-local/n", ring_time=9)]
    when: list[float] = []
    got = await rung(etc_with(tmp_path, "strategy = ringall\n", members), agents,
                     [0.0, 0.5], when)
    assert got == ["1001", "1002", "1001", "1002"]
    assert when == [0.0, 0.0, 0.5, 0.5]  # not after the first caller's ring ends
