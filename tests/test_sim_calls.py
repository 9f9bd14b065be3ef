"""Calls through the emulator's Python API: FastAGI, queue with simulated agents,
AGI failure fallback, MixMonitor WAV, Read with scripted digits."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import pytest

from ivr.sim import AgentScript, CallerScript, Emulator, EmulatorConfig
from ivr.sim import mixmonitor as mm
from ivr.sim.clock import VirtualClock


async def test_ivr_to_queue_answered_by_agent() -> None:
    seen: list[str] = []

    async def agi(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = b""
        while not head.endswith(b"\n\n"):
            head += await r.readexactly(1)
        for cmd in ("ANSWER", "GET DATA beep 3000 1", "SET VARIABLE IVR_NEXT queue",
                    "SET VARIABLE IVR_QUEUE hotline"):
            w.write(cmd.encode() + b"\n")
            seen.append((await r.readline()).decode().strip())
        w.close()

    srv = await asyncio.start_server(agi, "127.0.0.1", 0)
    cfg = EmulatorConfig(clock=VirtualClock(), agi_port=srv.sockets[0].getsockname()[1],
                         agents=[AgentScript("Local/1001@agent-local/n", ring_time=2)])
    async with Emulator(cfg) as emu:
        h = await emu.place_call(CallerScript(number="13800138000", menu_digits=["2"],
                                              talk_time=5, patience=100))
        await asyncio.wait_for(h.wait(), 20)
        assert h.channel.variables["AGISTATUS"] == "SUCCESS"  # the server just closed
        s = emu.summary()
    srv.close()
    await srv.wait_closed()
    assert seen == ["200 result=0", "200 result=2", "200 result=1", "200 result=1"]
    assert (s.placed, s.answered, s.abandoned, s.completed) == (1, 1, 0, 1)
    assert 1.5 <= s.max_wait < 10


async def test_agi_unreachable_runs_fallback_and_abandon() -> None:
    async with Emulator(EmulatorConfig(clock=VirtualClock(), agi_port=1)) as emu:
        h = await emu.place_call(CallerScript(exten="12345"))
        await asyncio.wait_for(h.wait(), 10)
        assert h.channel.variables["AGISTATUS"] == "FAILURE"
        assert emu.summary().agi_failures == 1
        h2 = await emu.place_call(CallerScript(exten="6003", patience=3))
        await asyncio.wait_for(h2.wait(), 10)
        assert emu.summary().abandoned == 1
        assert h2.channel.variables["ABANDONED"] == "TRUE"


async def test_read_consumes_scripted_digits() -> None:
    async with Emulator(EmulatorConfig(clock=VirtualClock())) as emu:
        h = await emu.place_call(CallerScript(context="perf", exten="7000", menu_digits=["1"]))
        await asyncio.wait_for(h.wait(), 10)
        assert h.channel.variables["CHOICE"] == "1"
        assert h.channel.language == "en"


def test_mixmonitor_writes_a_wav(tmp_path: Path) -> None:
    out = tmp_path / "rec" / "a.wav"
    mm.write_wav(out, 2.5)
    with wave.open(str(out)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        assert w.getnframes() == 20000


async def test_atxfer_and_redirect_into_confbridge_over_ami(tmp_path: Path) -> None:
    from tests.sim_trace_tools import read_until

    async with Emulator(EmulatorConfig(clock=VirtualClock())) as emu:
        r, w = await asyncio.open_connection("127.0.0.1", emu.ami_port)
        buf = bytearray()
        w.write(b"Action: Login\r\nActionID: 1\r\nUsername: ivr\r\nSecret: ivrsecret\r\n\r\n")
        h = await emu.place_call(CallerScript(exten="6000", talk_time=None, patience=None))
        await read_until(r, buf, b"Event: AgentConnect\r\n")
        agent = next(c for c in emu.pbx.channels if c.startswith("Local/1001") and c[-1] == "1")
        agent_ch = emu.pbx.channels[agent]
        first = agent_ch.bridge
        w.write(f"Action: Atxfer\r\nActionID: 2\r\nChannel: {agent}\r\nContext: agent-local\r\n"
                "Exten: 2001\r\n\r\n".encode())
        await read_until(r, buf, b"Atxfer successfully queued")
        await read_until(r, buf, b"Event: Hold\r\n")
        while agent_ch.bridge in (None, first):  # consulting 2001 once it answered
            await emu.clock.sleep(0.5)
        # the transferer hangs up with the target on the line: the transfer completes
        w.write(f"Action: Hangup\r\nActionID: 21\r\nChannel: {agent}\r\n\r\n".encode())
        await asyncio.wait_for(agent_ch.reached("hungup"), 10)  # the agent left
        while h.channel.bridge is None or len(h.channel.bridge.channels) < 2:
            await emu.clock.sleep(0.5)
        assert h.channel.bridge is not None
        dept = next(c.name for c in h.channel.bridge.channels if c is not h.channel)
        assert dept.startswith("Local/2001@agent-local-")
        w.write(f"Action: Redirect\r\nActionID: 3\r\nChannel: {h.name}\r\nExtraChannel: {dept}"
                "\r\nContext: conf\r\nExten: 9001\r\nPriority: 1\r\n\r\n".encode())
        await read_until(r, buf, b"Dual Redirect successful")
        while buf.count(b"Event: ConfbridgeJoin\r\n") < 2:
            buf += await asyncio.wait_for(r.read(65536), 10)
        w.write(b"Action: MixMonitor\r\nActionID: 4\r\nChannel: " + h.name.encode()
                + b"\r\nFile: " + str(tmp_path / "r.wav").encode() + b"\r\n\r\n")
        await read_until(r, buf, b"Event: MixMonitorStart")
        await emu.clock.sleep(2)
        w.write(b"Action: ConfbridgeKick\r\nActionID: 5\r\nConference: 9001\r\n"
                b"Channel: all\r\n\r\n")
        await read_until(r, buf, b"Event: ConfbridgeEnd")
        await asyncio.wait_for(h.wait(), 10)
        w.close()
    with wave.open(str(tmp_path / "r.wav")) as wav:
        assert wav.getnframes() >= 8000 * 2


async def test_generator_and_summary_fold_old_records(monkeypatch: pytest.MonkeyPatch) -> None:
    from ivr.sim import pbx as pbx_module

    monkeypatch.setattr(pbx_module, "MAX_RECORDS", 2)
    async with Emulator(EmulatorConfig(clock=VirtualClock(), seed=3, agi_port=1)) as emu:
        hs = await emu.generate(6, rate=10.0)
        await asyncio.wait_for(asyncio.gather(*(h.wait() for h in hs)), 20)
        s = emu.summary()
        assert len(emu.pbx.records) <= 3
    # every random caller dials 12345: AGI unreachable -> FAILURE -> the dialplan hangs up
    assert (s.placed, s.completed, s.active, s.agi_failures) == (6, 6, 0, 6)
    assert len({h.script.number for h in hs}) == 6


async def _agent_call(emu: Emulator) -> tuple[CallerScript, str]:
    """A caller into queue hotline, answered by agent 1001; the agent's ;1 name."""
    h = await emu.place_call(CallerScript(exten="6000", talk_time=None, patience=None))
    while not any(n.startswith("Local/1001") and n.endswith(";1") and c.bridge is not None
                  for n, c in emu.pbx.channels.items()):
        await emu.clock.sleep(0.5)
    return h.script, next(n for n in emu.pbx.channels
                          if n.startswith("Local/1001") and n.endswith(";1"))


async def test_atxfer_target_not_answering_returns_to_the_caller() -> None:
    """features.conf atxfernoanswertimeout (15 s): the target is hung up, the transferer
    is back with the caller (Unhold), the call goes on; no AttendedTransfer."""
    async with Emulator(EmulatorConfig(clock=VirtualClock())) as emu:
        names: list[str] = []
        emu.bus.tap.append(lambda name, body: names.append(name))
        _, agent = await _agent_call(emu)
        agent_ch = emu.pbx.channels[agent]
        first = agent_ch.bridge
        emu.atxfer(agent_ch, "agent-local", "1099")  # Ringing(), never answers
        await emu.clock.sleep(1.0)
        target = next(c for n, c in emu.pbx.channels.items()
                      if n.startswith("Local/1099") and n.endswith(";1"))
        assert target.bridge is not None and target.bridge is not first  # consulting
        await asyncio.wait_for(target.reached("hungup"), 10)
        assert emu.clock.now() >= 15.0
        assert agent_ch.bridge is first and not agent_ch.hungup
        assert names.count("Hold") == names.count("Unhold") == 1
        assert "AttendedTransfer" not in names
        assert not any(n.startswith("Local/1099") for n in emu.pbx.channels)


async def test_atxfer_needs_the_feature_code(tmp_path: Path) -> None:
    """manager.c action_atxfer: without an atxfer code in features.conf the action fails
    and nothing is queued on the channel."""
    from ivr.sim.emulator import DEFAULT_ETC
    from tests.sim_trace_tools import read_until

    etc = tmp_path / "etc"
    etc.mkdir()
    for f in DEFAULT_ETC.iterdir():
        if f.name != "features.conf":
            (etc / f.name).write_text(f.read_text())
    async with Emulator(EmulatorConfig(etc=etc, clock=VirtualClock())) as emu:
        r, w = await asyncio.open_connection("127.0.0.1", emu.ami_port)
        buf = bytearray()
        w.write(b"Action: Login\r\nActionID: 1\r\nUsername: ivr\r\nSecret: ivrsecret\r\n\r\n")
        await read_until(r, buf, b"ActionID: 1\r\n")
        _, agent = await _agent_call(emu)
        w.write(f"Action: Atxfer\r\nActionID: 2\r\nChannel: {agent}\r\nExten: 2001\r\n\r\n"
                .encode())
        await read_until(r, buf, b"No attended transfer feature code found")
        assert b"Event: Hold\r\n" not in buf and b"Variable: TRANSFER_CONTEXT" not in buf
        w.close()


async def test_chanspy_ends_with_the_spied_on_call() -> None:
    """ChanSpy(prefix,qE): a supervisor listening to an agent is hung up when the agent's
    call ends (ChanSpyStart, then ChanSpyStop)."""
    async with Emulator(EmulatorConfig(clock=VirtualClock())) as emu:
        names: list[str] = []
        emu.bus.tap.append(lambda name, body: names.append(name))
        _, agent = await _agent_call(emu)
        spy = await emu.originate("Local/1002@agent-local", app="ChanSpy",
                                  data="Local/1001@agent-local,qE")
        assert spy is not None
        while "ChanSpyStart" not in names:
            await emu.clock.sleep(0.1)
        emu.pbx.request_hangup(emu.pbx.channels[agent], 16)
        await asyncio.wait_for(spy.reached("hungup"), 10)
        assert names.count("ChanSpyStart") == names.count("ChanSpyStop") == 1


async def test_atxfer_caller_hangs_up_during_the_consultation() -> None:
    """bridge_basic.c consulting_exit, transferee hang-up: agent and target go on talking
    in the consultation bridge; when the agent hangs up, the target's leg ends too."""
    async with Emulator(EmulatorConfig(clock=VirtualClock())) as emu:
        _, agent = await _agent_call(emu)
        agent_ch = emu.pbx.channels[agent]
        first = agent_ch.bridge
        emu.atxfer(agent_ch, "agent-local", "2001")
        while agent_ch.bridge in (None, first):
            await emu.clock.sleep(0.5)
        consult = agent_ch.bridge
        assert consult is not None
        target = next(c for c in consult.channels if c is not agent_ch)
        caller = next(c for n, c in emu.pbx.channels.items() if n.startswith("SIP/"))
        emu.pbx.request_hangup(caller, 16, "HangupRequest")
        await asyncio.wait_for(caller.reached("hungup"), 10)
        await emu.clock.sleep(5.0)
        assert not agent_ch.hungup and not target.hungup
        assert agent_ch.bridge is consult and target.bridge is consult
        emu.pbx.request_hangup(agent_ch, 16)
        await asyncio.wait_for(target.reached("hungup"), 10)
        assert not emu.pbx.channels
