"""The emulator's clocks: real time scaled by ``speed``, and the tests' virtual clock whose
time jumps from timer to timer once the emulator is quiet."""

from __future__ import annotations

import asyncio
import time

import pytest

from ivr.sim.clock import Clock, VirtualClock
from ivr.sim.model import Channel, Signal


async def test_virtual_time_jumps_from_timer_to_timer_in_order() -> None:
    clock = VirtualClock()
    fired: list[tuple[str, float]] = []
    try:
        t0 = time.monotonic()
        clock.call_later(30.0, lambda: fired.append(("b", clock.now())))
        clock.call_later(10.0, lambda: fired.append(("a", clock.now())))
        clock.call_later(20.0, lambda: fired.append(("x", clock.now()))).cancel()
        await clock.sleep(3600.0)
        assert fired == [("a", 10.0), ("b", 30.0)]
        assert clock.now() == 3600.0 and clock.jumps == 3
        assert time.monotonic() - t0 < 2.0  # an hour of emulated time
        assert clock.wall() == pytest.approx(clock._t0_wall + 3600.0)
    finally:
        await clock.aclose()


async def test_timers_set_after_a_jump_run_before_later_ones() -> None:
    clock = VirtualClock()
    order: list[str] = []

    async def caller() -> None:
        await clock.sleep(5.0)  # wakes at 5, then waits 1 more: 6 comes before 10
        order.append(f"one@{clock.now():g}")
        await clock.sleep(1.0)
        order.append(f"two@{clock.now():g}")

    try:
        clock.call_later(10.0, lambda: order.append("ten"))
        await asyncio.gather(caller(), clock.sleep(10.0))
        assert order == ["one@5", "two@6", "ten"]
    finally:
        await clock.aclose()


async def test_wait_for_and_channel_waits_use_the_clock() -> None:
    clock = VirtualClock()
    ch = Channel("SIP/pstn-00000001", "1.1", context="c", exten="1", clock=clock)
    try:
        sig = Signal()
        assert await clock.wait_for(sig, 60.0) is False and clock.now() == 60.0
        clock.call_later(1.0, sig.set)
        assert await clock.wait_for(sig, 60.0) is True and clock.now() == 61.0
        assert await ch.next_dtmf(5.0) is None and clock.now() == 66.0
        clock.call_later(2.0, ch.dtmf.put_nowait, "7")
        assert await ch.next_dtmf(5.0) == "7" and clock.now() == 68.0
        assert await ch.until(Signal(), 10.0) is False and clock.now() == 78.0
        assert await ch.until(asyncio.Event(), 10.0) is False and clock.now() == 88.0
        await ch.sleep(12.0)
        assert clock.now() == 100.0
    finally:
        await clock.aclose()


async def test_time_stands_still_while_a_peer_owes_a_reply() -> None:
    clock = VirtualClock(autojump=0.005, max_hold=0.3)
    try:
        timer = clock.call_later(1.0, lambda: None)
        with clock.holding():
            await asyncio.sleep(0.1)  # real time: the FastAGI server is thinking
            assert clock.now() == 0.0
        timer.cancel()
        with clock.holding():  # a server that never answers holds time for max_hold only
            await clock.sleep(1.0)
        assert clock.now() == 1.0
    finally:
        await clock.aclose()


async def test_actions_arriving_keep_time_from_jumping() -> None:
    clock = VirtualClock(autojump=0.05)
    try:
        clock.call_later(1.0, lambda: None)
        for _ in range(5):  # a client sending an action every 10 ms
            clock.touch()
            await asyncio.sleep(0.01)
        assert clock.now() == 0.0
        await clock.sleep(1.0)  # due with the first timer: one jump
        assert clock.now() == 1.0 and clock.jumps == 1
    finally:
        await clock.aclose()


async def test_the_real_clock_scales_real_time() -> None:
    clock = Clock(speed=100.0)
    t0 = time.monotonic()
    fired = asyncio.Event()
    clock.call_later(2.0, fired.set)  # 20 ms of real time
    await clock.sleep(1.0)
    assert await clock.wait_for(fired, 5.0)
    assert 0.015 <= time.monotonic() - t0 < 1.0
    assert clock.real(50.0) == 0.5
    with pytest.raises(ValueError):
        Clock(0)
    with pytest.raises(TypeError):
        VirtualClock().real(1.0)
