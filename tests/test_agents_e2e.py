"""Queues and agents end to end: the application (ivr/app.py) against the emulator on its
virtual clock.  Agents log in (Chinese names), pause with reasons from the catalog; a
caller waits while everyone is paused and is offered to nobody; unpause → the agent is
offered the call; the bridge restarts in the middle and rebuilds the state from
QueueStatus; wrap-up holds the next call back; bad input sends nothing to Asterisk."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ivr.agents.errors import (
    AlreadyLoggedIn,
    AsteriskRefused,
    InvalidAgent,
    NotLoggedIn,
    StaticMember,
    UnknownAgent,
    UnknownPauseReason,
    UnknownQueue,
)
from ivr.agents.monitor import QueueMonitor
from ivr.agents.state import Member, Queue, QueueState
from ivr.ami.client import AMISettings
from ivr.app import AGENTS, QUEUES, AppOptions, build_app, running
from ivr.sim import AgentScript, CallerScript, Emulator, EmulatorConfig
from ivr.sim.clock import VirtualClock
from ivr.sim.emulator import DEFAULT_ETC
from tests.test_app import for_emulator
from tests.test_dialplan_support import SHIPPED

FAST = AMISettings(ping_interval=0)
WRAPUP = 30


def etc_with_desk(tmp_path: Path) -> Path:
    """The emulator's etc plus queue ``desk`` (ringall, wrapuptime 30, nobody in it
    statically) and ``1@desk-in``: Answer, Queue(desk), Hangup."""
    etc = tmp_path / "etc"
    etc.mkdir()
    for f in DEFAULT_ETC.iterdir():
        (etc / f.name).write_text(f.read_text())
    with open(etc / "queues.conf", "a") as f:
        f.write(f"\n[desk]\nstrategy = ringall\ntimeout = 5\nretry = 1\n"
                f"wrapuptime = {WRAPUP}\njoinempty = yes\neventwhencalled = yes\n"
                "eventmemberstatus = yes\n")
    with open(etc / "extensions.conf", "a") as f:
        f.write("\n[desk-in]\nexten => 1,1,Answer()\n same => n,Queue(desk,t,,,900)\n"
                " same => n,Hangup()\n")
    return etc


def dialplans_with_desk(tmp_path: Path) -> Path:
    """The shipped definition (its pause-reason catalog) plus the queue ``desk``."""
    folder = tmp_path / "dialplans"
    shutil.copytree(SHIPPED, folder)
    (folder / "desk.yaml").write_text(
        f"version: 1\nqueues:\n  desk: {{strategy: ringall, timeout: 5, wrapup: {WRAPUP}}}\n",
        encoding="utf-8")
    return folder


def spy_actions(emu: Emulator) -> list[str]:
    """The names of the AMI actions the emulator receives from now on."""
    seen: list[str] = []
    dispatch = emu.ami.dispatch

    def recording(session: Any, msg: Any) -> Any:
        seen.append(msg.name)
        return dispatch(session, msg)

    emu.ami.dispatch = recording
    return seen


async def until(monitor: QueueMonitor, predicate: Callable[[QueueState], bool]) -> None:
    async with asyncio.timeout(10):
        await monitor.wait_for(predicate)


def member_state(state: QueueState, interface: str, now: float) -> tuple[str, str] | None:
    m = state.member("desk", interface)
    return None if m is None else (m.state(now, state.queue_wrapup("desk")), m.paused_reason)


async def test_login_pause_wait_unpause_restart_and_wrapup(tmp_path: Path) -> None:
    agents = [AgentScript("SIP/wangfang", ring_time=1), AgentScript("SIP/lihua", ring_time=1)]
    clock = VirtualClock(max_hold=30)
    async with Emulator(EmulatorConfig(etc=etc_with_desk(tmp_path), clock=clock,
                                       agents=agents)) as emu:
        settings = replace(for_emulator(emu), dialplans_dir=dialplans_with_desk(tmp_path),
                           asterisk_conf_dir=tmp_path / "asterisk-conf",
                           prompts_dir=SHIPPED.parent / "prompts")
        options = AppOptions(events=False, watch_s=None, ami=FAST)
        offered: list[str] = []
        emu.bus.tap.append(lambda name, body: offered.append(
            body.split("Interface: ")[1].split("\r\n")[0]) if name == "AgentCalled" else None)
        app = build_app(settings, options)
        async with running(app):
            svc, mon = app[AGENTS], app[QUEUES]
            state = mon.state
            assert state.ready and state.queues["desk"].members == {}
            assert state.queue_wrapup("desk") == WRAPUP  # from the published definition
            await svc.login("SIP/wangfang", {"desk": 0, "hotline": 2}, name="王芳")
            await svc.login("SIP/lihua", ["desk"], name="李华 客服")
            await until(mon, lambda s: s.member("desk", "SIP/lihua") is not None
                        and s.member("hotline", "SIP/wangfang") is not None)
            wf = state.member("desk", "SIP/wangfang")
            assert wf is not None and (wf.name, wf.penalty, wf.membership) == (
                "王芳", 0, "dynamic")
            hot = state.member("hotline", "SIP/wangfang")
            assert hot is not None and hot.penalty == 2  # skills as penalties

            assert await svc.pause("SIP/wangfang", "lunch") == "午休 lunch"  # every queue
            await svc.pause("SIP/lihua", "培训 training", ["desk"])
            await until(mon, lambda s: [member_state(s, i, 0) for i in
                                        ("SIP/wangfang", "SIP/lihua")] ==
                        [("paused", "午休 lunch"), ("paused", "培训 training")])
            assert member_state(state, "SIP/wangfang", 0) == ("paused", "午休 lunch")
            assert hot.paused and hot.paused_reason == "午休 lunch"

            # a caller waits while everyone is paused: nobody is offered the call
            call = await emu.place_call(CallerScript(number="13600136000", name="钱七",
                                                     context="desk-in", exten="1",
                                                     patience=None, talk_time=None))
            await until(mon, lambda s: len(s.queues["desk"].callers) == 1)
            await clock.sleep(60)
            assert offered == []
            assert state.offerable("desk", clock.wall()) == []
            (waiting,) = state.queues["desk"].waiting()
            assert (waiting.number, waiting.name, waiting.position) == (
                "13600136000", "钱七", 1)
            status = {r["interface"]: r for r in svc.status() if r["queue"] == "desk"}
            assert status["SIP/wangfang"]["paused_reason_code"] == "lunch"
            assert status["SIP/lihua"]["paused_reason_code"] == "training"

            # unpause → she is offered the call and takes it
            await svc.unpause("SIP/wangfang", ["desk"])
            await until(mon, lambda s: member_state(s, "SIP/wangfang", 0) ==
                        ("in_call", ""))
            assert offered == ["SIP/wangfang"]
            assert state.queues["desk"].callers == {}
            # the state the service sees is the emulator's
            for q_name, member in ((q, m) for q in ("desk", "hotline")
                                   for m in emu.queues.queues[q].members):
                mine = state.member(q_name, member.interface)
                assert mine is not None, (q_name, member.interface)
                assert (mine.paused, mine.paused_reason, mine.in_call, mine.penalty,
                        mine.name) == (member.paused, member.paused_reason, member.in_call,
                                       member.penalty, member.name)

        # the bridge restarts during the call (no emulated time passes meanwhile, or the
        # clock would jump to the call's end): the state is rebuilt from QueueStatus
        async with contextlib.AsyncExitStack() as stack:
            with clock.holding():
                app = build_app(settings, options)
                await stack.enter_async_context(running(app))
            svc, mon = app[AGENTS], app[QUEUES]
            state = mon.state
            assert state.ready and state.resyncs == 1
            assert member_state(state, "SIP/wangfang", clock.wall()) == ("in_call", "")
            assert member_state(state, "SIP/lihua", clock.wall()) == (
                "paused", "培训 training")
            li = state.member("desk", "SIP/lihua")
            assert li is not None and li.name == "李华 客服"
            hot = state.member("hotline", "SIP/wangfang")
            assert hot is not None and hot.paused_reason == "午休 lunch"

            # the call ends: wrap-up (30 s) holds the next caller back
            emu.pbx.request_hangup(call.channel, 16)
            await call.wait()
            await until(mon, lambda s: (m := s.member("desk", "SIP/wangfang")) is not None
                        and not m.in_call and m.last_call > 0)
            ended = clock.wall()
            assert member_state(state, "SIP/wangfang", ended) == ("wrapup", "")
            second = await emu.place_call(CallerScript(number="13900139000", context="desk-in",
                                                       exten="1", patience=None,
                                                       talk_time=5))
            await until(mon, lambda s: len(s.queues["desk"].callers) == 1)
            await clock.sleep(WRAPUP - 10)
            assert offered == ["SIP/wangfang"]  # not offered during wrap-up
            await until(mon, lambda s: member_state(s, "SIP/wangfang", 0) ==
                        ("in_call", ""))
            assert offered == ["SIP/wangfang", "SIP/wangfang"]
            assert clock.wall() >= ended + WRAPUP - 1
            await second.wait()

            # log out of one queue, then of the rest
            await svc.logout("SIP/lihua")
            await until(mon, lambda s: s.member("desk", "SIP/lihua") is None)
            await svc.logout("SIP/wangfang", ["hotline"])
            await until(mon, lambda s: s.member("hotline", "SIP/wangfang") is None)
            assert state.member("desk", "SIP/wangfang") is not None


async def test_bad_input_is_refused_and_nothing_is_sent(tmp_path: Path) -> None:
    async with Emulator(EmulatorConfig(etc=etc_with_desk(tmp_path),
                                       clock=VirtualClock())) as emu:
        settings = replace(for_emulator(emu), dialplans_dir=dialplans_with_desk(tmp_path),
                           asterisk_conf_dir=tmp_path / "asterisk-conf",
                           prompts_dir=SHIPPED.parent / "prompts")
        app = build_app(settings, AppOptions(events=False, watch_s=None, ami=FAST))
        async with running(app):
            svc, mon = app[AGENTS], app[QUEUES]
            await svc.login("SIP/a", ["desk"], name="张三")
            await until(mon, lambda s: s.member("desk", "SIP/a") is not None)
            sent = spy_actions(emu)
            static = "Local/1001@agent-local/n"  # hotline's static member
            bad: list[tuple[Any, type[Exception], str]] = [
                (svc.login("SIP/b", ["nosuchqueue"], name="李四"), UnknownQueue,
                 "unknown queue 'nosuchqueue'.*队列"),
                (svc.login("SIP/a", ["desk"], name="张三"), AlreadyLoggedIn,
                 "already logged in to queue 'desk'"),
                (svc.login("SIP/b, x", ["desk"], name="李四"), InvalidAgent,
                 "invalid agent interface"),
                (svc.login("SIP/b", ["desk"], name="李;四"), InvalidAgent,
                 "invalid display name"),
                (svc.login("SIP/b", {"desk": -1}, name="李四"), InvalidAgent, "penalty"),
                (svc.pause("SIP/nobody", "lunch"), UnknownAgent, "not logged in to any"),
                (svc.pause("SIP/a", "lunch", ["hotline"]), NotLoggedIn,
                 "not logged in to queue 'hotline'"),
                (svc.pause("SIP/a", "shopping"), UnknownPauseReason,
                 "'shopping' is not in the catalog"),
                (svc.unpause("SIP/a", ["nosuchqueue"]), UnknownQueue, "nosuchqueue"),
                (svc.logout(static), StaticMember, "static member of queue 'hotline'"),
                (svc.set_penalty("SIP/a", "desk", 5000), InvalidAgent, "penalty"),
            ]
            for coro, error, message in bad:
                with pytest.raises(error, match=message):
                    await coro
            assert sent == []  # nothing reached Asterisk

            # what Asterisk itself refuses (the state is behind it): its message is kept
            mon.state.queues["gone"] = Queue("gone")  # e.g. removed by a reload
            with pytest.raises(AsteriskRefused, match="No such queue"):
                await svc.login("SIP/b", ["desk", "gone"], name="李四")
            # all or nothing: the queue added first was removed again
            assert sent == ["QueueAdd", "QueueAdd", "QueueRemove"]
            assert "SIP/b" not in [m.interface for m in emu.queues.queues["desk"].members]
            # Asterisk has SIP/a, the state does not (yet): "Already there"
            del mon.state.queues["desk"].members["SIP/a"]
            with pytest.raises(AsteriskRefused, match="Unable to add interface: Already there"):
                await svc.login("SIP/a", ["desk"], name="张三")
            # the state has SIP/z, Asterisk does not: "Not there"
            mon.state.queues["desk"].members["SIP/z"] = Member("desk", "SIP/z")
            with pytest.raises(AsteriskRefused, match="Unable to remove interface: Not there"):
                await svc.logout("SIP/z")


async def test_what_changed_while_disconnected_is_read_back_on_reconnect(
        tmp_path: Path) -> None:
    """Asterisk (here the emulator's own API) changes members while the bridge's AMI
    connection is down; their events are lost to the bridge, the QueueStatus after the
    reconnect brings the state back in line."""
    async with Emulator(EmulatorConfig(etc=etc_with_desk(tmp_path),
                                       clock=VirtualClock())) as emu:
        settings = replace(for_emulator(emu), dialplans_dir=dialplans_with_desk(tmp_path),
                           asterisk_conf_dir=tmp_path / "asterisk-conf",
                           prompts_dir=SHIPPED.parent / "prompts")
        app = build_app(settings, AppOptions(events=False, watch_s=None, ami=FAST))
        async with running(app):
            svc, mon = app[AGENTS], app[QUEUES]
            await svc.login("SIP/a", ["desk"], name="张三")
            await until(mon, lambda s: s.member("desk", "SIP/a") is not None)
            assert mon.state.resyncs == 1
            for session in list(emu.ami.sessions):
                session.close()
            # meanwhile: SIP/a paused from elsewhere, SIP/b logged in, the static member
            # of english paused
            assert emu.queues.pause("desk", "SIP/a", True, "会议 meeting")
            assert emu.queues.add("desk", "SIP/b", "李四", 1, False, "", "") is None
            assert emu.queues.pause("english", "Local/1002@agent-local/n", True, "休息 break")
            await until(mon, lambda s: s.resyncs == 2)
            a, b = mon.state.member("desk", "SIP/a"), mon.state.member("desk", "SIP/b")
            assert a is not None and a.paused and a.paused_reason == "会议 meeting"
            assert b is not None and (b.name, b.penalty, b.dynamic) == ("李四", 1, True)
            static = mon.state.member("english", "Local/1002@agent-local/n")
            assert static is not None and static.paused_reason == "休息 break"
            assert svc.status("SIP/a")[0]["paused_reason_code"] == "meeting"
