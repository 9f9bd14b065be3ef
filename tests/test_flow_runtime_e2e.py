"""End to end through the project's Asterisk emulator (ivr.sim): publish the shipped
definition over real AMI, run the IVR on the real FastAGI server, place calls; the
rendered dialplan calls our IVR, routes on the variables it sets, and the callers reach
agents in the queue the IVR chose."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ivr.agi.server import FastAGIServer
from ivr.ami.client import AMIClient, AMISettings
from ivr.calls.steps import IvrStep
from ivr.dialplan.ami_control import ClientControl
from ivr.dialplan.publish import Publisher, Store, prepare
from ivr.dialplan.validate import file_prompt_lookup
from ivr.flow.runtime import DefinitionStore, IvrRuntime

sim = pytest.importorskip("ivr.sim.emulator")
callers = pytest.importorskip("ivr.sim.callers")
sim_clock = pytest.importorskip("ivr.sim.clock")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    folder = tmp_path / "etc"
    shutil.copytree(Path(sim.__file__).parent / "etc", folder)
    (folder / "extensions.conf").write_text("[general]\nstatic=yes\n")
    (folder / "queues.conf").write_text("[general]\n")
    shutil.copy(ROOT / "asterisk-conf" / "extensions_site.conf", folder)
    return folder


@pytest.fixture
async def ivr_server(tmp_path: Path) -> AsyncIterator[tuple[FastAGIServer, DefinitionStore,
                                                             list[IvrStep]]]:
    src = tmp_path / "dialplans"
    shutil.copytree(ROOT / "dialplans", src)
    store = DefinitionStore(src, prompts_dir=ROOT / "prompts")
    store.load()
    steps: list[IvrStep] = []

    async def report(step: IvrStep) -> None:
        steps.append(step)

    runtime = IvrRuntime(store, reporter=report)
    server = FastAGIServer()
    server.add_route("ivr", runtime.handle)
    await server.start(port=0)
    yield server, store, steps
    await server.close()
    await runtime.close()


async def _run_calls(etc: Path, server: FastAGIServer, store: DefinitionStore,
                     calls: tuple[tuple[str, list[str]], ...] = (("12345", []), ("12315", []))
                     ) -> tuple[object, set[str]]:
    """Publish, place the calls (extension, digits), wait for all; (summary, queues)."""
    emu = sim.Emulator(sim.EmulatorConfig(etc=etc, clock=sim_clock.VirtualClock(), seed=7,
                                          agi_port=server.port, prompts=ROOT / "prompts"))
    await emu.start()
    try:
        client = AMIClient("127.0.0.1", emu.ami_port, username="ivr", secret="ivrsecret",
                           settings=AMISettings(ping_interval=0))
        await client.start()
        try:
            plan = prepare(store.directory, file_prompt_lookup(ROOT / "prompts"))
            result = await Publisher(Store.at(etc), who="e2e").publish(plan,
                                                                       ClientControl(client))
            assert result.record.status == "published"
        finally:
            await client.close()
        handles = [
            await emu.place_call(callers.CallerScript(
                number=f"1370013700{i}", exten=exten, talk_time=1.0, patience=60.0,
                menu_digits=list(digits)))
            for i, (exten, digits) in enumerate(calls)
        ]
        async with asyncio.timeout(40):
            for h in handles:
                await h.wait()
        return emu.summary(), {r.queue for r in emu.pbx.records.values() if r.queue}
    finally:
        await emu.close()


async def test_calls_through_emulator_run_the_ivr_and_reach_agents(
    etc: Path, ivr_server: tuple[FastAGIServer, DefinitionStore, list[IvrStep]]
) -> None:
    server, store, steps = ivr_server
    summary, _ = await _run_calls(etc, server, store)
    assert (summary.placed, summary.answered) == (2, 2)  # type: ignore[attr-defined]
    assert {s.entry for s in steps if s.kind == "entered"} == {"12345", "12315"}
    exits = sorted((s.entry, s.data["to"], s.data["target"]) for s in steps
                   if s.kind == "exit")
    assert exits == [("12315", "queue", "consumer"), ("12345", "queue", "hotline")]
    assert not [s for s in steps if s.kind == "error"]


async def test_emulator_routes_on_the_ivr_variables(
    etc: Path, ivr_server: tuple[FastAGIServer, DefinitionStore, list[IvrStep]]
) -> None:
    server, store, _ = ivr_server
    _, queues = await _run_calls(etc, server, store)
    assert queues == {"hotline", "consumer"}


async def test_barge_in_reaches_the_language_queue_on_exact_asterisk_behaviour(
    etc: Path, ivr_server: tuple[FastAGIServer, DefinitionStore, list[IvrStep]]
) -> None:
    """The emulator answers AGI GET DATA as Asterisk 20 does (no '&' split, its default):
    the greeting's prompt list goes through Read, and the barge-in digit still counts."""
    from ivr.metrics import METRICS

    server, store, steps = ivr_server
    warned = METRICS.get("sim.agi_getdata_ampersand")
    summary, queues = await _run_calls(etc, server, store,
                                       (("12345", ["9"]), ("12345", ["8"]), ("12345", [])))
    assert summary.answered == 3  # type: ignore[attr-defined]
    assert queues == {"english", "cantonese", "hotline"}
    exits = sorted((s.data["target"], s.data["language"]) for s in steps if s.kind == "exit")
    assert exits == [("cantonese", "yue"), ("english", "en"), ("hotline", "zh")]
    assert not [s for s in steps if s.kind == "error"]
    assert METRICS.get("sim.agi_getdata_ampersand") == warned

