"""Who is logged in survives an Asterisk restart (issue 10, docs/agents.md): with
``persistentmembers = yes`` (as the rendered queues.conf sets it) app_queue dumps the
dynamic members to astdb on every add, remove and pause (``Queue/PersistentMembers``,
``iface;penalty;paused;name;state_interface;reason;wrapuptime``) and adds them back when
it starts.  The emulator keeps its astdb in a file, so a second emulator on the same
port is Asterisk after ``core restart``: the bridge reconnects, re-reads QueueStatus and
shows the agents logged in, the paused one still paused with her reason."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from ivr.ami.backoff import Backoff
from ivr.ami.client import AMISettings
from ivr.app import AGENTS, QUEUES, AppOptions, build_app, running
from ivr.redisproc import free_port
from ivr.sim import AgentScript, Emulator, EmulatorConfig
from ivr.sim.app_queue import PM_FAMILY
from ivr.sim.clock import VirtualClock
from tests.test_agents_e2e import dialplans_with_desk, etc_with_desk
from tests.test_app import for_emulator
from tests.test_dialplan_support import SHIPPED

QUICK = AMISettings(ping_interval=0, backoff=Backoff(initial=0.05, cap=0.2))


async def test_agents_and_pauses_survive_an_asterisk_restart(tmp_path: Path) -> None:
    etc = etc_with_desk(tmp_path)
    conf = etc / "queues.conf"
    conf.write_text(conf.read_text().replace("persistentmembers = no",
                                             "persistentmembers = yes", 1))
    port, astdb = free_port(), tmp_path / "astdb.json"

    def asterisk() -> Emulator:
        return Emulator(EmulatorConfig(etc=etc, ami_port=port, astdb=astdb,
                                       clock=VirtualClock(),
                                       agents=[AgentScript("SIP/wangfang"),
                                               AgentScript("SIP/lihua")]))

    first = asterisk()
    await first.start()
    try:
        settings = replace(for_emulator(first), dialplans_dir=dialplans_with_desk(tmp_path),
                           asterisk_conf_dir=tmp_path / "asterisk-conf",
                           prompts_dir=SHIPPED.parent / "prompts")
        app = build_app(settings, AppOptions(events=False, watch_s=None, ami=QUICK))
        async with running(app):
            svc, mon = app[AGENTS], app[QUEUES]
            await svc.login("SIP/wangfang", {"desk": 1}, name="王芳")
            await svc.login("SIP/lihua", ["desk"], name="李华")
            await svc.pause("SIP/wangfang", "lunch")
            async with asyncio.timeout(10):
                await mon.wait_for(lambda s: (m := s.member("desk", "SIP/wangfang"))
                                   is not None and m.paused)
            # what app_queue's dump_queue_members() writes
            assert first.astdb[(PM_FAMILY, "desk")] == (
                "SIP/wangfang;1;1;王芳;SIP/wangfang;午休 lunch;0|"
                "SIP/lihua;0;0;李华;SIP/lihua;;0")
            assert mon.state.resyncs == 1

            # Asterisk restarts: the session ends, a new Asterisk comes up on the port
            await first.close()
            second = asterisk()
            await second.start()
            try:
                async with asyncio.timeout(20):
                    await mon.wait_for(lambda s: s.resyncs == 2 and s.ready)
                desk = {m.interface: m for m in second.queues.queues["desk"].members}
                assert {i: (m.name, m.penalty, m.paused, m.paused_reason, m.dynamic)
                        for i, m in desk.items()} == {
                    "SIP/wangfang": ("王芳", 1, True, "午休 lunch", True),
                    "SIP/lihua": ("李华", 0, False, "", True)}
                # the bridge shows what the new Asterisk holds, reasons with their codes
                rows = {r["interface"]: r for r in svc.status() if r["queue"] == "desk"}
                assert rows["SIP/wangfang"]["paused_reason_code"] == "lunch"
                assert rows["SIP/wangfang"]["name"] == "王芳"
                assert rows["SIP/lihua"]["paused"] is False
                # and acts on it: she comes back, he logs out; the astdb follows
                await svc.unpause("SIP/wangfang")
                await svc.logout("SIP/lihua")
                async with asyncio.timeout(10):
                    await mon.wait_for(lambda s: s.member("desk", "SIP/lihua") is None)
                assert second.astdb[(PM_FAMILY, "desk")] == \
                    "SIP/wangfang;1;0;王芳;SIP/wangfang;;0"
            finally:
                await second.close()
    finally:
        await first.close()


async def test_without_persistentmembers_a_restart_forgets_them(tmp_path: Path) -> None:
    """app_queue's default (``persistentmembers = no``, the recorded traces): nothing is
    dumped, and a restarted Asterisk has only the static members."""
    etc = etc_with_desk(tmp_path)
    astdb = tmp_path / "astdb.json"
    async with Emulator(EmulatorConfig(etc=etc, astdb=astdb)) as emu:
        assert emu.queues.add("desk", "SIP/wangfang", "王芳", 0, True, "", "午休 lunch") is None
        assert (PM_FAMILY, "desk") not in emu.astdb
    async with Emulator(EmulatorConfig(etc=etc, astdb=astdb)) as emu:
        assert emu.queues.queues["desk"].members == []
