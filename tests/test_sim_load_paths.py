"""The emulator's paths made cheaper for bench/sim_load.py keep their behaviour:
MixMonitor's ``b`` option and WAV file, prompt lookups that see files added later,
round-robin picks with and without uniform penalties, cached ``$[...]`` evaluation."""

from __future__ import annotations

import asyncio
import struct
import wave
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ivr.asterisk.errors import ExprError
from ivr.sim import CallerScript, Emulator, EmulatorConfig
from ivr.sim import mixmonitor as mm
from ivr.sim.clock import VirtualClock
from ivr.sim.expr import evaluate
from ivr.sim.media import prompt_seconds
from ivr.sim.model import Channel
from tests.test_sim_queue import etc_with


def test_write_wav_is_a_valid_file_of_the_length_asked(tmp_path: Path) -> None:
    out = tmp_path / "r" / "x.wav"
    mm.write_wav(out, 2.37)
    with wave.open(str(out)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        assert w.getnframes() == 18960
        frames = w.readframes(w.getnframes())
    samples = struct.unpack(f"<{len(frames) // 2}h", frames)
    assert any(samples[:800]) and not any(samples[800:8000])  # 100 ms tone, then silence
    assert any(samples[8000:8800]) and not any(samples[16800:])
    assert out.stat().st_size == 44 + 18960 * 2
    mm.write_wav(out, 0.0)
    with wave.open(str(out)) as w:
        assert w.getnframes() == 0


@pytest.mark.parametrize("options,low,high", [
    (",b", 1.9, 2.5),  # b: only while bridged — the talk time, not the 3 s before the queue
    ("", 5.0, 6.6),  # from MixMonitor's start: Wait(3) + ringing + talk
])
async def test_mixmonitor_records_from_the_bridge_with_b_else_from_its_start(
        tmp_path: Path, options: str, low: float, high: float) -> None:
    etc = etc_with(tmp_path, "rrmemory", ["SIP/a,0,A"],
                   f" same => n,MixMonitor(${{UNIQUEID}}.wav{options})\n same => n,Wait(3)\n")
    cfg = EmulatorConfig(etc=etc, clock=VirtualClock(), record_dir=tmp_path / "rec")
    async with Emulator(cfg) as emu:
        h = await emu.place_call(CallerScript(context="t-in", exten="1", talk_time=2,
                                              patience=None))
        await asyncio.wait_for(h.wait(), 10)
        uid = h.uniqueid
    with wave.open(str(tmp_path / "rec" / f"{uid}.wav")) as w:
        seconds = w.getnframes() / 8000
    assert low <= seconds <= high, seconds


def test_a_prompt_added_later_is_found(tmp_path: Path) -> None:
    (tmp_path / "zh").mkdir()
    pbx: Any = SimpleNamespace(options=SimpleNamespace(
        prompts=tmp_path, strict_prompts=True, default_prompt_seconds=2.0))
    ch = Channel("SIP/pstn-00000001", "1.1", context="c", exten="1", language="zh")
    assert prompt_seconds(pbx, ch, "later") is None
    assert prompt_seconds(pbx, ch, "later") is None  # cached as missing
    mm.write_wav(tmp_path / "zh" / "later.wav", 1.5)
    assert prompt_seconds(pbx, ch, "later") == 1.5
    mm.write_wav(tmp_path / "zh" / "sub" / "p.wav", 0.5)  # a name with a folder
    assert prompt_seconds(pbx, ch, "sub/p") == 0.5
    (tmp_path / "zh" / "later.wav").unlink()
    assert prompt_seconds(pbx, ch, "later") is None


async def _connected(emu: Emulator, n: int, gap: float, talk: float,
                     first_talk: float | None = None) -> list[str]:
    got: list[str] = []
    emu.bus.tap.append(lambda name, body: got.append(body.split("Interface: ")[1]
                                                     .split("\r\n")[0])
                       if name == "AgentConnect" else None)
    hs = []
    for i in range(n):
        t = first_talk if i == 0 and first_talk is not None else talk
        hs.append(await emu.place_call(CallerScript(context="t-in", exten="1",
                                                    talk_time=t, patience=None)))
        await emu.clock.sleep(gap)
    await asyncio.wait_for(asyncio.gather(*(h.wait() for h in hs)), 20)
    return got


async def test_rrmemory_skips_busy_members_in_member_order(tmp_path: Path) -> None:
    etc = etc_with(tmp_path, "rrmemory", ["SIP/a,0,A", "SIP/b,0,B", "SIP/c,0,C"], "",
                   "ringinuse = no\n")
    async with Emulator(EmulatorConfig(etc=etc, clock=VirtualClock())) as emu:
        # the first caller talks long to a; the next ones take short calls: a is skipped
        # while busy, the rotation goes on from where it was
        got = await _connected(emu, 4, gap=2.5, talk=1, first_talk=12)
    assert got == ["SIP/a", "SIP/b", "SIP/c", "SIP/b"]


async def test_rrmemory_with_penalties_keeps_to_the_best_tier(tmp_path: Path) -> None:
    etc = etc_with(tmp_path, "rrmemory", ["SIP/a,0,A", "SIP/b,1,B", "SIP/c,0,C"], "")
    async with Emulator(EmulatorConfig(etc=etc, clock=VirtualClock())) as emu:
        got = await _connected(emu, 4, gap=3, talk=1)
    assert got == ["SIP/a", "SIP/c", "SIP/a", "SIP/c"]


def test_evaluate_is_cached_and_still_raises() -> None:
    assert evaluate('"TIMEOUT" = "HANGUP"') == "0"
    assert evaluate('"TIMEOUT" = "HANGUP"') == "0"
    assert evaluate.cache_info().hits >= 1
    for _ in range(2):  # an error is raised every time, not cached as a value
        with pytest.raises(ExprError, match="expected '\\)'"):
            evaluate("(1")
