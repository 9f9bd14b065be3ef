"""The break rota (ivr/agents/rota.py) through the application's agents' service over
AMI, against the emulator on its virtual clock: agents go on a break in turn with the
catalog's reasons, come back after the break, never fewer than ``keep_ready`` stay
unpaused, and everyone is back when it finishes."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from ivr.agents.rota import PauseRota
from ivr.app import AGENTS, QUEUES, AppOptions, build_app, running
from ivr.sim import AgentScript, Emulator, EmulatorConfig
from ivr.sim.clock import VirtualClock
from tests.test_agents_e2e import FAST, dialplans_with_desk, etc_with_desk
from tests.test_app import for_emulator
from tests.test_dialplan_support import SHIPPED

AGENTS_ON_DESK = ["SIP/a1", "SIP/a2", "SIP/a3", "SIP/a4"]


async def test_breaks_in_turn_with_catalog_reasons_and_everyone_back(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with Emulator(EmulatorConfig(etc=etc_with_desk(tmp_path), clock=clock,
                                       agents=[AgentScript(a) for a in AGENTS_ON_DESK])
                        ) as emu:
        settings = replace(for_emulator(emu), dialplans_dir=dialplans_with_desk(tmp_path),
                           asterisk_conf_dir=tmp_path / "asterisk-conf",
                           prompts_dir=SHIPPED.parent / "prompts")
        app = build_app(settings, AppOptions(events=False, watch_s=None, ami=FAST))
        async with running(app):
            svc, mon = app[AGENTS], app[QUEUES]
            for n, agent in enumerate(AGENTS_ON_DESK):
                await svc.login(agent, ["desk"], name=f"坐席{n + 1}")
            async with asyncio.timeout(10):
                await mon.wait_for(lambda s: len(s.queues["desk"].members) == 4)
            seen: list[tuple[float, str, bool, str]] = []
            rota = PauseRota(svc, "desk", sleep=clock.sleep, clock=clock.wall, every_s=10,
                             break_s=25, keep_ready=2,
                             on_change=lambda c: seen.append((c.at, c.interface, c.paused,
                                                              c.reason)))
            most_paused = 0
            for _ in range(7):  # what run() does, one step every 10 s
                await rota.step()
                await clock.sleep(10)
                # Asterisk holds what the rota did: never more than two paused
                most_paused = max(most_paused, sum(
                    1 for m in emu.queues.queues["desk"].members if m.paused))
            await rota.finish()
            async with asyncio.timeout(10):
                await mon.wait_for(lambda s: not any(m.paused for m in
                                                     s.queues["desk"].members.values()))
        assert not [m for m in emu.queues.queues["desk"].members if m.paused]

    pauses = [(i, r) for _, i, p, r in seen if p]
    # in turn (sorted interfaces, skipping those on a break), reasons in catalog order
    labels = list(svc.catalog.pause_reasons.values())
    assert [r for _, r in pauses] == labels[:len(pauses)]
    assert [i for i, _ in pauses][:2] == ["SIP/a1", "SIP/a2"]
    assert len(pauses) >= 3 and most_paused == 2 and rota.refused == 0
    # every break lasted its 25 s (or until the finish), and each agent came back
    for at, agent, was_paused, _ in seen:
        if was_paused:
            back = next(t for t, i, p, _ in seen if i == agent and not p and t > at)
            assert back - at >= 25 or back == seen[-1][0]
    assert sum(1 for s in seen if s[2]) == sum(1 for s in seen if not s[2])
