"""A second FastAGI server (issue 13): the rendered dialplan tries it when AGI() to the
first ends with AGISTATUS=FAILURE (connection refused: res_agi's launch_netscript), then
the static fallback — on the emulator, over real sockets, with a virtual clock."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from ivr.agi.server import FastAGIServer
from ivr.ami.client import AMIClient, AMISettings
from ivr.dialplan.ami_control import ClientControl
from ivr.dialplan.publish import Publisher, Store, prepare
from ivr.dialplan.validate import file_prompt_lookup
from ivr.flow.runtime import DefinitionStore, IvrRuntime
from ivr.redisproc import free_port
from ivr.sim import callers
from ivr.sim.clock import VirtualClock
from ivr.sim.emulator import Emulator, EmulatorConfig
from tests.test_dialplan_support import SHIPPED, prompts_for


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    folder = tmp_path / "etc"
    shutil.copytree(Path(callers.__file__).parent / "etc", folder)
    (folder / "extensions.conf").write_text("[general]\nstatic=yes\n")
    (folder / "queues.conf").write_text("[general]\n")
    shutil.copy(SHIPPED.parent / "asterisk-conf" / "extensions_site.conf", folder)
    return folder


async def _calls(etc: Path, tmp_path: Path, primary: int, backup: int | None,
                 server: FastAGIServer | None) -> list[tuple[str | None, str | None]]:
    """Publish the shipped definition with FastAGI on ``primary`` (and ``backup``) into
    the emulator and place two calls to 12345: one pressing nothing, one pressing 9 in
    the greeting (English: only the IVR sends that caller to the english queue).  The
    (QUEUENAME, AGISTATUS) each call ended with."""
    src = tmp_path / "dialplans"
    shutil.copytree(SHIPPED, src)
    prompts = prompts_for(src, tmp_path / "prompts")
    settings = f"agi_port: {primary}"
    if backup is not None:
        settings += f"\n  agi_backup_host: 127.0.0.1\n  agi_backup_port: {backup}"
    yaml = src / "hotline.yaml"
    yaml.write_text(yaml.read_text().replace("agi_port: 4573", settings))
    ivr: IvrRuntime | None = None
    if server is not None:
        store = DefinitionStore(src, prompts_dir=prompts)
        store.load()
        ivr = IvrRuntime(store)
        server.add_route("ivr", ivr.handle)
    plan = prepare(src, file_prompt_lookup(prompts))
    emu = Emulator(EmulatorConfig(etc=etc, clock=VirtualClock(), seed=5))
    await emu.start()
    try:
        client = AMIClient("127.0.0.1", emu.ami_port, username="ivr", secret="ivrsecret",
                           settings=AMISettings(ping_interval=0))
        await client.start()
        try:
            result = await Publisher(Store.at(etc), who="t").publish(plan, ClientControl(client))
            assert result.record.status == "published"
        finally:
            await client.close()
        handles = [
            await emu.place_call(callers.CallerScript(
                number=number, exten="12345", menu_digits=digits, talk_time=1.0,
                patience=60.0))
            for number, digits in (("13900000001", []), ("13900000002", ["9"]))
        ]
        async with asyncio.timeout(30):
            for h in handles:
                await h.wait()
        assert emu.summary().answered == 2
        return [(h.channel.variables.get("QUEUENAME"), h.channel.variables.get("AGISTATUS"))
                for h in handles]
    finally:
        await emu.close()
        if ivr is not None:
            await ivr.close()


async def test_primary_down_the_secondary_serves_the_call(etc: Path, tmp_path: Path) -> None:
    server = FastAGIServer()
    await server.start("127.0.0.1", 0)
    try:
        down = free_port()  # nothing listens: connection refused, AGISTATUS=FAILURE
        seen = await _calls(etc, tmp_path, down, server.port, server)
    finally:
        await server.close()
    # the IVR on the second server answered both: the 9 took the caller to English
    assert seen == [("hotline", "SUCCESS"), ("english", "SUCCESS")]


async def test_both_down_the_static_fallback(etc: Path, tmp_path: Path) -> None:
    seen = await _calls(etc, tmp_path, free_port(), free_port(), None)
    # no IVR: both callers in the general queue, the 9 unheard
    assert seen == [("hotline", "FAILURE"), ("hotline", "FAILURE")]


async def test_without_a_backup_the_static_fallback_at_once(etc: Path, tmp_path: Path) -> None:
    seen = await _calls(etc, tmp_path, free_port(), None, None)
    assert seen == [("hotline", "FAILURE"), ("hotline", "FAILURE")]
