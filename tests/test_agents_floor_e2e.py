"""A shift on the hotline floor end to end (issue 10): the application (ivr/app.py: IVR on
its FastAGI server, call events to Redis and the ticket backend, queues and agents)
against the emulator on its virtual clock, with the shipped definition published over
AMI — its hotline queue left to agents who log in, with a 20 s wrap-up.

Two agents log in (Chinese names) and go on a break with catalog reasons; a 12345
caller waits while everyone is paused (please-hold, nobody rung); the bridge restarts
in the middle and reads the floor back; an agent comes back and takes the call, ends
it, and the caller scores it 5 in the survey; her wrap-up holds the next caller back; a
third caller gives up.  The service-level figures read back from the stored events
agree with what the emulator says happened to each call, and the ticket backend got
the one score."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shutil
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ivr.agents.levels import HOTLINE_TZ
from ivr.agents.levels_store import read_levels
from ivr.agents.monitor import QueueMonitor
from ivr.agents.state import QueueState
from ivr.ami.client import AMIClient, AMISettings
from ivr.app import AGENTS, QUEUES, AppOptions, build_app, running
from ivr.dialplan.ami_control import ClientControl
from ivr.dialplan.publish import Publisher, Store, prepare
from ivr.dialplan.validate import file_prompt_lookup
from ivr.events.outbox import keys_for
from ivr.redisproc import free_port
from ivr.sim import AgentScript, CallerScript, Emulator, EmulatorConfig
from ivr.sim.clock import VirtualClock
from ivr.sim.emulator import DEFAULT_ETC
from ivr.ticketsink.server import TicketSink
from tests.test_app import for_emulator

ROOT = Path(__file__).resolve().parent.parent
FAST = AMISettings(ping_interval=0)
WRAPUP = 20
WANGFANG, LIHUA = "SIP/wangfang", "SIP/lihua"


def definition(tmp_path: Path) -> Path:
    """The shipped definition, its hotline queue with no static members and a wrap-up."""
    folder = tmp_path / "dialplans"
    shutil.copytree(ROOT / "dialplans", folder)
    hotline = folder / "hotline.yaml"
    text = hotline.read_text(encoding="utf-8")
    text, n = re.subn(r"(\n  hotline:\n(?:    .*\n)*?)    members: \[[^\]]*\]\n",
                      rf"\1    wrapup: {WRAPUP}\n", text, count=1)
    assert n == 1
    hotline.write_text(text, encoding="utf-8")
    return folder


def emulator_etc(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    shutil.copytree(DEFAULT_ETC, etc)
    (etc / "extensions.conf").write_text("[general]\nstatic=yes\n")
    (etc / "queues.conf").write_text("[general]\n")
    shutil.copy(ROOT / "asterisk-conf" / "extensions_site.conf", etc)
    return etc


async def publish(emu: Emulator, dialplans: Path, etc: Path) -> None:
    client = AMIClient("127.0.0.1", emu.ami_port, username="ivr", secret="ivrsecret",
                       settings=FAST)
    await client.start()
    try:
        plan = prepare(dialplans, file_prompt_lookup(ROOT / "prompts"))
        result = await Publisher(Store.at(etc), who="floor").publish(plan, ClientControl(client))
        assert result.record.status == "published"
    finally:
        await client.close()


async def until(monitor: QueueMonitor, predicate: object) -> None:
    async with asyncio.timeout(20):
        await monitor.wait_for(predicate)  # type: ignore[arg-type]


def state_of(state: QueueState, interface: str, now: float) -> tuple[str, str] | None:
    m = state.member("hotline", interface)
    return None if m is None else (m.state(now, state.queue_wrapup("hotline")), m.paused_reason)


def caller(number: str, digits: list[str], patience: float | None = None) -> CallerScript:
    return CallerScript(number=number, exten="12345", language="zh", menu_digits=digits,
                        talk_time=None, patience=patience)


@pytest.mark.timeout(120)
async def test_a_shift_pause_wait_restart_unpause_survey_wrapup_and_figures(
        tmp_path: Path, redis_url: str) -> None:
    clock = VirtualClock(max_hold=30)
    agents = [AgentScript(WANGFANG, ring_time=2.0, talk_time=30.0),
              AgentScript(LIHUA, ring_time=2.0, talk_time=30.0)]
    etc = emulator_etc(tmp_path)
    agi_port = free_port()
    called: list[tuple[float, str, str]] = []  # (time, caller channel, agent) per AgentCalled

    def tap(name: str, body: str) -> None:
        if name == "AgentCalled":
            h = dict(line.split(": ", 1) for line in body.split("\r\n") if ": " in line)
            called.append((clock.wall(), h["Channel"], h["Interface"]))

    async with Emulator(EmulatorConfig(etc=etc, clock=clock, agents=agents,
                                       agi_host="127.0.0.1", agi_port=agi_port,
                                       prompts=ROOT / "prompts")) as emu, \
            TicketSink(b"floor-secret") as sink:
        emu.bus.tap.append(tap)
        await publish(emu, definition(tmp_path), etc)
        base = for_emulator(emu, redis_url=redis_url, agi_port=agi_port,
                            asterisk_conf_dir=etc, prompts_dir=ROOT / "prompts")
        settings = replace(base, events=base.events.with_(
            redis_url=redis_url, ticket_url=sink.events_url, secret="floor-secret",
            stream_prefix=f"test:floor:{secrets.token_hex(4)}"))
        options = AppOptions(watch_s=None, drain_s=30.0, ami=FAST)

        app = build_app(settings, options)
        async with running(app):
            svc, mon = app[AGENTS], app[QUEUES]
            state = mon.state
            assert state.queue_wrapup("hotline") == WRAPUP  # from the published definition
            assert state.queues["hotline"].members == {}
            await svc.login(WANGFANG, {"hotline": 0, "enterprise": 1}, name="王芳")
            await svc.login(LIHUA, ["hotline"], name="李华 客服")
            assert await svc.pause(WANGFANG, "lunch") == "午休 lunch"
            assert await svc.pause(LIHUA, "培训 training") == "培训 training"
            await until(mon, lambda s: [state_of(s, i, 0) for i in (WANGFANG, LIHUA)] ==
                        [("paused", "午休 lunch"), ("paused", "培训 training")])

            # a caller waits while everyone is paused: please-hold, nobody is rung
            first = await emu.place_call(caller("13600136001", ["", "5"]))
            await until(mon, lambda s: len(s.queues["hotline"].callers) == 1)
            await clock.sleep(40)
            assert called == []
            assert state.offerable("hotline", clock.wall()) == []

        # the bridge restarts while the caller waits (no emulated time passes meanwhile):
        # the floor is read back from QueueStatus, the call's events continue
        async with contextlib.AsyncExitStack() as stack:
            with clock.holding():
                app = build_app(settings, options)
                await stack.enter_async_context(running(app))
            svc, mon = app[AGENTS], app[QUEUES]
            state = mon.state
            assert state.ready and state.resyncs == 1
            assert [state_of(state, i, clock.wall()) for i in (WANGFANG, LIHUA)] == [
                ("paused", "午休 lunch"), ("paused", "培训 training")]
            (waiting,) = state.queues["hotline"].waiting()
            assert waiting.number == "13600136001"
            member = state.member("hotline", LIHUA)
            assert member is not None and member.name == "李华 客服"

            # 王芳 comes back: she is rung at once, talks 30 s and ends the call; the
            # caller stays for the survey and scores 5
            await svc.unpause(WANGFANG, ["hotline"])
            async with asyncio.timeout(30):
                await first.wait()
            assert [(c, a) for _, c, a in called] == [(first.name, WANGFANG)]
            ended = emu.pbx.records[first.uniqueid].end
            assert ended is not None

            # wrap-up: the next caller is not offered to her for 20 s (李华 still away)
            second = await emu.place_call(caller("13900139002", ["", ""]))
            async with asyncio.timeout(60):
                await second.wait()
            second_rung = [t for t, c, _ in called if c == second.name]
            assert second_rung and second_rung[0] >= ended + WRAPUP - 1
            assert {a for _, c, a in called if c == second.name} == {WANGFANG}

            # everyone paused again; a third caller gives up after 12 s of waiting
            await svc.pause(WANGFANG, "acw")
            await until(mon, lambda s: state_of(s, WANGFANG, 0) ==
                        ("paused", "小结 after-call work"))
            third = await emu.place_call(caller("13700137003", [""], patience=12))
            async with asyncio.timeout(60):
                await third.wait()
            assert not [c for _, c, _ in called if c == third.name]
            for agent in (WANGFANG, LIHUA):
                await svc.unpause(agent)
            await until(mon, lambda s: not any(m.paused for m in
                                               s.queues["hotline"].members.values()))
            now = clock.wall()
        # the application stopped: the outbox drained to the ticket backend

    # what the emulator says happened to each call
    records = [emu.pbx.records[h.uniqueid] for h in (first, second, third)]
    assert [(r.queue, r.answered_by_agent_at is not None, r.abandoned) for r in records] == [
        ("hotline", True, False), ("hotline", True, False), ("hotline", False, True)]
    waits = [r.wait for r in records]
    assert all(w is not None for w in waits)

    # the figures from the stored events agree with them
    r = aioredis.from_url(redis_url)
    try:
        day = datetime.fromtimestamp(now, HOTLINE_TZ).date()
        agg = await read_levels(r, keys_for(settings.events), day)
    finally:
        await r.aclose()
    f = agg.day("hotline", day)
    answered = [w for r_, w in zip(records, waits, strict=True) if r_.answered_by_agent_at]
    assert (f.offered, f.answered, f.abandoned) == (3, 2, 1)
    assert f.answered_15s == sum(1 for w in answered if w is not None and w <= 15)
    assert f.abandoned_short == sum(1 for w in waits[2:] if w is not None and w < 5)
    assert f.longest_wait_s == pytest.approx(max(w for w in waits if w is not None), abs=1.0)
    assert f.answer_rate == pytest.approx(2 / 3, abs=0.001)

    # one score, for the first call, as the ticket backend received it
    scores = [(t.caller, e["data"]["score"]) for t in sink.store.tickets.values()
              for e in t.events if e["type"] == "survey.scored"]
    assert scores == [("13600136001", 5)]
    calls = [t for t in sink.store.tickets.values() if not t.call_id.startswith("cb-")]
    assert len(calls) == 3
    assert all(t.status == "closed" for t in calls)
    # the abandoned caller is to be called back (漏接回拨): a callback job, its own ticket
    jobs = [t for t in sink.store.tickets.values() if t.call_id.startswith("cb-")]
    assert [[e["type"] for e in t.events] for t in jobs] == [["callback.scheduled"]]
