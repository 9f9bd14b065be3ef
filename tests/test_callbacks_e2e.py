"""Missed-call callbacks (漏接回拨, issue 10) end to end: the application (ivr/app.py) on the
emulator with the shipped definition published, the virtual clock, a private Redis and the
reference ticket backend.  An abandoned caller is called back (async Originate carrying
the job id) and connected to an agent of the queue; no answer then retried then reached;
busy until exhausted; the synchronous failure reply; cancelled because the citizen called
again and reached an agent; one job per number per day; outside the queue's hours the job
waits for the next opening; the bridge restarted in the middle (job not lost, not placed
twice); bad input changes nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from ivr.agents.levels_store import read_levels
from ivr.ami.client import AMIClient, AMISettings
from ivr.app import AppOptions, build_app, running
from ivr.callbacks.errors import JobFinished, UndialableNumber, UnknownJob
from ivr.callbacks.service import CALLBACKS, CallbacksConfig, CallbackService
from ivr.callbacks.state import HOTLINE_TZ, Job, Origin
from ivr.dialplan import load_definition
from ivr.dialplan.ami_control import ClientControl
from ivr.dialplan.publish import Publisher, Store, prepare
from ivr.dialplan.validate import file_prompt_lookup
from ivr.events.model import CallEvent
from ivr.events.outbox import keys_for
from ivr.redisconn import connect as redis_connect
from ivr.sim import AgentScript, CallerScript, Emulator, EmulatorConfig
from ivr.sim.clock import VirtualClock
from ivr.ticketsink.server import TicketSink
from tests.test_app import for_emulator

ROOT = Path(__file__).resolve().parent.parent
HOTLINE = [f"Local/{n}@agent-local/n" for n in range(1001, 1011)]
FAST = AMISettings(ping_interval=0)
SECRET = "cb-s3cret"

# the citizens' phones behind the callbacks' dial context
CITIZENS = """
[citizens]
; answers at once
exten => _1390000010X,1,Answer()
 same => n,Wait(600)
; rings and is not answered, until the global ANSWER_<number> is 1
exten => _1390000020X,1,GotoIf($["${ANSWER_${EXTEN}}" = "1"]?up)
 same => n,Ringing()
 same => n,Wait(600)
 same => n(up),Answer()
 same => n,Wait(600)
; busy
exten => _1390000030X,1,Busy(5)
; rings 4 s, then answers
exten => _1390000040X,1,Ringing()
 same => n,Wait(4)
 same => n,Answer()
 same => n,Wait(600)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Rig:
    emu: Emulator
    clock: VirtualClock
    sink: TicketSink
    settings: Any
    actions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def originates(self) -> list[dict[str, Any]]:
        return [f for name, f in self.actions if name == "Originate"]


def _etc(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    shutil.copytree(ROOT / "ivr" / "sim" / "etc", etc)
    (etc / "extensions.conf").write_text("[general]\nstatic=yes\n")
    (etc / "queues.conf").write_text("[general]\n")
    site = (ROOT / "asterisk-conf" / "extensions_site.conf").read_text("utf-8")
    (etc / "extensions_site.conf").write_text(site + CITIZENS, "utf-8")
    return etc


def _dialplans(tmp_path: Path, hotline_hours: str | None) -> Path:
    src = tmp_path / "dialplans"
    shutil.copytree(ROOT / "dialplans", src)
    if hotline_hours is not None:
        f = src / "hotline.yaml"
        f.write_text(f.read_text("utf-8").replace(
            "    languages: [zh]\n", f"    languages: [zh]\n    hours: {hotline_hours}\n", 1),
            "utf-8")
    return src


async def _publish(dialplans: Path, etc: Path, ami_port: int) -> None:
    client = AMIClient("127.0.0.1", ami_port, username="ivr", secret="ivrsecret",
                       settings=FAST)
    await client.start()
    try:
        plan = prepare(dialplans, file_prompt_lookup(ROOT / "prompts"))
        result = await Publisher(Store.at(etc), who="callbacks-test").publish(
            plan, ClientControl(client))
        assert result.record.status == "published"
    finally:
        await client.close()


@asynccontextmanager
async def rig(tmp_path: Path, redis_url: str, *, agents: list[AgentScript] | None = None,
              hotline_hours: str | None = None, wall_start: float | None = None,
              publish: bool = True, **changes: Any) -> AsyncIterator[Rig]:
    etc = _etc(tmp_path)
    dialplans = _dialplans(tmp_path, hotline_hours)
    clock = VirtualClock(wall_start=wall_start, max_hold=20.0)
    agi_port = free_port()
    agents = agents if agents is not None else [
        AgentScript(i, ring_time=6.0, talk_time=5.0) for i in HOTLINE]
    emu = Emulator(EmulatorConfig(etc=etc, clock=clock, seed=7, agi_host="127.0.0.1",
                                  agi_port=agi_port, prompts=ROOT / "prompts",
                                  agents=agents))
    await emu.start()
    try:
        if publish:
            await _publish(dialplans, etc, emu.ami_port)
        async with TicketSink(SECRET.encode()) as sink:
            settings = for_emulator(
                emu, redis_url=redis_url, agi_port=agi_port, dialplans_dir=dialplans,
                asterisk_conf_dir=etc, prompts_dir=ROOT / "prompts",
                callbacks_dial_context="citizens", callbacks_timeout_s=10.0,
                callbacks_delay_s=60.0, callbacks_backoff_s=300.0, **changes)
            settings = replace(settings, events=settings.events.with_(
                ticket_url=sink.events_url, secret=SECRET,
                stream_prefix=f"test:cb:{uuid.uuid4().hex[:8]}"))
            r = Rig(emu, clock, sink, settings)
            dispatch = emu.ami.dispatch

            def spy(session: Any, msg: Any) -> Any:
                r.actions.append((msg.name, {k: msg.getall(k) if k == "Variable" else
                                             msg.get(k) for k in (
                                                 "Channel", "Context", "Exten", "Priority",
                                                 "Async", "Variable", "CallerID")}))
                return dispatch(session, msg)

            emu.ami.dispatch = spy
            yield r
    finally:
        await emu.close()


@asynccontextmanager
async def bridge(r: Rig) -> AsyncIterator[CallbackService]:
    app = build_app(r.settings, AppOptions(watch_s=None, ami=FAST, clock=r.clock.wall))
    async with running(app):
        yield app[CALLBACKS]


async def _until(svc: CallbackService, predicate: Callable[[list[Job]], bool],
                 within: float = 30.0) -> list[Job]:
    async with asyncio.timeout(within):
        while True:
            jobs = await svc.list()
            if predicate(jobs):
                return jobs
            await asyncio.sleep(0.02)


async def _job(svc: CallbackService, jid: str, predicate: Callable[[Job], bool]) -> Job:
    async with asyncio.timeout(30):
        return await svc.wait_for(jid, predicate)


async def _abandon(r: Rig, number: str) -> str:
    """A caller of ``number`` hangs up after 2 s in the hotline queue (agents ring 6 s)."""
    h = await r.emu.place_call(CallerScript(number=number, exten="12345", language="zh",
                                            menu_digits=[""], patience=2.0, talk_time=5.0))
    async with asyncio.timeout(30):
        await h.wait()
    return h.uniqueid


async def _due(r: Rig, svc: CallbackService, seconds: float) -> None:
    """Let ``seconds`` of simulated time pass, then place what is due."""
    await r.clock.sleep(seconds)
    await svc.run_due()


async def _ticket_types(r: Rig, call_id: str, n: int) -> list[str]:
    async with asyncio.timeout(30):
        await r.sink.wait_for(lambda s: (t := s.get(f"T-{call_id}")) is not None
                              and len(t.events) >= n)
    t = r.sink.store.get(f"T-{call_id}")
    assert t is not None
    return [e["type"] for e in t.events]


def _ticket(r: Rig, call_id: str) -> Any:
    t = r.sink.store.get(f"T-{call_id}")
    assert t is not None
    return t


async def test_abandoned_caller_is_called_back_and_reaches_an_agent(
        tmp_path: Path, redis_url: str) -> None:
    async with rig(tmp_path, redis_url) as r, bridge(r) as svc:
        call_id = await _abandon(r, "13900000101")
        [job] = await _until(svc, lambda jobs: len(jobs) == 1)
        assert (job.state, job.queue, job.reason, job.origin.call_id) == (
            "scheduled", "hotline", "abandoned", call_id)
        assert job.due_at == pytest.approx(job.created_at + 60.0)
        await _due(r, svc, 30.0)
        assert r.originates() == []  # not due yet
        await _due(r, svc, 31.0)
        done = await _job(svc, job.id, lambda j: j.state == "answered")
        [orig] = r.originates()
        assert orig["Channel"] == "Local/13900000101@citizens"
        assert (orig["Context"], orig["Exten"], orig["Priority"], orig["Async"]) == (
            "ivr-route", "s", "queue", "true")
        assert f"IVR_CALLBACK_JOB={job.id}" in orig["Variable"]
        assert "IVR_QUEUE=hotline" in orig["Variable"]
        # on answering, the citizen hears who is calling back (in the call's language),
        # played by the queue path before the queue
        assert "IVR_PROMPT=zh/callback-greeting" in orig["Variable"]
        # the callback's own call reaches an agent of the queue
        cb = done.callback_call_id
        types = await _ticket_types(r, cb, 1)
        async with asyncio.timeout(30):
            await r.sink.wait_for(lambda s: (t := s.get(f"T-{cb}")) is not None and any(
                e["type"] == "agent.connected" for e in t.events))
        types = await _ticket_types(r, job.id, 3)
        assert types == ["callback.scheduled", "callback.placed", "callback.answered"]
        ticket = _ticket(r, job.id)
        assert {e["data"]["original_call_id"] for e in ticket.events} == {call_id}
        assert svc.placed == 1 and svc.reached == 1
        # the service-level figures: callbacks placed and reached, for the queue
        day = dt.datetime.fromtimestamp(r.clock.wall(), HOTLINE_TZ).date()
        redis = redis_connect(redis_url)
        try:
            agg = await read_levels(redis, keys_for(r.settings.events), day)
        finally:
            await redis.aclose()
        figures = agg.day("hotline", day).to_json()
        assert (figures["callbacks_placed"], figures["callbacks_reached"]) == (1, 1)
        assert figures["abandoned"] + figures["abandoned_short"] == 1


async def test_callback_requested_in_the_ivr(tmp_path: Path, redis_url: str) -> None:
    async with rig(tmp_path, redis_url) as r, bridge(r) as svc:
        # 8890: nothing during the greeting, 3 at the menu is the callback offer, 1
        # accepts it; the caller is told and hung up
        h = await r.emu.place_call(CallerScript(number="13900000105", exten="8890",
                                                language="zh", menu_digits=["", "3", "1"],
                                                patience=60.0, talk_time=5.0))
        async with asyncio.timeout(30):
            await h.wait()
        [job] = await _until(svc, lambda jobs: len(jobs) == 1)
        assert (job.reason, job.queue, job.origin.call_id) == (
            "requested", "hotline", h.uniqueid)
        await _due(r, svc, 61.0)
        await _job(svc, job.id, lambda j: j.state == "answered")
        assert len(r.originates()) == 1


async def test_no_answer_then_retried_then_reached(tmp_path: Path, redis_url: str) -> None:
    async with rig(tmp_path, redis_url) as r, bridge(r) as svc:
        await _abandon(r, "13900000201")
        [job] = await _until(svc, lambda jobs: len(jobs) == 1)
        await _due(r, svc, 61.0)
        first = await _job(svc, job.id, lambda j: j.last_outcome == "no_answer")
        assert first.state == "scheduled" and first.attempts == 1
        assert first.due_at >= r.clock.wall() + 250  # back-off 300 s after the attempt
        r.emu.pbx.globals["ANSWER_13900000201"] = "1"
        await _due(r, svc, 100.0)
        assert len(r.originates()) == 1  # still backing off
        await _due(r, svc, 250.0)
        done = await _job(svc, job.id, lambda j: j.state == "answered")
        assert done.attempts == 2 and len(r.originates()) == 2
        types = await _ticket_types(r, job.id, 5)
        assert types == ["callback.scheduled", "callback.placed", "callback.no_answer",
                         "callback.placed", "callback.answered"]
        no_answer = _ticket(r, job.id).events[2]["data"]
        assert no_answer["detail"] == "Reason 3"


async def test_busy_until_exhausted(tmp_path: Path, redis_url: str) -> None:
    async with rig(tmp_path, redis_url, callbacks_attempts=2) as r, bridge(r) as svc:
        await _abandon(r, "13900000301")
        [job] = await _until(svc, lambda jobs: len(jobs) == 1)
        await _due(r, svc, 61.0)
        await _job(svc, job.id, lambda j: j.last_outcome == "busy")
        await _due(r, svc, 301.0)
        done = await _job(svc, job.id, lambda j: j.state == "exhausted")
        assert done.attempts == 2
        types = await _ticket_types(r, job.id, 6)
        assert types == ["callback.scheduled", "callback.placed", "callback.busy",
                         "callback.placed", "callback.busy", "callback.exhausted"]
        assert _ticket(r, job.id).events[2]["data"]["detail"] == "Reason 5"
        await _due(r, svc, 3600.0)
        assert len(r.originates()) == 2  # never again


async def test_synchronous_failure_reply(tmp_path: Path, redis_url: str) -> None:
    # nothing published: no ivr-route in Asterisk, manager.c answers "Invalid priority"
    async with rig(tmp_path, redis_url, publish=False, callbacks_attempts=1) as r, \
            bridge(r) as svc:
        job = await svc.request("13900000101", queue="hotline",
                                origin=Origin("op-1", "12345", "zh", "12345", r.clock.wall()),
                                reason="operator")
        await _due(r, svc, 61.0)
        done = await _job(svc, job.id, lambda j: not j.active)
        assert (done.state, done.last_outcome) == ("exhausted", "failed")
        types = await _ticket_types(r, job.id, 4)
        assert types == ["callback.scheduled", "callback.placed", "callback.failed",
                         "callback.exhausted"]
        assert _ticket(r, job.id).events[2]["data"]["detail"] == "Invalid priority"
        assert not r.emu.pbx.channels or all(
            "citizens" not in name for name in r.emu.pbx.channels)


async def test_cancelled_when_the_citizen_calls_again_and_one_job_a_day(
        tmp_path: Path, redis_url: str) -> None:
    agents = [AgentScript(i, ring_time=3.0, talk_time=2.0) for i in HOTLINE]
    async with rig(tmp_path, redis_url, agents=agents) as r, bridge(r) as svc:
        first = await _abandon(r, "13900000102")  # patience 2 s < ring 3 s
        second = await _abandon(r, "13900000102")
        [job] = await _until(svc, lambda jobs: len(jobs) == 1 and len(jobs[0].call_ids) == 2)
        assert job.call_ids == (first, second)  # one job per number per day
        # the citizen calls again and reaches an agent
        h = await r.emu.place_call(CallerScript(number="13900000102", exten="12345",
                                                menu_digits=[""], patience=60.0,
                                                talk_time=5.0))
        async with asyncio.timeout(30):
            await h.wait()
        done = await _job(svc, job.id, lambda j: j.state == "cancelled")
        assert done.history[-1][1] == "cancelled by citizen_called_again"
        await _due(r, svc, 120.0)
        assert r.originates() == []
        types = await _ticket_types(r, job.id, 2)
        assert types == ["callback.scheduled", "callback.cancelled"]
        # a third missed call that day: still the one (final) job
        await _abandon(r, "13900000102")
        await asyncio.sleep(0.2)
        assert [j.id for j in await svc.list()] == [job.id]
        with pytest.raises(JobFinished):
            await svc.cancel(job.id)


async def test_outside_the_queues_hours_scheduled_for_the_next_opening(
        tmp_path: Path, redis_url: str) -> None:
    saturday = dt.datetime(2026, 12, 12, 10, 0, tzinfo=HOTLINE_TZ).timestamp()
    async with rig(tmp_path, redis_url, hotline_hours="office", wall_start=saturday) as r, \
            bridge(r) as svc:
        await _abandon(r, "13900000103")
        [job] = await _until(svc, lambda jobs: len(jobs) == 1)
        monday = dt.datetime(2026, 12, 14, 9, 0, tzinfo=HOTLINE_TZ).timestamp()
        assert job.due_at == monday
        await _due(r, svc, 3600.0)
        assert r.originates() == []


async def test_bridge_restarted_while_the_citizen_rings(tmp_path: Path, redis_url: str) -> None:
    async with rig(tmp_path, redis_url) as r:
        first = bridge(r)
        svc = await first.__aenter__()
        try:
            await _abandon(r, "13900000401")  # rings 4 s, then answers
            [job] = await _until(svc, lambda jobs: len(jobs) == 1)
            await r.clock.sleep(61.0)
            await svc.run_due()
            assert len(r.originates()) == 1
        finally:
            with r.clock.holding():  # no simulated time passes while the bridge restarts
                await first.__aexit__(None, None, None)
                second = bridge(r)  # a new bridge process: the job is still there, placing
                svc2 = await second.__aenter__()
        try:
            again = await svc2.get(job.id)
            assert again.state in ("placing", "answered")
            done = await _job(svc2, job.id, lambda j: j.state == "answered")
            assert done.callback_call_id
            await _due(r, svc2, 3600.0)
        finally:
            await second.__aexit__(None, None, None)
        assert len(r.originates()) == 1  # placed once


async def test_bridge_restarted_before_the_attempt(tmp_path: Path, redis_url: str) -> None:
    async with rig(tmp_path, redis_url) as r:
        async with bridge(r) as svc:
            await _abandon(r, "13900000104")
            [job] = await _until(svc, lambda jobs: len(jobs) == 1)
        async with bridge(r) as svc2:
            await _due(r, svc2, 61.0)
            await _job(svc2, job.id, lambda j: j.state == "answered")
        assert len(r.originates()) == 1


async def test_bad_input_changes_nothing(tmp_path: Path, redis_url: str) -> None:
    async with rig(tmp_path, redis_url) as r, bridge(r) as svc:
        origin = Origin("op-2", "12345", "zh", "12345", r.clock.wall())
        for bad in ("", "anonymous", "1380013800a", "123", "13800138000;1"):
            with pytest.raises(UndialableNumber) as err:
                await svc.request(bad, queue="hotline", origin=origin)
            assert "not a dialable number" in str(err.value) and "无法拨打" in str(err.value)
        with pytest.raises(UnknownJob) as unknown:
            await svc.cancel("cb-20261206-000000000000")
        assert "回拨任务" in str(unknown.value)
        assert await svc.list() == []
        await _due(r, svc, 120.0)
        assert r.originates() == []


async def test_two_bridge_processes_never_place_the_same_callback(
        tmp_path: Path, redis_url: str) -> None:
    """Two callback services (two bridges' worth: each its own AMI session) on one Redis:
    a due job is placed by one of them, and its outcome applied once, though both hear
    the OriginateResponse."""
    async with rig(tmp_path, redis_url) as r:
        prefix = f"test:cb2:{uuid.uuid4().hex[:8]}"
        emitted: list[CallEvent] = []

        async def emit(events: list[CallEvent]) -> None:
            emitted.extend(events)

        definition = load_definition(r.settings.dialplans_dir)
        services, clients, redises = [], [], []
        for _ in range(2):
            client = AMIClient("127.0.0.1", r.emu.ami_port, username="ivr",
                               secret="ivrsecret", settings=FAST)
            await client.start()
            redis = redis_connect(redis_url)
            svc = CallbackService(
                CallbacksConfig.from_settings(r.settings, prefix=prefix, poll_s=0.05), redis,
                ami=lambda c=client: c, emit=emit, definition=lambda: definition,
                clock=r.clock.wall)
            client.on_event("OriginateResponse", svc.on_ami_event)
            services.append(svc)
            clients.append(client)
            redises.append(redis)
        try:
            a, b = services
            job = await a.request("13900000106", queue="hotline", reason="operator",
                                  origin=Origin("op-3", "12345", "zh", "12345",
                                                r.clock.wall()))
            await r.clock.sleep(61.0)
            placed = await asyncio.gather(a.run_due(), b.run_due())
            assert sorted(placed) == [0, 1]
            for svc in services:
                svc.start()
            await _job(a, job.id, lambda j: j.state == "answered")
            await asyncio.sleep(0.3)  # both have taken the OriginateResponse by now
            await _due(r, a, 600.0)
            await b.run_due()
        finally:
            for svc in services:
                await svc.close()
            for client in clients:
                await client.close()
            for redis in redises:
                await redis.aclose()
        assert len(r.originates()) == 1
        assert [e.type for e in emitted] == [
            "callback.scheduled", "callback.placed", "callback.answered"]
        assert a.reached + b.reached == 1
