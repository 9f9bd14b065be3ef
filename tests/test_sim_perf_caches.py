"""The emulator's headroom work keeps behaviour: cached ``${...}`` templates and argument
splits still see the values of the moment, waits without a task per wait still end on
a digit, a hang-up or a timeout, Set's fast path replaces ``_``/``__`` aliases and cleans
CR/LF, and MixMonitor files written off the event loop are complete at close."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import pytest

from ivr.asterisk.appargs import split_app_args
from ivr.asterisk.errors import ExprError
from ivr.asterisk.extensions import parse_extensions
from ivr.sim import CallerScript, Emulator, EmulatorConfig
from ivr.sim.clock import Clock, VirtualClock
from ivr.sim.dialplan import Dialplan
from ivr.sim.events import EventBus
from ivr.sim.expr import DictScope, substitute
from ivr.sim.model import Channel, ChannelHungUp, Signal, wait_any
from ivr.sim.pbx import Pbx
from tests.test_sim_queue import etc_with


def test_a_cached_template_sees_changed_variables() -> None:
    text = 'q=${Q} ${IF($["${X}" = "a"]?yes:no)} ${Q:1:2}$[${N} + 1]'
    scope = DictScope({"Q": "hotline", "X": "a", "N": "1"})
    assert substitute(text, scope) == "q=hotline yes ot2"
    scope.variables.update(Q="social", X="b", N="41")
    assert substitute(text, scope) == "q=social no oc42"
    del scope.variables["Q"]
    assert substitute(text, scope) == "q= no 42"


def test_a_cached_function_spec_sees_its_function_anew() -> None:
    calls: list[str] = []

    def fn(args: str) -> str:
        calls.append(args)
        return f"<{args}>{len(calls)}"
    scope = DictScope({"A": "x"}, {"F": fn})
    assert substitute("${F(${A})}", scope) == "<x>1"
    scope.variables["A"] = "y"
    assert substitute("${F(${A})}", scope) == "<y>2"
    assert calls == ["x", "y"]


def test_a_bad_template_fails_every_time() -> None:
    for _ in range(2):
        with pytest.raises(ExprError, match="missing '}'"):
            substitute("a ${B", DictScope())
    deep = "${" * 70 + "X" + "}" * 70
    for _ in range(2):
        with pytest.raises(ExprError, match="nested deeper"):
            substitute(deep, DictScope())


def test_split_app_args_hands_out_a_fresh_list() -> None:
    a = split_app_args('hotline,t,,,"300"')
    assert a == ["hotline", "t", "", "", "300"]
    a.append("changed")
    a[0] = "x"
    assert split_app_args('hotline,t,,,"300"') == ["hotline", "t", "", "", "300"]
    assert split_app_args("a,b,c", max_args=2) == ["a", "b,c"]
    with pytest.raises(ExprError):
        split_app_args("a", "")


async def test_wait_any_ends_on_a_signal_or_the_timeout_and_forgets_its_future() -> None:
    one, two = Signal(), Signal()
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, two.set)
    await asyncio.wait_for(wait_any((one, two), None), 5)
    assert two.is_set() and not one.is_set()
    assert one._watchers == [] and two._watchers == []
    t0 = loop.time()
    await wait_any((one,), 0.02)
    assert loop.time() - t0 >= 0.015 and one._watchers == []
    await wait_any((one, two), 10)  # already set: at once
    got: list[int] = []
    one.then(lambda: got.append(1))
    one.set()
    one.set()  # a second set runs nothing again
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert got == [1]


async def test_next_dtmf_gets_a_digit_times_out_and_raises_on_hang_up() -> None:
    ch = Channel("SIP/pstn-00000001", "1.1", context="c", exten="1")
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, ch.dtmf.put_nowait, "5")
    assert await ch.next_dtmf(5.0) == "5"
    assert ch.dtmf.waiter is None
    assert await ch.next_dtmf(0.01) is None
    ch.dtmf.put_nowait("7")
    assert await ch.next_dtmf(None) == "7"  # queued before: no wait

    def hang_up() -> None:
        ch.hungup = True
        ch.interrupt()
    loop.call_later(0.01, hang_up)
    with pytest.raises(ChannelHungUp):
        await ch.next_dtmf(None)
    assert ch.wake._watchers == []


async def test_until_and_sleep_end_on_a_signal_a_plain_event_or_a_hang_up() -> None:
    ch = Channel("SIP/pstn-00000002", "1.2", context="c", exten="1")
    loop = asyncio.get_running_loop()
    sig = Signal()
    loop.call_later(0.01, sig.set)
    assert await ch.until(sig, 5.0) is True
    assert await ch.until(Signal(), 0.01) is False
    plain = asyncio.Event()
    loop.call_later(0.01, plain.set)
    assert await ch.until(plain, 5.0) is True
    t0 = loop.time()
    await ch.sleep(0.02)
    assert loop.time() - t0 >= 0.015

    def hang_up() -> None:
        ch.hungup = True
        ch.interrupt()
    loop.call_later(0.01, hang_up)
    with pytest.raises(ChannelHungUp):
        await ch.sleep(None)


async def test_set_replaces_underscore_aliases_and_cleans_line_breaks() -> None:
    bus = EventBus()
    seen: list[str] = []
    bus.tap.append(lambda name, body: seen.append(body) if name == "VarSet" else None)
    pbx = Pbx(Dialplan(parse_extensions([])), Clock(), bus)
    ch = Channel("SIP/pstn-00000003", "1.3", context="c", exten="1")
    pbx.set_var(ch, "__LANG", "zh")
    pbx.set_var(ch, "LANG", "en\r\nInjected: 1")
    assert dict(ch.variables) == {"LANG": "en  Injected: 1"}
    pbx.set_var(ch, "_LANG", "fr")
    assert dict(ch.variables) == {"_LANG": "fr"} and ch.variables["LANG"] == "fr"
    assert [b.partition("Variable: ")[2] for b in seen] == [
        "__LANG\r\nValue: zh\r\n", "LANG\r\nValue: en  Injected: 1\r\n",
        "_LANG\r\nValue: fr\r\n"]
    assert all(b.startswith("Channel: SIP/pstn-00000003\r\n") for b in seen)
    pbx.set_var(None, "G", "1")
    pbx.set_var(ch, "GLOBAL(H)", "2")
    assert pbx.globals["G"] == "1" and pbx.globals["H"] == "2"


async def test_recordings_written_off_the_loop_are_complete_at_close(tmp_path: Path) -> None:
    etc = etc_with(tmp_path, "rrmemory", ["SIP/a,0,A"],
                   " same => n,MixMonitor(${UNIQUEID}.wav,b)\n")
    cfg = EmulatorConfig(etc=etc, clock=VirtualClock(), record_dir=tmp_path / "rec")
    async with Emulator(cfg) as emu:
        hs = [await emu.place_call(CallerScript(context="t-in", exten="1", talk_time=2,
                                                patience=None)) for _ in range(3)]
        await asyncio.wait_for(asyncio.gather(*(h.wait() for h in hs)), 10)
        uids = [h.uniqueid for h in hs]
    assert not emu.pbx.io_pending
    for uid in uids:
        with wave.open(str(tmp_path / "rec" / f"{uid}.wav")) as w:
            assert 1.9 <= w.getnframes() / 8000 <= 2.5
