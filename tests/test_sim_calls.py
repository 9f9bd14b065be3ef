"""Calls through the emulator's Python API: FastAGI, queue with simulated agents,
AGI failure fallback, MixMonitor WAV, Read with scripted digits."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

from ivr.sim import AgentScript, CallerScript, Emulator, EmulatorConfig
from ivr.sim import mixmonitor as mm


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
    cfg = EmulatorConfig(speed=50, agi_port=srv.sockets[0].getsockname()[1],
                         agents=[AgentScript("Local/1001@agent-local/n", ring_time=2)])
    async with Emulator(cfg) as emu:
        h = await emu.place_call(CallerScript(number="13800138000", menu_digits=["2"],
                                              talk_time=5, patience=100))
        await asyncio.wait_for(h.wait(), 20)
        s = emu.summary()
    srv.close()
    await srv.wait_closed()
    assert seen == ["200 result=0", "200 result=2", "200 result=1", "200 result=1"]
    assert (s.placed, s.answered, s.abandoned, s.completed) == (1, 1, 0, 1)
    assert 1.5 <= s.max_wait < 10


async def test_agi_unreachable_runs_fallback_and_abandon() -> None:
    async with Emulator(EmulatorConfig(speed=50, agi_port=1)) as emu:
        h = await emu.place_call(CallerScript(exten="12345"))
        await asyncio.wait_for(h.wait(), 10)
        assert h.channel.variables["AGISTATUS"] == "FAILURE"
        h2 = await emu.place_call(CallerScript(exten="6003", patience=3))
        await asyncio.wait_for(h2.wait(), 10)
        assert emu.summary().abandoned == 1
        assert h2.channel.variables["ABANDONED"] == "TRUE"


async def test_read_consumes_scripted_digits() -> None:
    async with Emulator(EmulatorConfig(speed=50)) as emu:
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
