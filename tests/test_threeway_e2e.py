"""Three-way calls end to end (issue 11): the application (ivr/app.py) against the
emulator on its virtual clock, a caller who came through queue ``hotline`` talking with
agent 1001, the agent bringing directory entries and numbers into the call through the
three-way service: the department answers (one conference of three, the department on
the ticket); it does not answer (caller and agent together, the fallback offered); it is
closed; the caller hangs up while the leg rings; the agent hangs up during the three-way
(caller and department go on); mute; a full conference refused; bad input that sends
nothing to Asterisk."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from ivr.api.auth import TokenStore
from ivr.app import (
    AMI_CONSUMERS,
    PIPELINE,
    RECORDING_HOOKS,
    AppOptions,
    build_app,
    running,
)
from ivr.asterisk.conf import render_conf
from ivr.dialplan.render import threeway_contexts
from ivr.directory import NotDialable, UnknownTarget
from ivr.events.model import CallEvent
from ivr.recordings.audio import AudioSegment  # pydub, its audioop warning silenced
from ivr.recordings.errors import NotRecorded, RecordingBadDirection
from ivr.recordings.hooks import RecordingHooks
from ivr.sim import CallerScript, Emulator, EmulatorConfig
from ivr.sim.callers import CallHandle
from ivr.sim.clock import VirtualClock
from ivr.threeway.errors import (
    AgentWouldLeaveCallerAlone,
    CallNotFound,
    ConferenceFull,
    LegRinging,
    NoAgent,
    NoInterpreter,
    NoThreeWay,
    NotInstalled,
    UnknownParty,
)
from ivr.threeway.service import THREEWAY, ThreeWayService
from ivr.ticketsink.server import TicketSink
from tests.test_api import Api
from tests.test_app import for_emulator
from tests.test_transfers_e2e import FAST, Watch, etc_with_outbound, ticket_of

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
MONDAY_10 = dt.datetime(2026, 6, 1, 10, 0, tzinfo=SHANGHAI)  # office hours
SUNDAY_10 = dt.datetime(2026, 6, 7, 10, 0, tzinfo=SHANGHAI)  # closed

# more of the dial context: the English interpreter desk and a partner hotline answer
MORE_OUTBOUND = """
exten => 2201,1,Ringing()
 same => n,Wait(1)
 same => n,Answer()
 same => n,Wait(3600)
 same => n,Hangup()
exten => 075512345,1,Answer()
 same => n,Wait(3600)
 same => n,Hangup()
"""


def etc_with_threeway(tmp_path: Path, contexts: bool = True) -> Path:
    """The transfers tests' etc (agent 1001 stays; market 2001 answers after 2 s,
    business 2003 rings forever) with the rendered three-way contexts (``contexts``) and
    dial context."""
    etc = etc_with_outbound(tmp_path)
    conf = etc / "extensions.conf"
    text = conf.read_text().replace("[globals]\n", "[globals]\nIVR_DIAL_CONTEXT=outbound\n")
    rendered = render_conf(threeway_contexts()) if contexts else ""
    conf.write_text(text + MORE_OUTBOUND + "\n" + rendered)
    return etc


@dataclass
class Hotline:
    emu: Emulator
    clock: VirtualClock
    svc: ThreeWayService
    sink: TicketSink
    watch: Watch
    events: list[CallEvent]
    actions: list[str]
    api: Api | None = None
    recording_hooks: RecordingHooks | None = None

    async def call(self, number: str = "13900139000", exten: str = "6000",
                   language: str = "zh") -> tuple[CallHandle, str]:
        call = await self.emu.place_call(CallerScript(number=number, context="from-pstn",
                                                      exten=exten, patience=None,
                                                      talk_time=None, max_duration=36000,
                                                      language=language))
        cid = call.channel.linkedid
        if exten == "6000":
            await self.watch.until(lambda: self.model().agent_of(cid) is not None
                                   and self.bridged(call))
        return call, cid

    def model(self) -> Any:
        return self.svc._model()

    def bridged(self, call: CallHandle) -> bool:
        b = call.channel.bridge
        return b is not None and len(b.channels) == 2

    def types(self, cid: str, prefix: str = "threeway.") -> list[str]:
        return [e.type for e in self.events if e.call_id == cid and e.type.startswith(prefix)]

    def of(self, cid: str, type_: str) -> list[CallEvent]:
        return [e for e in self.events if e.call_id == cid and e.type == type_]

    def conference(self, cid: str) -> list[str]:
        """The emulator's view: who is in the call's conference (names without ids)."""
        conf = self.emu.confbridges.conferences.get(cid)
        return [] if conf is None else sorted(n.split("-")[0] for n in conf.users)

    async def hang_up(self, call: CallHandle) -> None:
        self.emu.pbx.request_hangup(call.channel, 16)
        await call.wait()

    async def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of emulated time pass (the call goes on meanwhile)."""
        await self.emu.clock.sleep(seconds)


@asynccontextmanager
async def hotline(tmp_path: Path, redis_url: str, now: dt.datetime = MONDAY_10,
                  http: bool = False, record: bool = False, contexts: bool = True,
                  dialplans: Path | None = None) -> AsyncIterator[Hotline]:
    clock = VirtualClock(autojump=0.05, max_hold=30)
    spool = tmp_path / "spool"  # Asterisk's monitor directory
    async with Emulator(EmulatorConfig(etc=etc_with_threeway(tmp_path, contexts), clock=clock,
                                       record_dir=spool)) as emu, \
            TicketSink(b"s3cret") as sink:
        run = uuid.uuid4().hex[:8]
        settings = for_emulator(emu, redis_url=redis_url, http_port=0 if http else None,
                                recordings_dir=tmp_path / "archive" if record else None)
        if dialplans is not None:
            settings = replace(settings, dialplans_dir=dialplans)
        settings = replace(settings, events=settings.events.with_(
            ticket_url=sink.events_url, secret="s3cret", stream_prefix=f"test:threeway:{run}"))
        app = build_app(settings, AppOptions(watch_s=None, ami=FAST, drain_s=20,
                                             api_prefix=f"test:threeway:{run}:api"))
        watch = Watch(consumed_ami_events=frozenset({
            "BridgeEnter", "BridgeLeave", "Hangup", "AgentConnect", "ConfbridgeJoin",
            "ConfbridgeLeave", "ConfbridgeEnd", "ConfbridgeMute", "ConfbridgeUnmute",
            "VarSet"}))
        actions: list[str] = []
        dispatch = emu.ami.dispatch

        def spying(session: Any, msg: Any) -> Any:
            actions.append(msg.name)
            return dispatch(session, msg)

        emu.ami.dispatch = spying  # type: ignore[method-assign]
        app[AMI_CONSUMERS].append(watch)
        async with running(app) as runner, aiohttp.ClientSession() as session:
            events: list[CallEvent] = []
            app[PIPELINE].add_listener(events.extend)
            svc = app[THREEWAY]
            svc.clock = lambda: now
            api = None
            if http:
                host, port = runner.addresses[0][:2]
                redis = aioredis.from_url(redis_url)
                api = Api(session, f"http://{host}:{port}",
                          TokenStore(redis, f"test:threeway:{run}:api"), redis)
            try:
                yield Hotline(emu, clock, svc, sink, watch, events, actions, api,
                              app.get(RECORDING_HOOKS))
            finally:
                if api is not None:
                    await api.redis.aclose()


async def test_department_answers_then_agent_leaves_and_caller_hangs_up(
        tmp_path: Path, redis_url: str) -> None:
    async with hotline(tmp_path, redis_url) as h:
        call, cid = await h.call()
        with h.clock.holding():
            placed = await h.svc.add(cid, "market")
        assert (placed.state, placed.leg, placed.target, placed.number, placed.kind) == (
            "ringing", "leg-1", "market", "2001", "department")
        # while the department's leg rings, the caller is with the agent (never alone)
        await h.watch.until(lambda: h.conference(cid) == ["Local/1001@agent", "SIP/pstn"])
        outcome = await h.svc.wait(cid, "leg-1")
        assert (outcome.state, outcome.reason) == ("up", "")
        await h.watch.until(lambda: len(h.conference(cid)) == 3)
        assert h.conference(cid) == ["Local/1001@agent", "Local/2001@ivr", "SIP/pstn"]
        answered = h.of(cid, "threeway.answered")[0]
        assert answered.routing.department == "market" and answered.source.kind == "service"
        assert answered.data["target"] == "market" and answered.data["number"] == "2001"
        # the builder's own events from ConfBridge: one conference, three joins
        await h.watch.until(lambda: h.types(cid).count("threeway.joined") == 3)
        roles = sorted(str(e.data["role"]) for e in h.of(cid, "threeway.joined"))
        assert roles == ["agent", "caller", "external"]
        assert h.svc.status(cid) is not None

        # the agent leaves: caller and department go on
        with h.clock.holding():
            await h.svc.leave(cid)
        await h.watch.until(lambda: h.conference(cid) == ["Local/2001@ivr", "SIP/pstn"])
        await h.watch.until(lambda: "threeway.agent_left" in h.types(cid))
        assert not call.channel.hungup
        # the caller hangs up: the conference ends, the department is let go
        await h.hang_up(call)
        await h.watch.until(lambda: cid not in h.emu.confbridges.conferences)
        ticket = await ticket_of(h, cid)
        assert ticket.department == "market"
        types = [e["type"] for e in ticket.events if e["type"].startswith("threeway.")]
        assert types[:2] == ["threeway.requested", "threeway.started"]
        assert types[-1] == "threeway.ended"
        assert {"threeway.answered", "threeway.agent_left"} <= set(types)
        assert not [c for c in h.emu.pbx.channels.values() if not c.hungup]


async def test_department_does_not_answer(tmp_path: Path, redis_url: str) -> None:
    async with hotline(tmp_path, redis_url) as h:
        call, cid = await h.call()
        with h.clock.holding():
            await h.svc.add(cid, "business", timeout_s=5)
            with pytest.raises(LegRinging):  # one leg rings at a time
                await h.svc.add(cid, "hrss")
        outcome = await h.svc.wait(cid, "leg-1")
        assert (outcome.state, outcome.reason) == ("failed", "no-answer")
        assert dict(outcome.fallback) == {"fallback_kind": "queue", "fallback": "enterprise"}
        failed = h.of(cid, "threeway.failed")[0]
        assert failed.data["reason"] == "no-answer" and failed.data["fallback"] == "enterprise"
        assert failed.routing.department is None
        # the caller and the agent are together; nothing of the leg is left
        await h.watch.until(lambda: h.conference(cid) == ["Local/1001@agent", "SIP/pstn"])
        assert not [c for c in h.emu.pbx.channels.values()
                    if "ivr-threeway-leg" in c.name and not c.hungup]
        # the agent tries another: it answers and joins the same conference
        with h.clock.holding():
            await h.svc.add(cid, "2201")  # a number that is the English interpreter's
        outcome2 = await h.svc.wait(cid, "leg-2")
        assert (outcome2.state, outcome2.target, outcome2.kind) == ("up", "interp-en",
                                                                    "interpreter")
        await h.hang_up(call)
        ticket = await ticket_of(h, cid)
        assert ticket.department is None  # an interpreter is not a department


async def test_busy_party(tmp_path: Path, redis_url: str) -> None:
    async with hotline(tmp_path, redis_url) as h:
        call, cid = await h.call()
        with h.clock.holding():
            await h.svc.add(cid, "police")  # 110 answers busy (Hangup(17))
        started = h.clock.now()
        outcome = await h.svc.wait(cid, "leg-1")
        assert (outcome.state, outcome.reason, outcome.kind) == ("failed", "busy",
                                                                 "emergency")
        assert h.clock.now() - started < 5  # at once, not after the ring timeout
        assert h.of(cid, "threeway.failed")[0].data["reason"] == "busy"
        await h.watch.until(lambda: h.conference(cid) == ["Local/1001@agent", "SIP/pstn"])
        await h.hang_up(call)


async def test_closed_department_offers_its_fallback(tmp_path: Path, redis_url: str
                                                     ) -> None:
    async with hotline(tmp_path, redis_url, now=SUNDAY_10) as h:
        call, cid = await h.call()
        before = list(h.actions)
        with h.clock.holding():
            result = await h.svc.add(cid, "tianhe")  # district office, closed on Sunday
        assert (result.state, result.reason) == ("failed", "closed")
        # its fallback is the city bureau, closed too: that one's queue
        assert dict(result.fallback) == {"fallback_kind": "queue", "fallback": "hotline"}
        assert h.actions == before  # nothing dialled, nobody moved
        assert (await h.svc.wait(cid, result.leg)).reason == "closed"
        assert h.bridged(call) and h.svc.status(cid) is None
        await h.watch.until(lambda: h.types(cid) == ["threeway.requested",
                                                     "threeway.failed"])
        await h.hang_up(call)


async def test_caller_hangs_up_while_the_leg_rings(tmp_path: Path, redis_url: str) -> None:
    async with hotline(tmp_path, redis_url) as h:
        call, cid = await h.call()
        with h.clock.holding():
            await h.svc.add(cid, "business", timeout_s=60)
        await h.watch.until(lambda: any("ivr-threeway-leg" in c.name
                                        for c in h.emu.pbx.channels.values()))
        await h.watch.until(lambda: len(h.conference(cid)) == 2)
        await h.hang_up(call)
        outcome = await h.svc.wait(cid, "leg-1")
        assert (outcome.state, outcome.reason) == ("failed", "caller-gone")
        await h.watch.until(lambda: not [c for c in h.emu.pbx.channels.values()
                                         if not c.hungup])
        ticket = await ticket_of(h, cid)
        types = [e["type"] for e in ticket.events if e["type"].startswith("threeway.")]
        assert "threeway.failed" in types and types[-1] == "threeway.ended"


async def test_agent_hangs_up_during_the_threeway_mute_and_full(
        tmp_path: Path, redis_url: str) -> None:
    async with hotline(tmp_path, redis_url) as h:
        call, cid = await h.call()
        with h.clock.holding():
            await h.svc.add(cid, "market")
        await h.svc.wait(cid, "leg-1")
        with h.clock.holding():
            await h.svc.add(cid, "interp-en")
        assert (await h.svc.wait(cid, "leg-2")).state == "up"
        await h.watch.until(lambda: len(h.conference(cid)) == 4)
        # full: caller, agent, department, interpreter — a fifth is refused, nothing sent
        before = list(h.actions)
        with h.clock.holding(), pytest.raises(ConferenceFull, match="三方通话已满"):
            await h.svc.add(cid, "hrss")
        assert h.actions == before
        # mute the department, then unmute it: ConfBridge's own events become call events
        with h.clock.holding():
            await h.svc.mute(cid, "leg-1")
        await h.watch.until(lambda: "threeway.muted" in h.types(cid))
        muted = h.of(cid, "threeway.muted")[0]
        assert muted.data["role"] == "external"
        assert h.emu.confbridges.conferences[cid].muted
        with h.clock.holding():
            await h.svc.mute(cid, "leg-1", on=False)
        await h.watch.until(lambda: "threeway.unmuted" in h.types(cid))
        assert not h.emu.confbridges.conferences[cid].muted
        with pytest.raises(UnknownParty):
            await h.svc.mute(cid, "leg-9")
        # the agent hangs up: caller, department and interpreter go on
        agent = next(c for c in h.emu.confbridges.conferences[cid].users.values()
                     if c[0].name.startswith("Local/1001@"))[0]
        h.emu.pbx.request_hangup(agent, 16)
        await h.watch.until(lambda: "threeway.agent_left" in h.types(cid))
        await h.watch.until(lambda: len(h.conference(cid)) == 3)
        assert not call.channel.hungup
        with pytest.raises(NoAgent):  # nobody to add a party any more
            await h.svc.add(cid, "hrss")
        # the agent's drop of a party: the interpreter leaves, the department stays
        with h.clock.holding():
            await h.svc.drop(cid, "leg-2")
        await h.watch.until(lambda: "threeway.dropped" in h.types(cid))
        assert h.conference(cid) == ["Local/2001@ivr", "SIP/pstn"]
        # the department hangs up: the caller alone is let go, the conference ends
        dept = next(c for c in h.emu.confbridges.conferences[cid].users.values()
                    if "ivr-threeway-leg" in c[0].name)[0]
        h.emu.pbx.request_hangup(dept, 16)
        await call.wait()
        await h.watch.until(lambda: cid not in h.emu.confbridges.conferences)
        ticket = await ticket_of(h, cid)
        assert ticket.department == "market"


async def test_bad_input_changes_nothing(tmp_path: Path, redis_url: str) -> None:
    async with hotline(tmp_path, redis_url) as h:
        call, cid = await h.call()
        waiting, wid = await h.call("13600136000", exten="6003")  # nobody answers
        await h.watch.until(lambda: h.model().waiting_in(wid) == "nobody")
        before = (list(h.actions), len(h.events))
        with h.clock.holding():
            with pytest.raises(UnknownTarget, match="通讯录中没有"):
                await h.svc.add(cid, "nosuch")
            with pytest.raises(NotDialable, match="不是可拨打"):
                await h.svc.add(cid, "21a1")
            with pytest.raises(NoAgent, match="没有坐席"):
                await h.svc.add(wid, "market")
            with pytest.raises(CallNotFound, match="不是进行中的通话"):
                await h.svc.add("1234.999", "market")
            with pytest.raises(NoThreeWay):
                await h.svc.mute(cid, "caller")
            with pytest.raises(NoThreeWay):
                await h.svc.leave(cid)
        assert (h.actions, len(h.events)) == before
        # the agent cannot leave the caller alone
        with h.clock.holding():
            await h.svc.add(cid, "business", timeout_s=3)
        await h.svc.wait(cid, "leg-1")
        with pytest.raises(AgentWouldLeaveCallerAlone):
            await h.svc.leave(cid)
        await h.hang_up(call)
        await h.watch.until(lambda: h.model().has_ended(cid))
        with pytest.raises(CallNotFound, match="has ended"):
            await h.svc.add(cid, "market")
        await h.hang_up(waiting)


async def test_http_routes(tmp_path: Path, redis_url: str) -> None:
    async with hotline(tmp_path, redis_url, http=True) as h:
        api = h.api
        assert api is not None
        call, cid = await h.call()
        with h.clock.holding():  # emulated time held while real requests run
            mine = await api.token("agent", agent="Local/1001@agent-local/n")
            other = await api.token("agent", agent="PJSIP/1002")
            sup = await api.token("supervisor")
            path = f"/api/calls/{cid}/threeway"
            err = await api.call("POST", path, other, json_body={"target": "market"},
                                 expect=403)
            assert err["code"] == "not_own_call"
            err = await api.call("POST", path, mine, json_body={"target": "nosuch"},
                                 expect=404)
            assert err["code"] == "directory_unknown" and "通讯录中没有" in err["message"]["zh"]
            err = await api.call("POST", path, mine, json_body={"target": "2001", "x": 1},
                                 expect=400)
            err = await api.call("POST", "/api/calls/1.999/threeway", sup,
                                 json_body={"target": "2001"}, expect=404)
            assert err["code"] == "threeway_no_call"
            await api.call("GET", path, mine, expect=404)
        assert h.actions.count("Originate") == 0
        played: list[str] = []
        h.emu.bus.tap.append(lambda name, body: played.append(body)
                             if name == "Newexten" and "Application: Playback" in body
                             else None)
        with h.clock.holding():
            got = await api.call("POST", path, mine, json_body={
                "target": "market", "announce": "transfer-dept"})
        assert got["leg"]["state"] == "ringing" and got["leg"]["target"] == "market"
        assert (await h.svc.wait(cid, "leg-1")).state == "up"
        # the announcement was played to the department's leg before it joined
        assert any("AppData: zh/transfer-dept" in b and "ivr-threeway-leg" in b
                   for b in played)
        with h.clock.holding():
            seen = await api.call("GET", path, sup)
        assert seen["threeway"]["parties"] == ["caller", "agent", "leg-1"]
        with h.clock.holding():
            err = await api.call("POST", path, mine, json_body={"target": "2001"},
                                 expect=409)
            assert err["code"] == "threeway_already_in"
            await api.call("POST", path + "/leg-1/mute", mine, json_body={"on": True})
            await api.call("POST", path + "/leg-1/mute", mine, json_body={"on": False})
            err = await api.call("POST", path + "/leg-7/mute", mine, json_body={}, expect=404)
            assert err["code"] == "threeway_unknown_party"
            await api.call("POST", path + "/leave", mine)
        await h.watch.until(lambda: "threeway.agent_left" in h.types(cid))
        await h.watch.until(lambda: "threeway.unmuted" in h.types(cid))
        with h.clock.holding():
            await api.call("POST", path + "/leg-1/drop", sup)
        await call.wait()  # the caller alone is let go
        with h.clock.holding():
            audit = await api.call("GET", "/api/audit", sup)
        actions = [e["action"] for e in audit["records"]]
        assert {"threeway.add", "threeway.mute", "threeway.leave", "threeway.drop"} <= set(
            actions)


def _silent_seconds(samples: list[int], rate: int) -> int:
    """How many whole seconds of a channel hold no sound (the emulator's recordings have a
    100 ms tone in every second)."""
    return sum(1 for i in range(0, len(samples) - rate + 1, rate)
               if max(abs(x) for x in samples[i:i + rate]) < 50)


async def test_recording_starts_at_the_answer_covers_the_threeway_and_mutes_the_caller(
        tmp_path: Path, redis_url: str) -> None:
    async with hotline(tmp_path, redis_url, record=True, http=True) as h:
        hooks, api = h.recording_hooks, h.api
        assert hooks is not None and api is not None
        call, cid = await h.call()
        await h.watch.until(lambda: h.types(cid, "recording.") == ["recording.started"])
        started = h.of(cid, "recording.started")[0]
        assert str(started.data["file"]).endswith(f"/{cid}-{call.channel.uniqueid}.wav")
        assert h.actions.count("MixMonitor") == 1
        with h.clock.holding():
            await h.svc.add(cid, "market")
        assert (await h.svc.wait(cid, "leg-1")).state == "up"
        await h.sleep(2.0)
        with h.clock.holding():
            await hooks.mute(cid, "caller")  # the caller reads out an ID number
        await h.sleep(4.0)
        with h.clock.holding():
            await hooks.mute(cid, "caller", on=False)
        await h.sleep(3.0)
        await h.watch.until(lambda: h.types(cid, "recording.") == [
            "recording.started", "recording.muted", "recording.unmuted"])
        assert h.of(cid, "recording.muted")[0].data["direction"] == "read"
        with pytest.raises(RecordingBadDirection):
            await hooks.mute(cid, "sideways")
        # over HTTP (the emulated time held while real requests run): an agent stops the
        # recording of its own call only
        with h.clock.holding():
            mine = await api.token("agent", agent="Local/1001@agent-local/n")
            other = await api.token("agent", agent="PJSIP/1002")
            path = f"/api/calls/{cid}/recording"
            err = await api.call("POST", path + "/stop", other, expect=403)
            assert err["code"] == "not_own_call"
            await api.call("POST", path + "/stop", mine)
        await h.watch.until(lambda: "recording.stopped" in h.types(cid, "recording."))
        before = list(h.actions)
        with h.clock.holding():
            with pytest.raises(NotRecorded):
                await hooks.mute(cid, "caller")
            err = await api.call("POST", path + "/mute", mine,
                                 json_body={"direction": "caller"}, expect=409)
            assert err["code"] == "recording_not_running"
        assert h.actions == before
        assert not call.channel.hungup
        await h.hang_up(call)
        await ticket_of(h, cid)
        async with asyncio.timeout(60):
            await h.sink.wait_for(lambda s: any(
                e["type"] == "recording.ready" and e["data"].get("stage") == "archived"
                for e in s.tickets[cid].events))
        ticket = h.sink.store.get(cid)
        ev = next(e for e in ticket.events if e["type"] == "recording.ready"
                  and e["data"].get("stage") == "archived")
        assert ev["data"]["channels"] == 2
        archive = AudioSegment.from_file(tmp_path / "archive" / ev["data"]["location"])
        left, right = archive.split_to_mono()  # the caller's voice, what the caller hears
        rate = archive.frame_rate
        # the recording covers the three-way call: ~2 s with the department, 4 s muted,
        # 3 s after, until the stop
        assert 8.0 <= ev["data"]["duration_s"] <= 14.0
        assert 3 <= _silent_seconds(left.get_array_of_samples().tolist(), rate) <= 4
        assert _silent_seconds(right.get_array_of_samples().tolist(), rate) == 0


async def test_an_asterisk_without_the_threeway_context_is_not_redirected(
        tmp_path: Path, redis_url: str) -> None:
    async with hotline(tmp_path, redis_url, contexts=False) as h:
        call, cid = await h.call()
        with h.clock.holding(), pytest.raises(NotInstalled, match="ivr dialplan publish"):
            await h.svc.add(cid, "market")
        assert "Redirect" not in h.actions and "Originate" not in h.actions
        assert h.bridged(call) and h.types(cid) == []  # the caller still with the agent
        await h.hang_up(call)


async def test_caller_gone_while_the_bridge_was_away(tmp_path: Path, redis_url: str) -> None:
    async with hotline(tmp_path, redis_url) as h:
        call, cid = await h.call()
        with h.clock.holding():
            await h.svc.add(cid, "market")
        assert (await h.svc.wait(cid, "leg-1")).state == "up"
        await h.watch.until(lambda: len(h.conference(cid)) == 3)
        ended = asyncio.Event()
        h.emu.bus.tap.append(lambda name, body: ended.set() if name == "ConfbridgeEnd"
                             else None)
        # the bridge's AMI connection drops; meanwhile the caller hangs up: nobody ends
        # the conference (the agent and the department would stay in it)
        for session in list(h.emu.ami.sessions):
            session.close()
        await h.hang_up(call)
        assert h.conference(cid) == ["Local/1001@agent", "Local/2001@ivr"]
        # after the reconnect (emulated time held: the agent's and the department's own
        # timers must not end it first) the resync sees the caller gone and ends it
        with h.clock.holding():
            async with asyncio.timeout(25):
                await ended.wait()
        assert "ConfbridgeList" in h.actions and "ConfbridgeKick" in h.actions
        await h.watch.until(lambda: not [c for c in h.emu.pbx.channels.values()
                                         if not c.hungup] and h.svc.status(cid) is None)


async def test_a_queue_not_recorded_by_policy_is_recorded_on_request(
        tmp_path: Path, redis_url: str) -> None:
    import shutil

    from tests.test_dialplan_support import SHIPPED

    dialplans = tmp_path / "dialplans"
    shutil.copytree(SHIPPED, dialplans)
    policy = dialplans / "recordings.yaml"
    policy.write_text(policy.read_text().replace(
        "    english: {channels: mono}", "    hotline: {record: false}\n"
        "    english: {channels: mono}"))
    async with hotline(tmp_path, redis_url, record=True, dialplans=dialplans) as h:
        hooks = h.recording_hooks
        assert hooks is not None
        call, cid = await h.call()
        await h.watch.until(lambda: h.model().calls[cid].agent is not None)
        assert "MixMonitor" not in h.actions and h.types(cid, "recording.") == []
        with h.clock.holding():
            with pytest.raises(NotRecorded):
                await hooks.stop(cid)
            file = await hooks.start(cid)  # the agent records this one
        assert file.startswith("ivr/") and file.endswith(f"{cid}-{call.channel.uniqueid}.wav")
        await h.watch.until(lambda: h.types(cid, "recording.") == ["recording.started"])
        assert h.actions.count("MixMonitor") == 1  # the agent's only, not the policy's
        await h.hang_up(call)


async def test_two_requests_at_once_on_one_call(tmp_path: Path, redis_url: str) -> None:
    async with hotline(tmp_path, redis_url) as h:
        call, cid = await h.call()
        with h.clock.holding():
            got = await asyncio.gather(h.svc.add(cid, "business", timeout_s=5),
                                       h.svc.add(cid, "hrss"), return_exceptions=True)
        # the second waited for the first, then saw its leg ringing: one Redirect, one leg
        assert [type(g).__name__ for g in got] == ["LegResult", "LegRinging"]
        assert h.actions.count("Redirect") == 1 and h.actions.count("Originate") == 1
        assert h.svc._locks == {}
        await h.hang_up(call)


async def test_the_interpreter_of_the_callers_language(tmp_path: Path, redis_url: str
                                                       ) -> None:
    async with hotline(tmp_path, redis_url) as h:
        call, cid = await h.call(language="en")
        await h.watch.until(lambda: h.model().calls[cid].language == "en")
        with h.clock.holding():
            placed = await h.svc.add(cid, "@interpreter")
        assert (placed.target, placed.kind, placed.number) == ("interp-en", "interpreter",
                                                               "2201")
        assert (await h.svc.wait(cid, "leg-1")).state == "up"
        await h.hang_up(call)
        await h.watch.until(lambda: h.model().has_ended(cid))
        call2, cid2 = await h.call("13700137002", language="zh")
        with h.clock.holding(), pytest.raises(NoInterpreter, match="翻译坐席"):
            await h.svc.add(cid2, "@interpreter")  # Mandarin: no interpreter needed
        await h.hang_up(call2)


async def test_the_directory_entrys_announcement_is_played_to_it(
        tmp_path: Path, redis_url: str) -> None:
    import shutil

    from tests.test_dialplan_support import SHIPPED

    dialplans = tmp_path / "dialplans"
    shutil.copytree(SHIPPED, dialplans)
    directory = dialplans / "directory.yaml"
    directory.write_text(directory.read_text(encoding="utf-8").replace(
        "    fallback: {queue: consumer}\n",
        "    fallback: {queue: consumer}\n    announce: transfer-dept\n", 1),
        encoding="utf-8")
    async with hotline(tmp_path, redis_url, dialplans=dialplans) as h:
        played: list[str] = []
        h.emu.bus.tap.append(lambda name, body: played.append(body)
                             if name == "Newexten" and "Application: Playback" in body
                             else None)
        call, cid = await h.call()
        with h.clock.holding():
            await h.svc.add(cid, "market")  # no announcement asked: the entry's
        assert (await h.svc.wait(cid, "leg-1")).state == "up"
        assert any("AppData: zh/transfer-dept" in b and "ivr-threeway-leg" in b
                   for b in played)
        await h.hang_up(call)
