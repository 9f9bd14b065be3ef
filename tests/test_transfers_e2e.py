"""Transfers end to end: the application (ivr/app.py) against the emulator on its virtual
clock, an agent (Local/1001@agent-local) talking with a caller who came through queue
``hotline``, driving the transfer service as an agent would.  Blind transfer to a
department (BlindTransfer and Redirect), attended completed, attended returned (the
target declines; the agent cancels), one-key 110 busy (the caller is back with the agent)
and 119 completed at its answer, the caller hanging up during a consultation, bad input
that sends nothing to Asterisk.  Every transfer event is the call's (same call id, one
ticket)."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from ivr.ami.client import AMIClient, AMISettings
from ivr.ami.messages import Event
from ivr.api.auth import TokenStore
from ivr.app import AMI_CONSUMERS, PIPELINE, AppOptions, build_app, running
from ivr.dialplan.ami_control import ClientControl
from ivr.dialplan.publish import Publisher, Store, prepare
from ivr.dialplan.validate import file_prompt_lookup
from ivr.directory import NotDialable, NotOneKey, UnknownTarget
from ivr.events.model import CallEvent
from ivr.redisproc import free_port
from ivr.sim import CallerScript, Emulator, EmulatorConfig
from ivr.sim.callers import CallHandle
from ivr.sim.clock import VirtualClock
from ivr.sim.emulator import DEFAULT_ETC
from ivr.ticketsink.server import TicketSink
from ivr.transfers.errors import (
    CallNotActive,
    NoAgent,
    NoTransfer,
    TargetClosed,
    TransferInProgress,
)
from ivr.transfers.service import TRANSFERS, TransferService
from tests.test_api import Api
from tests.test_app import for_emulator
from tests.test_dialplan_support import SHIPPED

FAST = AMISettings(ping_interval=0)
CST = dt.timezone(dt.timedelta(hours=8))
OFFICE_OPEN = dt.datetime(2026, 12, 7, 10, 0, tzinfo=CST)  # a Monday, 10:00 in Guangzhou
SUNDAY_NIGHT = dt.datetime(2026, 12, 6, 3, 0, tzinfo=CST)

# the dial context of the shipped definition (settings.dial_context): departments market
# (2001), hrss (2002), business (2003); emergency services
OUTBOUND = """
[outbound]
exten => 2001,1,Ringing()
 same => n,Wait(2)
 same => n,Answer()
 same => n,Wait(3600)
 same => n,Hangup()
exten => 2002,1,Ringing()
 same => n,Wait(2)
 same => n,Answer()
 same => n,Wait(10)
 same => n,Hangup()
exten => 2003,1,Ringing()
 same => n,Wait(3600)
exten => 110,1,Hangup(17)
exten => 119,1,Ringing()
 same => n,Wait(1)
 same => n,Answer()
 same => n,Wait(3600)
 same => n,Hangup()
"""


def etc_with_outbound(tmp_path: Path) -> Path:
    """The emulator's etc, agent 1001 staying on the line, and the [outbound] context."""
    etc = tmp_path / "etc"
    etc.mkdir()
    for f in DEFAULT_ETC.iterdir():
        text = f.read_text()
        if f.name == "extensions.conf":
            text = text.replace("exten => 1001,1,Answer()\n same => n,Wait(120)",
                                "exten => 1001,1,Answer()\n same => n,Wait(36000)") + OUTBOUND
        (etc / f.name).write_text(text)
    return etc


@dataclass
class Watch:
    """An AMI consumer of the test's own: after each event (``call_soon``: once every
    consumer has read it) the predicates waited on are checked again."""

    consumed_ami_events: frozenset[str] = frozenset({"BridgeEnter", "BridgeLeave", "Hangup",
                                                     "Unhold", "AgentConnect"})
    consumed_variables: frozenset[str] = frozenset()
    tick: asyncio.Event = field(default_factory=asyncio.Event)

    def on_ami_event(self, event: Event) -> None:
        asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        tick, self.tick = self.tick, asyncio.Event()
        tick.set()

    async def resync(self, client: Any) -> bool:
        return True

    async def until(self, predicate: Callable[[], bool],
                    timeout: float = 20.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while not predicate():
                await self.tick.wait()


@dataclass
class Hotline:
    emu: Emulator
    clock: VirtualClock
    svc: TransferService
    sink: TicketSink
    watch: Watch
    events: list[CallEvent]
    actions: list[str]
    api: Api | None = None

    async def call(self, number: str = "13900139000", exten: str = "6000") -> tuple[
            CallHandle, str]:
        """A caller through queue hotline, talking with agent 1001 (bridged); 12345: the
        published hotline's entry (the IVR, no key: the hotline queue)."""
        call = await self.emu.place_call(CallerScript(
            number=number, context="from-pstn", exten=exten, patience=None, talk_time=None,
            max_duration=36000, language="zh", menu_digits=[""] if exten == "12345" else []))
        call_id = call.channel.linkedid
        if exten in ("6000", "12345"):
            await self.watch.until(lambda: self.bridged_with_agent(call_id))
        return call, call_id

    def bridged_with_agent(self, call_id: str) -> bool:
        try:
            self.svc.legs(call_id)
        except Exception:  # noqa: BLE001 - not yet
            return False
        return True

    def types(self, call_id: str, prefix: str = "transfer.") -> list[str]:
        return [e.type for e in self.events if e.call_id == call_id
                and e.type.startswith(prefix)]

    def of(self, call_id: str, type_: str) -> list[CallEvent]:
        return [e for e in self.events if e.call_id == call_id and e.type == type_]

    def peers(self, call: CallHandle) -> list[str]:
        """The emulator's view: who is in the caller's bridge with it."""
        b = call.channel.bridge
        return [] if b is None else sorted(c.name.split("-")[0] for c in b.channels
                                           if c is not call.channel)

    async def hang_up(self, call: CallHandle) -> None:
        self.emu.pbx.request_hangup(call.channel, 16)
        await call.wait()


# re-opens the site file's [outbound] (whose _X. answers at once): hrss never answers
ROUTE_OUTBOUND = "\n[outbound]\nexten => 2002,1,Ringing()\n same => n,Wait(600)\n"


def etc_for_publish(tmp_path: Path) -> Path:
    """The emulator's etc before a publish (as the demo prepares it), the site file's
    agents and [outbound] with :data:`ROUTE_OUTBOUND`."""
    etc = tmp_path / "etc"
    shutil.copytree(DEFAULT_ETC, etc)
    (etc / "extensions.conf").write_text("[general]\nstatic=yes\n")
    (etc / "queues.conf").write_text("[general]\n")
    site = (SHIPPED.parent / "asterisk-conf" / "extensions_site.conf").read_text("utf-8")
    (etc / "extensions_site.conf").write_text(site + ROUTE_OUTBOUND, "utf-8")
    return etc


@asynccontextmanager
async def hotline(tmp_path: Path, redis_url: str, http: bool = False,
                  published: bool = False) -> AsyncIterator[Hotline]:
    clock = VirtualClock(autojump=0.05, max_hold=30)
    agi_port = free_port()
    etc = etc_for_publish(tmp_path) if published else etc_with_outbound(tmp_path)
    config = EmulatorConfig(etc=etc, clock=clock, agi_host="127.0.0.1", agi_port=agi_port,
                            prompts=SHIPPED.parent / "prompts")
    async with Emulator(config) as emu, TicketSink(b"s3cret") as sink:
        run = uuid.uuid4().hex[:8]
        changes: dict[str, Any] = {}
        if published:  # the shipped definition rendered and published into the emulator
            client = AMIClient("127.0.0.1", emu.ami_port, username="ivr", secret="ivrsecret",
                               settings=FAST)
            await client.start()
            try:
                plan = prepare(SHIPPED, file_prompt_lookup(SHIPPED.parent / "prompts"))
                await Publisher(Store.at(etc), who="transfers-test").publish(
                    plan, ClientControl(client))
            finally:
                await client.close()
            changes = {"asterisk_conf_dir": etc, "prompts_dir": SHIPPED.parent / "prompts"}
        settings = for_emulator(emu, redis_url=redis_url, http_port=0 if http else None,
                                agi_port=agi_port, **changes)
        settings = replace(settings, events=settings.events.with_(
            ticket_url=sink.events_url, secret="s3cret",
            stream_prefix=f"test:transfers:{run}"))
        app = build_app(settings, AppOptions(watch_s=None, ami=FAST, drain_s=20,
                                             api_prefix=f"test:transfers:{run}:api"))
        watch = Watch()
        actions: list[str] = []
        dispatch = emu.ami.dispatch

        def spying(session: Any, msg: Any) -> Any:
            actions.append(msg.name)
            return dispatch(session, msg)

        emu.ami.dispatch = spying  # type: ignore[method-assign]
        # first in line, but it looks only once every consumer has read the event
        app[AMI_CONSUMERS].append(watch)
        async with running(app) as runner, aiohttp.ClientSession() as session:
            events: list[CallEvent] = []
            app[PIPELINE].add_listener(events.extend)
            app[TRANSFERS].resolver.now = lambda: OFFICE_OPEN  # departments' hours: open
            api = None
            if http:
                host, port = runner.addresses[0][:2]
                redis = aioredis.from_url(redis_url)
                api = Api(session, f"http://{host}:{port}",
                          TokenStore(redis, f"test:transfers:{run}:api"), redis)
            try:
                yield Hotline(emu, clock, app[TRANSFERS], sink, watch, events, actions, api)
            finally:
                if api is not None:
                    await api.redis.aclose()


async def ticket_of(h: Any, call_id: str) -> Any:
    """The call's one ticket once its call.ended is delivered (``h``: a hotline rig with
    the ticket ``sink`` and the ``events`` built; the three-way tests' too)."""
    async with asyncio.timeout(30):
        await h.sink.wait_for(lambda s: any(
            e.type == "call.ended" for e in h.events if e.call_id == call_id)
            and (t := s.get(call_id)) is not None and t.last_seq >= max(
                e.seq for e in h.events if e.call_id == call_id))
    ticket = h.sink.store.get(call_id)
    assert ticket is not None
    return ticket


async def test_blind_transfer_to_a_department(tmp_path: Path, redis_url: str) -> None:
    async with hotline(tmp_path, redis_url) as h:
        call, cid = await h.call()
        with h.clock.holding():
            t = await h.svc.blind(cid, "market")
        assert (t.outcome, t.method, t.target.number, t.target.id) == (
            "completed", "BlindTransfer", "2001", "market")
        # the agent is released, the caller runs the department's extension
        await h.watch.until(lambda: h.types(cid)[-1:] == ["transfer.completed"]
                            and "transfer.blind" in h.types(cid))
        assert h.types(cid) == ["transfer.requested", "transfer.blind", "transfer.completed"]
        assert (call.channel.context, call.channel.exten) == ("outbound", "2001")
        done = h.of(cid, "transfer.completed")[0]
        assert done.data["entry"] == "market" and done.data["kind"] == "blind"
        assert done.routing.department == "market" and done.source.kind == "service"
        assert "transferred:market" in done.routing.tags
        assert h.of(cid, "transfer.blind")[0].data["extension"] == "2001"

        # Redirect: the caller's channel itself is sent to a number
        call2, cid2 = await h.call("13700137000")
        with h.clock.holding():
            t2 = await h.svc.blind(cid2, "2002", method="redirect")
        assert (t2.outcome, t2.method, t2.target.id) == ("completed", "Redirect", "hrss")
        assert (call2.channel.context, call2.channel.exten) == ("outbound", "2002")
        assert h.types(cid2) == ["transfer.requested", "transfer.completed"]
        await h.hang_up(call)
        await h.hang_up(call2)
        ticket = await ticket_of(h, cid)
        assert [e["type"] for e in ticket.events if e["type"].startswith("transfer.")] == [
            "transfer.requested", "transfer.blind", "transfer.completed"]


async def test_attended_transfer_completed(tmp_path: Path, redis_url: str) -> None:
    async with hotline(tmp_path, redis_url) as h:
        call, cid = await h.call()
        with h.clock.holding():
            t = await h.svc.attended(cid, "market")
            with pytest.raises(TransferInProgress):  # one at a time
                await h.svc.attended(cid, "2002")
            with pytest.raises(NoTransfer, match="not answered yet"):
                await h.svc.complete(cid)
        await h.svc.wait(t, phase="answered")
        assert t.phase == "answered" and t.target_channel is not None
        assert t.target_channel.startswith("Local/2001@outbound-")
        assert h.peers(call) == []  # held alone while the agent consults
        with h.clock.holding():
            await h.svc.complete(cid)
        await h.svc.wait(t)
        assert (t.outcome, t.reason) == ("completed", None)
        await h.watch.until(lambda: h.peers(call) == ["Local/2001@outbound"])
        # the target in the call's bridge completes it; Asterisk's AttendedTransfer follows
        await h.watch.until(lambda: "transfer.attended" in h.types(cid))
        assert h.types(cid) == ["transfer.requested", "transfer.answered",
                                "transfer.completed", "transfer.attended"]
        done = h.of(cid, "transfer.completed")[0]
        assert done.routing.department == "market" and done.data["target_channel"] == (
            t.target_channel)
        assert h.of(cid, "transfer.attended")[0].data["result"] == "Success"
        assert h.svc.active(cid) is None
        with pytest.raises(NoAgent):  # the agent has left the call
            await h.svc.attended(cid, "2002")
        await h.hang_up(call)
        ticket = await ticket_of(h, cid)
        assert ticket.events[-1]["type"] == "call.ended"
        assert len([e for e in ticket.events if e["type"] == "call.started"]) == 1


async def test_attended_transfer_returns_when_the_target_declines_or_is_cancelled(
        tmp_path: Path, redis_url: str) -> None:
    async with hotline(tmp_path, redis_url) as h:
        call, cid = await h.call()
        with h.clock.holding():
            t = await h.svc.attended(cid, "hrss")  # answers, then hangs up after 10 s
        await h.svc.wait(t, timeout=60)
        assert (t.outcome, t.reason) == ("returned", "target_hangup")
        await h.watch.until(lambda: h.peers(call) == ["Local/1001@agent"])
        assert h.types(cid) == ["transfer.requested", "transfer.answered",
                                "transfer.returned"]
        back = h.of(cid, "transfer.returned")[0]
        assert back.data["entry"] == "hrss" and back.routing.department is None

        # the agent gives up a consultation: back to the caller
        with h.clock.holding():
            t2 = await h.svc.attended(cid, "2001")
        await h.svc.wait(t2, phase="answered")
        with h.clock.holding():
            await h.svc.cancel(cid)
        await h.svc.wait(t2)
        assert (t2.outcome, t2.reason) == ("returned", "cancelled")
        await h.watch.until(lambda: h.peers(call) == ["Local/1001@agent"])
        # still the agent's: a transfer works again
        assert h.svc.legs(cid)[1].name.startswith("Local/1001@agent-local-")
        await h.hang_up(call)
        ticket = await ticket_of(h, cid)
        assert [e["type"] for e in ticket.events if e["type"].startswith("transfer.")] == [
            "transfer.requested", "transfer.answered", "transfer.returned",
            "transfer.requested", "transfer.answered", "transfer.returned"]


async def test_one_key_110_busy_then_119_answers(tmp_path: Path, redis_url: str) -> None:
    async with hotline(tmp_path, redis_url) as h:
        call, cid = await h.call()
        with h.clock.holding():
            t = await h.svc.one_key(cid, "police")
        await h.svc.wait(t)
        assert (t.outcome, t.reason, t.target_cause, t.kind) == ("failed", "busy", 17,
                                                                 "one_key")
        await h.watch.until(lambda: h.peers(call) == ["Local/1001@agent"])
        failed = h.of(cid, "transfer.failed")[0]
        assert (failed.data["reason"], failed.data["cause"], failed.data["number"],
                failed.data["entry"], failed.data["target_kind"]) == (
            "busy", 17, "110", "police", "emergency")
        # one key again, to a service that answers: handed over at its answer
        with h.clock.holding():
            t2 = await h.svc.one_key(cid, "119")
        await h.svc.wait(t2)
        assert t2.outcome == "completed"
        await h.watch.until(lambda: h.peers(call) == ["Local/119@outbound"])
        await h.watch.until(lambda: "transfer.attended" in h.types(cid))
        assert h.types(cid) == ["transfer.requested", "transfer.failed",
                                "transfer.requested", "transfer.answered",
                                "transfer.completed", "transfer.attended"]
        await h.hang_up(call)
        ticket = await ticket_of(h, cid)
        assert "transferred:fire" in ticket.tags and "transferred:police" not in ticket.tags


async def test_caller_hangs_up_during_a_consultation(tmp_path: Path, redis_url: str) -> None:
    async with hotline(tmp_path, redis_url) as h:
        call, cid = await h.call()
        with h.clock.holding():
            t = await h.svc.attended(cid, "market")
        await h.svc.wait(t, phase="answered")
        await h.hang_up(call)
        await h.svc.wait(t)
        assert (t.outcome, t.reason) == ("failed", "caller_hangup")
        # the agent and the department still talk; the call ends when they hang up
        agent = h.emu.pbx.find(t.agent_channel)
        assert agent is not None and not agent.hungup
        h.emu.pbx.request_hangup(agent, 16)
        ticket = await ticket_of(h, cid)
        assert [e["type"] for e in ticket.events if e["type"].startswith("transfer.")] == [
            "transfer.requested", "transfer.answered", "transfer.failed"]


async def test_bad_input_changes_nothing(tmp_path: Path, redis_url: str) -> None:
    async with hotline(tmp_path, redis_url) as h:
        call, cid = await h.call()
        waiting, wid = await h.call("13600136000", exten="6003")  # nobody answers
        await h.watch.until(lambda: h.svc.model.waiting_in(wid) == "nobody", 20)
        before = (list(h.actions), len(h.events))
        with h.clock.holding():
            with pytest.raises(UnknownTarget, match="nosuch.*通讯录中没有"):
                await h.svc.attended(cid, "nosuch")
            with pytest.raises(NotDialable, match="不是可拨打的号码"):
                await h.svc.blind(cid, "12ab")
            with pytest.raises(NotOneKey, match="不是一键转接的紧急服务"):
                await h.svc.one_key(cid, "2001")
            h.svc.resolver.now = lambda: SUNDAY_NIGHT
            with pytest.raises(TargetClosed,
                               match="fallback is queue 'consumer'.*当前不在服务时间"):
                await h.svc.blind(cid, "market")
            h.svc.resolver.now = lambda: OFFICE_OPEN
            with pytest.raises(NoAgent, match="没有坐席"):
                await h.svc.blind(wid, "2001")
            with pytest.raises(CallNotActive, match="不是进行中的通话"):
                await h.svc.attended("1234.999", "2001")
            with pytest.raises(NoTransfer, match="没有进行中的转接"):
                await h.svc.cancel(cid)
        assert (h.actions, len(h.events)) == before  # nothing sent, no event
        await h.hang_up(call)
        await h.watch.until(lambda: h.svc.model.has_ended(cid))
        with pytest.raises(CallNotActive, match="has ended"):
            await h.svc.blind(cid, "2001")
        await h.hang_up(waiting)


async def test_http_routes_agent_and_supervisor(tmp_path: Path, redis_url: str) -> None:
    async with hotline(tmp_path, redis_url, http=True) as h:
        api = h.api
        assert api is not None
        call, cid = await h.call()
        # no emulated time passes while the requests go (the caller would end the call)
        with h.clock.holding():
            mine = await api.token("agent", agent="Local/1001@agent-local/n")
            other = await api.token("agent", agent="PJSIP/1002")
            sup = await api.token("supervisor")
            path = f"/api/calls/{cid}/transfer"
            err = await api.call("POST", path, other, json_body={"target": "market"}, expect=403)
            assert err["code"] == "not_own_call"
            err = await api.call("POST", path, mine, json_body={"target": "nosuch"}, expect=404)
            assert err["code"] == "directory_unknown" and "通讯录中没有" in err["message"]["zh"]
            err = await api.call("POST", path, mine, json_body={"target": "2001", "mode": "x"},
                                 expect=400)
            err = await api.call("POST", "/api/calls/1.999/transfer", sup,
                                 json_body={"target": "2001"}, expect=404)
            assert err["code"] == "call_not_active"
            await api.call("GET", path, mine, expect=404)
            assert h.actions.count("Atxfer") == 0
            got = await api.call("POST", path, mine, json_body={"target": "market"})
            assert got["transfer"]["phase"] == "requested" and got["transfer"]["entry"] == "market"
        t = h.svc.active(cid)
        assert t is not None
        await h.svc.wait(t, phase="answered")
        with h.clock.holding():
            seen = await api.call("GET", path, sup)
            assert seen["transfer"]["phase"] == "answered"
            err = await api.call("POST", path, sup, json_body={"target": "2002"}, expect=409)
            assert err["code"] == "transfer_in_progress"
            await api.call("POST", path + "/complete", mine)
        await h.svc.wait(t)
        assert t.outcome == "completed"
        audit = await api.call("GET", "/api/audit", sup)
        actions = [e["action"] for e in audit["records"]]
        assert "transfers.request" in actions and "transfers.complete" in actions
        await h.hang_up(call)


async def test_blind_through_the_route_falls_back_to_the_queue(tmp_path: Path,
                                                              redis_url: str) -> None:
    """method=route: the caller's channel goes to the published [ivr-route] transfer step
    (Dial with a timeout): a department that does not answer never loses the caller —
    back in its fallback queue (hrss → social), with an agent again; one that answers
    takes the call."""
    async with hotline(tmp_path, redis_url, published=True) as h:
        call, cid = await h.call(exten="12345")
        with h.clock.holding():
            t = await h.svc.blind(cid, "hrss", method="route")
        assert (t.method, t.fallback_queue) == ("Route", "social")
        assert t.phase in ("requested", "ringing")  # its events may come before the reply
        await h.svc.wait(t, timeout=60)
        assert (t.outcome, t.reason, t.dial_status) == ("failed", "no_answer", "NOANSWER")
        assert t.target_channel is not None and t.target_channel.startswith(
            "Local/2002@outbound-")
        # back in the queue social: an agent of it answers
        await h.watch.until(lambda: h.bridged_with_agent(cid), 60)
        assert h.peers(call)[0].startswith("Local/105")
        failed = h.of(cid, "transfer.failed")[0]
        assert (failed.data["fallback_queue"], failed.data["method"]) == ("social", "Route")
        with h.clock.holding():
            t2 = await h.svc.blind(cid, "market", method="route")
        await h.svc.wait(t2, timeout=60)
        assert (t2.outcome, t2.fallback_queue) == ("completed", "consumer")
        await h.watch.until(lambda: h.peers(call) == ["Local/2001@outbound"])
        assert h.types(cid) == ["transfer.requested", "transfer.failed",
                                "transfer.requested", "transfer.completed"]
        assert h.of(cid, "transfer.completed")[0].routing.department == "market"
        await h.hang_up(call)
        await ticket_of(h, cid)
