"""Publish into the project's Asterisk emulator (ivr.sim) over real AMI, then place calls
through the rendered dialplan: with the FastAGI server down every caller still reaches
an agent (the static fallback)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ivr.ami.client import AMIClient, AMISettings
from ivr.dialplan.ami_control import ClientControl
from ivr.dialplan.errors import PublishError
from ivr.dialplan.publish import Plan, Publisher, Store, prepare
from ivr.dialplan.render import version_marker
from ivr.dialplan.validate import file_prompt_lookup
from tests.test_dialplan_support import SHIPPED, prompts_for

sim = pytest.importorskip("ivr.sim.emulator")
callers = pytest.importorskip("ivr.sim.callers")
sim_clock = pytest.importorskip("ivr.sim.clock")


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    """The emulator's config dir before the first publish: its manager.conf (AMI user
    ivr/ivrsecret), the site contexts, and empty generated files."""
    folder = tmp_path / "etc"
    shutil.copytree(Path(sim.__file__).parent / "etc", folder)
    (folder / "extensions.conf").write_text("[general]\nstatic=yes\n")
    (folder / "queues.conf").write_text("[general]\n")
    shutil.copy(SHIPPED.parent / "asterisk-conf" / "extensions_site.conf", folder)
    return folder


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    src = tmp_path / "dialplans"
    shutil.copytree(SHIPPED, src)
    # the FastAGI server is not running: nothing listens on port 1
    text = (src / "hotline.yaml").read_text().replace("agi_port: 4573", "agi_port: 1")
    (src / "hotline.yaml").write_text(text)
    prompts = prompts_for(src, tmp_path / "prompts")
    return prepare(src, file_prompt_lookup(prompts))


@pytest.fixture
async def emulator(etc: Path) -> AsyncIterator[object]:
    emu = sim.Emulator(sim.EmulatorConfig(etc=etc, clock=sim_clock.VirtualClock(), seed=7))
    await emu.start()
    yield emu
    await emu.close()


async def _client(emu: object) -> AMIClient:
    client = AMIClient("127.0.0.1", emu.ami_port, username="ivr",  # type: ignore[attr-defined]
                       secret="ivrsecret", settings=AMISettings(ping_interval=0))
    await client.start()
    return client


async def test_publish_into_the_emulator_and_calls_survive_a_dead_ivr(
    emulator: object, etc: Path, plan: Plan
) -> None:
    client = await _client(emulator)
    try:
        control = ClientControl(client)
        result = await Publisher(Store.at(etc), who="e2e").publish(plan, control)
        assert result.record.status == "published"
        shown = await control.command("dialplan show 12315@from-pstn")
        assert any(version_marker(plan.version) in line for line in shown)
    finally:
        await client.close()
    handles = [
        await emulator.place_call(  # type: ignore[attr-defined]
            callers.CallerScript(number=f"1380013800{i}", exten=exten, talk_time=1.0,
                                 patience=60.0))
        for i, exten in enumerate(("12345", "12315", "8890"))
    ]
    async with asyncio.timeout(30):
        for h in handles:
            await h.wait()
    summary = emulator.summary()  # type: ignore[attr-defined]
    assert (summary.placed, summary.answered, summary.abandoned) == (3, 3, 0)


async def test_publish_refuses_when_the_site_include_is_missing(
    emulator: object, etc: Path, plan: Plan
) -> None:
    (etc / "extensions_site.conf").unlink()
    before = (etc / "extensions.conf").read_text()
    client = await _client(emulator)
    try:
        with pytest.raises(PublishError, match="extensions_site.conf"):
            await Publisher(Store.at(etc), who="e2e").publish(plan, ClientControl(client))
    finally:
        await client.close()
    assert (etc / "extensions.conf").read_text() == before


async def test_end_to_end_with_the_fastagi_runtime(etc: Path, tmp_path: Path) -> None:
    """Published config + the emulator + the FastAGI IVR runtime: a caller who presses
    nothing reaches the general queue, one who presses 9 during the greeting reaches the
    English desk in English, a registered elderly caller gets queue priority.  (The ticket
    API of the shipped settings is not running: lookups fail and calls go on.)"""
    server_mod = pytest.importorskip("ivr.agi.server")
    runtime = pytest.importorskip("ivr.flow.runtime")
    src = tmp_path / "dialplans"
    shutil.copytree(SHIPPED, src)
    prompts = prompts_for(src, tmp_path / "prompts")
    store = runtime.DefinitionStore(src, prompts_dir=prompts)
    store.load()
    server = server_mod.FastAGIServer()
    ivr = runtime.IvrRuntime(store)
    server.add_route("ivr", ivr.handle)
    await server.start("127.0.0.1", 0)
    text = (src / "hotline.yaml").read_text().replace("agi_port: 4573",
                                                      f"agi_port: {server.port}")
    (src / "hotline.yaml").write_text(text)
    store.load()
    plan = prepare(src, file_prompt_lookup(prompts))
    emu = sim.Emulator(sim.EmulatorConfig(etc=etc, clock=sim_clock.VirtualClock(), seed=3))
    await emu.start()
    try:
        client = await _client(emu)
        try:
            await Publisher(Store.at(etc), who="e2e").publish(plan, ClientControl(client))
        finally:
            await client.close()
        calls = [("13900000001", "12345", []), ("13900000002", "12345", ["9"]),
                 ("13800138000", "12315", [])]
        handles = [
            await emu.place_call(callers.CallerScript(
                number=number, exten=exten, menu_digits=digits, talk_time=1.0, patience=60.0))
            for number, exten, digits in calls
        ]
        async with asyncio.timeout(30):
            for h in handles:
                await h.wait()
        seen = [(h.channel.variables.get("QUEUENAME"), h.channel.variables.get("IVR_LANGUAGE"),
                 h.channel.variables.get("QUEUE_PRIO")) for h in handles]
        assert seen == [("hotline", "zh", "0"), ("english", "en", "0"), ("consumer", "zh", "10")]
        assert emu.summary().answered == 3
    finally:
        await emu.close()
        await server.close()
        await ivr.close()
