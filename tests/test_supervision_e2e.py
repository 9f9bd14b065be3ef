"""Supervisors on the line, end to end on the emulator (the application object, the real
AMI client, the call-event pipeline over Redis, the reference ticket backend): a
supervisor listens, whispers and barges on an emulated agent call by Originate of
ChanSpy (the options of trace 13), switches, leaves, and the call goes on; the agent's
call ending ends the supervisor's leg; an unanswered phone changes nothing; bad input
(agent role, a queue not supervised, a phone not theirs, a call that ended, a channel
that is not an agent's) is refused with nothing sent to Asterisk."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ivr.ami.client import AMISettings
from ivr.ami.messages import Event
from ivr.api.http import API
from ivr.app import BRIDGE, PIPELINE, AppOptions, build_app, running
from ivr.events.model import CallEvent
from ivr.sim.callers import CallerScript, CallHandle
from ivr.sim.emulator import DEFAULT_ETC, Emulator, EmulatorConfig
from ivr.supervision.errors import (
    CallNotLive,
    NotAgentChannel,
    NotSupervisor,
    NotSupervisorsPhone,
    OutsideSupervisedQueues,
    SupervisionError,
)
from ivr.supervision.service import SUPERVISION, SupervisionService
from ivr.supervision.state import Actor
from ivr.ticketsink.server import TicketSink
from tests.test_recordings_app import settings_for

FAST = AMISettings(ping_interval=0)
BOSS = Actor("t1", "supervisor", "张班长")
EN_ONLY = Actor("t2", "supervisor", "李班长")
AGENT = Actor("t3", "agent", "张班长")  # an agent token, whatever its name

POLICY = """
[supervision]
show_agent = true

[supervision.supervisors."张班长"]
phones = ["Local/1002@agent-local", "Local/1099@agent-local"]
queues = ["hotline"]

[supervision.supervisors."李班长"]
phones = ["Local/2001@agent-local"]
queues = ["english"]
"""


def long_agents_etc(tmp: Path) -> Path:
    """The emulator's configuration with agents and phones that stay on the line (the
    shipped one hangs them up after 120 s)."""
    etc = tmp / "etc"
    shutil.copytree(DEFAULT_ETC, etc)
    conf = etc / "extensions.conf"
    conf.write_text(conf.read_text().replace("Wait(120)", "Wait(3600)"))
    return etc


async def agent_call(app: Any, emu: Emulator, script: CallerScript | None = None
                     ) -> tuple[CallHandle, str]:
    """Place a call (by default 13900139000 to 6000, staying on) and wait until an agent
    is connected: its handle and call id."""
    connected = asyncio.Event()
    ids: list[str] = []

    def listen(evs: list[CallEvent]) -> None:
        for e in evs:
            if e.type == "agent.connected" and not connected.is_set():
                ids.append(e.call_id)
                connected.set()
    app[PIPELINE].add_listener(listen)
    h = await emu.place_call(script or CallerScript(number="13900139000", exten="6000",
                                                    talk_time=None, patience=None))
    async with asyncio.timeout(20):
        await connected.wait()
    return h, ids[0]


@dataclass
class Rig:
    emu: Emulator
    sink: TicketSink
    svc: SupervisionService
    app: Any
    events: list[CallEvent]
    ami_seen: list[Event]

    async def agent_call(self) -> tuple[CallHandle, str]:
        return await agent_call(self.app, self.emu, CallerScript(
            number="13300133000", name="周十", exten="6000", talk_time=None, patience=None))

    async def ended(self, call_id: str) -> None:
        """Until the ticket backend has the call's ``call.ended``."""
        async with asyncio.timeout(30):
            await self.sink.wait_for(lambda st: any(
                e["type"] == "call.ended" for t in st.tickets.values() for e in t.events
                if t.call_id == call_id))

    def of_call(self, call_id: str, prefix: str = "supervision.") -> list[CallEvent]:
        return [e for e in self.events if e.call_id == call_id and e.type.startswith(prefix)]

    def spy_channels(self, prefix: str = "Local/1002@agent-local-") -> list[str]:
        return [n for n in self.emu.pbx.channels if n.startswith(prefix)]

    async def spy_gone(self) -> None:
        """Until the supervisor's phone has no channel left (read at each Hangup)."""
        gone = asyncio.Event()

        def on_hangup(ev: Event) -> None:
            if not [n for n in self.spy_channels() if n != ev.get("Channel")]:
                gone.set()
        ami = self.app[BRIDGE].ami
        ami.on_event("Hangup", on_hangup)
        try:
            if self.spy_channels():
                async with asyncio.timeout(10):
                    await gone.wait()
        finally:
            ami.off_event("Hangup", on_hangup)

    def spy_events(self) -> list[str]:
        return [e.name for e in self.ami_seen]


@asynccontextmanager
async def rig(tmp_path: Path, redis_url: str) -> AsyncIterator[Rig]:
    policy = tmp_path / "staff.toml"
    policy.write_text(POLICY, encoding="utf-8")
    async with Emulator(EmulatorConfig(etc=long_agents_etc(tmp_path), speed=10)) as emu, \
            TicketSink(b"s3cret") as sink:
        settings = settings_for(emu, sink, redis_url, staff_policy=policy)
        app = build_app(settings, AppOptions(watch_s=None, ami=FAST))
        events: list[CallEvent] = []
        async with running(app):
            app[PIPELINE].add_listener(events.extend)
            seen: list[Event] = []
            for name in ("ChanSpyStart", "ChanSpyStop", "Originate"):
                app[BRIDGE].ami.on_event(name, seen.append)
            yield Rig(emu, sink, app[SUPERVISION], app, events, seen)


async def wait_status(svc: SupervisionService, sid: str, *statuses: str) -> None:
    async with asyncio.timeout(20):
        await svc.wait_for(lambda: svc.get(sid).status in statuses)


@pytest.mark.timeout(90)
async def test_listen_whisper_barge_switch_leave_call_goes_on(
        tmp_path: Path, redis_url: str) -> None:
    async with rig(tmp_path, redis_url) as r:
        h, call_id = await r.agent_call()
        (listed,) = r.svc.agent_calls(BOSS)
        assert listed["call_id"] == call_id and listed["queue"] == "hotline"
        assert listed["channel"].startswith("Local/1001@agent-local-")
        s = await r.svc.join(BOSS, call_id, "listen")
        assert s.status == "ringing" and s.phone == "Local/1002@agent-local"
        await wait_status(r.svc, s.id, "active")
        assert s.spyer is not None and s.spyer.startswith("Local/1002@agent-local-")
        # the agent's panel sees it (the policy says show_agent)
        assert r.svc.visible_sessions(Actor("a", "agent", "x"),
                                      "Local/1001@agent-local/n") == [s]
        assert r.svc.visible_sessions(Actor("a", "agent", "x"), "Local/1003@agent-local/n") \
            == []
        for mode in ("whisper", "barge"):
            await r.svc.switch(BOSS, s.id, mode)
            await wait_status(r.svc, s.id, "active")
        assert s.modes == ["listen", "whisper", "barge"]
        await r.svc.leave(BOSS, s.id)
        await wait_status(r.svc, s.id, "ended")
        assert s.reason == "left"
        await r.spy_gone()
        # the call goes on: caller and agent still bridged, nothing ended
        assert not h.done.is_set()
        assert r.app[PIPELINE].builder.model.call(call_id) is not None
        assert r.spy_events() == ["ChanSpyStart", "ChanSpyStop"] * 3
        evs = r.of_call(call_id)
        assert [(e.type, e.data["mode"]) for e in evs] == [
            ("supervision.joined", "listen"), ("supervision.mode", "whisper"),
            ("supervision.mode", "barge"), ("supervision.left", "barge")]
        assert [e.data.get("from") for e in evs[1:3]] == ["listen", "whisper"]
        assert evs[-1].data["reason"] == "left"
        assert all(e.data["supervisor"] == "张班长" and e.source.kind == "service" for e in evs)
        r.emu.pbx.request_hangup(h.channel, 16)
        await h.wait()
        await r.ended(call_id)
        ticket = next(t for t in r.sink.store.tickets.values() if t.call_id == call_id)
        types = [e["type"] for e in ticket.events]
        assert [t for t in types if t.startswith("supervision.")] == [
            "supervision.joined", "supervision.mode", "supervision.mode", "supervision.left"]
        assert types.index("supervision.left") < types.index("call.ended")
        assert [e["seq"] for e in ticket.events] == list(range(1, len(types) + 1))


@pytest.mark.timeout(90)
async def test_the_call_ending_ends_the_supervisors_leg(tmp_path: Path, redis_url: str
                                                        ) -> None:
    async with rig(tmp_path, redis_url) as r:
        h, call_id = await r.agent_call()
        s = await r.svc.join(BOSS, call_id, "barge")
        await wait_status(r.svc, s.id, "active")
        r.emu.pbx.request_hangup(h.channel, 16)
        await h.wait()
        await wait_status(r.svc, s.id, "ended")
        assert s.reason == "call_ended"
        await r.spy_gone()  # ChanSpy's E option: the supervisor's leg ends
        assert [e.type for e in r.of_call(call_id)] == ["supervision.joined",
                                                        "supervision.left"]
        # and after it: a call that ended is refused
        await r.ended(call_id)
        with pytest.raises(CallNotLive, match="has ended"):
            await r.svc.join(BOSS, call_id, "listen")


@pytest.mark.timeout(90)
async def test_unanswered_phone_changes_nothing(tmp_path: Path, redis_url: str) -> None:
    async with rig(tmp_path, redis_url) as r:
        h, call_id = await r.agent_call()
        s = await r.svc.join(BOSS, call_id, "listen", phone="Local/1099@agent-local")
        async with asyncio.timeout(30):  # Originate's 30 s, 3 s at speed 10
            await r.svc.wait_for(lambda: s.status == "failed")
        assert s.reason == "not_answered"
        assert r.of_call(call_id) == [] and "ChanSpyStart" not in r.spy_events()
        await r.svc.close()  # its audit line is written
        audit = r.app[API].audit
        assert audit is not None
        (rec,) = [a for a in await audit.recent() if a["action"] == "supervision.failed"]
        assert (rec["name"], rec["target"], rec["result"]) == ("张班长", call_id,
                                                               "not_answered")
        assert not h.done.is_set() and r.app[PIPELINE].builder.model.call(call_id)


@pytest.mark.timeout(90)
async def test_bad_input_is_refused_and_nothing_is_sent(tmp_path: Path, redis_url: str
                                                        ) -> None:
    async with rig(tmp_path, redis_url) as r:
        h, call_id = await r.agent_call()
        model = r.app[PIPELINE].builder.model
        caller_channel = h.channel.name
        cases: list[tuple[Actor, dict[str, Any], type[SupervisionError], str]] = [
            (AGENT, {}, NotSupervisor, "may not listen"),
            (Actor("t9", "supervisor", "王"), {}, NotSupervisor, "not a supervisor"),
            (EN_ONLY, {}, OutsideSupervisedQueues, "does not supervise"),
            (BOSS, {"phone": "Local/2001@agent-local"}, NotSupervisorsPhone,
             "not one of"),
            (BOSS, {"channel": caller_channel}, NotAgentChannel, "not an agent's leg"),
            (BOSS, {"call_id": "1796521849.8"}, CallNotLive, "not in progress"),
        ]
        for actor, kw, err, text in cases:
            cid = kw.pop("call_id", call_id)
            with pytest.raises(err, match=text) as info:
                await r.svc.join(actor, cid, "listen", **kw)
            assert "/" in str(info.value) and any("\u4e00" <= c <= "\u9fff"
                                                  for c in str(info.value))
        assert r.svc.sessions.by_id == {}
        assert r.spy_channels() == [] and r.spy_channels("Local/2001@") == []
        assert model.call(call_id) is not None and not h.done.is_set()
        assert r.of_call(call_id) == []
