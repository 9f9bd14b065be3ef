"""Three-way calls (三方通话) on the live call model, over the bridge's AMI client.

An agent brings a directory entry or a number into its call::

    svc = app[THREEWAY]
    leg = await svc.add(call_id, "market")           # or "020-1234 5678", "interp-en",
                                                      # "@interpreter" (the caller's language)
    outcome = await svc.wait(call_id, leg.leg)        # answered / failed (+ fallback)
    await svc.mute(call_id, leg.leg)                  # ConfbridgeMute / Unmute
    await svc.drop(call_id, leg.leg)                  # ConfbridgeKick (or hang up if ringing)
    await svc.leave(call_id)                          # the agent leaves; the others go on

How (docs/threeway.md): the first ``add`` moves the caller and the agent together into
ConfBridge ``<call id>`` with one ``Redirect`` (trace 02/12; they keep talking there, so
the caller is never left in silence and the call recording on the caller's channel goes
on), then originates ``Local/<number>@ivr-threeway-leg`` into the same conference with
a ``Timeout`` and ``IVR_TW_LEG=<call>/<leg>`` on both halves (rendered contexts
``[ivr-threeway]`` / ``[ivr-threeway-leg]``; an optional announcement is played to the
party before it joins).  The pure state (:mod:`ivr.threeway.state`) follows the AMI
events and says what happens next; this module sends the actions and emits the call
events (``threeway.requested``, ``answered`` with the department for the ticket,
``failed`` with the fallback, ``dropped``, ``hungup``, ``agent_left``; the builder adds
``started``/``joined``/``left``/``ended``/``muted``/``unmuted`` from ConfBridge's own
events).

Every request is checked first — the call in progress and with an agent, the target (the
directory's errors), the conference not full, no leg still ringing — and refused with
an :class:`~ivr.threeway.errors.ThreeWayInputError` before anything is sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ivr.ami.client import AMIClient
from ivr.ami.messages import Event, EventList, Response
from ivr.calls import variables as V
from ivr.calls.model import CallModel
from ivr.dialplan import model as m
from ivr.dialplan.render import THREEWAY_CONTEXT, THREEWAY_LEG_CONTEXT
from ivr.directory import DialTarget, fallback_for, interpreter_for, resolve
from ivr.log import event as log_event
from ivr.metrics import METRICS
from ivr.privacy import mask_number
from ivr.threeway.errors import (
    AgentWouldLeaveCallerAlone,
    AlreadyIn,
    AsteriskRefused,
    BadAnnouncement,
    CallNotFound,
    ConferenceFull,
    LegRinging,
    NoAgent,
    NoInterpreter,
    NoThreeWay,
    NotInstalled,
    NotYourCall,
    UnknownParty,
)
from ivr.threeway.state import (
    CONSUMED_AMI_EVENTS,
    CONSUMED_VARIABLES,
    Effect,
    Leg,
    Party,
    Session,
    ThreeWays,
)

log = logging.getLogger("ivr.threeway")

Emit = Callable[[str, str, Mapping[str, Any], Mapping[str, str], str], None]
"""(call id, event type, data, routing facts, source uniqueid): one call event in the
call's order (the application passes the pipeline's service-step path)."""

_PROMPT_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
ACTION_TIMEOUT_S = 10.0
INTERPRETER = "@interpreter"
"""The target that means: the interpreter desk of the caller's language."""
INSTALLED_TTL_S = 60.0
"""How long a check that Asterisk has the three-way context is trusted."""
MAX_OUTCOMES = 10_000
"""Outcomes of legs remembered for :meth:`ThreeWayService.wait` (oldest forgotten)."""


@dataclass(frozen=True)
class ThreeWayConfig:
    max_parties: int = 4
    """Caller, agent and two more (a department and an interpreter)."""
    ring_timeout_s: float = 30.0
    """How long an added party's leg rings (Originate ``Timeout``)."""
    caller_id: str = "12345"
    """The number an added party sees."""
    caller_name: str = "12345 三方通话"


@dataclass(frozen=True)
class LegResult:
    """What became of a request: ``ringing`` (placed), ``up`` (answered, in the
    conference) or ``failed`` (``reason``: closed, no-answer, busy, failed, caller-gone,
    cancelled) with the ``fallback`` to offer ({fallback_kind, fallback}) if any."""

    call_id: str
    leg: str
    state: str
    target: str | None
    kind: str
    number: str
    label: str
    conference: str
    reason: str = ""
    fallback: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "leg": self.leg, "state": self.state,
                "target": self.target, "kind": self.kind, "number": self.number,
                "label": self.label, "conference": self.conference, "reason": self.reason,
                "fallback": dict(self.fallback) or None}


def _result(session: Session, leg: Leg) -> LegResult:
    return LegResult(session.call_id, leg.id, leg.state, leg.target, leg.kind, leg.number,
                     leg.label, session.conference, leg.reason, leg.fallback)


class ThreeWayService:
    """The slice's service and one of the bridge's AMI consumers (it follows the
    conferences and legs it made)."""

    consumed_ami_events = CONSUMED_AMI_EVENTS
    consumed_variables = CONSUMED_VARIABLES

    def __init__(self, *, ami: Callable[[], AMIClient | None],
                 model: Callable[[], CallModel], definition: Callable[[], m.Definition],
                 emit: Emit, config: ThreeWayConfig | None = None,
                 prompt_exists: Callable[[str, str], str | None] | None = None,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        self._ami = ami
        self._model = model
        self._definition = definition
        self._emit = emit
        self.config = config or ThreeWayConfig()
        self._prompt_exists = prompt_exists
        self.clock = clock
        self.state = ThreeWays()
        self._outcomes: dict[tuple[str, str], asyncio.Future[LegResult]] = {}
        self._done: OrderedDict[tuple[str, str], LegResult] = OrderedDict()  # bounded
        self._tasks: set[asyncio.Task[None]] = set()
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}  # per call: lock, users
        self._installed_at = -INSTALLED_TTL_S

    # -- requests ------------------------------------------------------------------------

    async def add(self, call_id: str, target: str, *, agent: str | None = None,
                  announce: str | None = None, timeout_s: float | None = None) -> LegResult:
        """Bring ``target`` (a directory id or a number) into call ``call_id``: placed
        (``ringing``), or ``failed`` at once with reason ``closed`` and the fallback when
        the target is outside its hours.  Raises before anything is sent on bad input."""
        # one request per call at a time (its checks stay true until it is sent); calls
        # do not wait for each other
        lock, users = self._locks.setdefault(call_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                return await self._add(call_id, target, agent, announce, timeout_s)
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[call_id]

    async def _add(self, call_id: str, target: str, agent: str | None,
                   announce: str | None, timeout_s: float | None) -> LegResult:
        definition = self._definition()
        session = self._session_for_add(call_id, agent)
        now = self.clock() if self.clock is not None else None
        if target.strip() == INTERPRETER:
            target = self._interpreter(definition, call_id)
        dial = resolve(definition, target, now=now)  # DirectoryError: nothing sent
        entry_announce = dial.entry.announce if dial.entry is not None else None
        announce_file = self._announcement(definition, announce or entry_announce)
        if session is None:
            session = self._new_session(call_id, agent)
        else:
            ringing = session.ringing()
            if ringing is not None:
                raise LegRinging(call_id, ringing.id)
            same = next((leg for leg in session.legs.values()
                         if leg.live and leg.number == dial.number), None)
            if same is not None:
                raise AlreadyIn(call_id, dial.number, same.id)
        if session.parties() >= self.config.max_parties:
            raise ConferenceFull(call_id, session.parties(), self.config.max_parties)
        leg = self._leg(session, dial, definition, now)
        requested = {**leg.data(), "conference": session.conference, "agent":
                     session.agent_name, "open_now": dial.open_now}
        if not dial.open_now:  # outside its hours: not dialled, the fallback offered
            leg.state, leg.reason = "failed", "closed"
            self._emit(call_id, "threeway.requested", requested, {}, "")
            self._emit(call_id, "threeway.failed",
                       {**leg.data(), "reason": "closed", **leg.fallback}, {}, "")
            session.legs[leg.id] = leg  # (a new session stays unopened: nothing moved)
            self._settle(call_id, leg)  # its outcome, for wait()
            return _result(session, leg)
        client = self._client()
        if call_id not in self.state.sessions:
            # a Redirect into a context Asterisk does not have would drop the caller
            await self._installed(client, session.conference)
        self._emit(call_id, "threeway.requested", requested, {}, "")
        if call_id not in self.state.sessions:
            self.state.open(session)
            try:
                await self._redirect(client, session)
            except BaseException:
                self.state.close(session)
                self._emit(call_id, "threeway.failed",
                           {**leg.data(), "reason": "failed", **leg.fallback}, {}, "")
                raise
        session.legs[leg.id] = leg
        self._outcomes[(call_id, leg.id)] = asyncio.get_running_loop().create_future()
        timeout = self.config.ring_timeout_s if timeout_s is None else timeout_s
        fields: dict[str, Any] = {
            "Channel": f"Local/{dial.number}@{THREEWAY_LEG_CONTEXT}",
            "Context": THREEWAY_CONTEXT, "Exten": session.conference, "Priority": "1",
            "Timeout": str(int(timeout * 1000)), "Async": "true",
            "CallerID": f'"{self.config.caller_name}" <{self.config.caller_id}>',
            "Variable": [f"{V.TW_LEG}={call_id}/{leg.id}",
                         f"{V.TW_ANNOUNCE}={announce_file}"],
        }
        reply = await client.send_action("Originate", fields, timeout=ACTION_TIMEOUT_S)
        if isinstance(reply, Response) and not reply.success:
            leg.state, leg.reason = "failed", "failed"
            self._emit(call_id, "threeway.failed",
                       {**leg.data(), "reason": "failed", **leg.fallback}, {}, "")
            self._settle(call_id, leg)
            self._run(self.state.alone(session))
            raise AsteriskRefused("Originate", call_id, reply.message or "")
        METRICS.inc("threeway.legs_placed")
        log_event(log, logging.INFO, "threeway.leg_placed", call_id=call_id, leg=leg.id,
                  target=leg.target, number=mask_number(leg.number))
        return _result(session, leg)

    async def wait(self, call_id: str, leg: str) -> LegResult:
        """The leg's outcome once it answered or failed (at once if known)."""
        fut = self._outcomes.get((call_id, leg))
        if fut is not None:
            return await asyncio.shield(fut)
        known = self._done.get((call_id, leg))
        if known is None:
            session = self.state.sessions.get(call_id)
            raise UnknownParty(call_id, leg, [] if session is None else session.names())
        return known

    async def drop(self, call_id: str, leg_id: str) -> None:
        """Take a party out: kicked from the conference, or hung up while it rings."""
        session = self._session(call_id)
        leg = session.legs.get(leg_id)
        if leg is None or not leg.live:
            raise UnknownParty(call_id, leg_id, session.names())
        client = self._client()
        if leg.state == "ringing":
            self._run([e for e in self._cancel(session, leg)])
            return
        assert leg.party is not None
        leg.kicked = True
        await self._send(client, call_id, "ConfbridgeKick",
                         {"Conference": session.conference, "Channel": leg.party.channel})

    async def mute(self, call_id: str, party: str, on: bool = True) -> None:
        """Mute (or unmute) a party of the conference: a leg id, ``caller`` or ``agent``."""
        session = self._session(call_id)
        who = session.party(party)
        if who is None:
            raise UnknownParty(call_id, party, session.names())
        client = self._client()
        await self._send(client, call_id, "ConfbridgeMute" if on else "ConfbridgeUnmute",
                         {"Conference": session.conference, "Channel": who.channel})
        who.muted = on

    async def leave(self, call_id: str, agent: str | None = None) -> None:
        """The agent leaves; the caller and the parties go on (the recording too)."""
        session = self._session(call_id)
        if agent is not None and session.agent_name not in (None, agent):
            raise NotYourCall(call_id, agent)
        who = session.party("agent")
        if who is None:
            raise UnknownParty(call_id, "agent", session.names())
        if not any(leg.state == "up" for leg in session.legs.values()):
            raise AgentWouldLeaveCallerAlone(call_id)
        client = self._client()
        await self._send(client, call_id, "ConfbridgeKick",
                         {"Conference": session.conference, "Channel": who.channel})

    def agent_channel(self, call_id: str) -> str | None:
        """The channel of the call's agent (its three-way call's, or the one bridged with
        the caller now); None when there is none (the request will say why)."""
        session = self.state.sessions.get(call_id)
        if session is not None:
            return None if session.agent is None else session.agent.channel
        try:
            return self._connected(call_id, None)[1].channel
        except NoAgent:
            return None

    def status(self, call_id: str) -> dict[str, Any] | None:
        """The three-way call of ``call_id`` (None: none)."""
        s = self.state.sessions.get(call_id)
        if s is None:
            return None
        return {"call_id": s.call_id, "conference": s.conference, "agent": s.agent_name,
                "parties": s.names(),
                "legs": [_result(s, leg).to_json() for leg in s.legs.values()]}

    # -- checks --------------------------------------------------------------------------

    def _client(self) -> AMIClient:
        client = self._ami()
        if client is None:
            raise NoThreeWay("-")  # pragma: no cover - the part starts after the bridge
        return client

    def _session(self, call_id: str) -> Session:
        session = self.state.sessions.get(call_id)
        if session is None or session.ending:
            model = self._model()
            if call_id not in model.calls:
                raise CallNotFound(call_id, model.has_ended(call_id))
            raise NoThreeWay(call_id)
        return session

    def _session_for_add(self, call_id: str, agent: str | None) -> Session | None:
        model = self._model()
        if call_id not in model.calls:
            raise CallNotFound(call_id, model.has_ended(call_id))
        session = self.state.sessions.get(call_id)
        if session is not None:
            if session.ending:
                raise CallNotFound(call_id, True)
            if session.agent is None or session.agent.left:
                raise NoAgent(call_id, "the agent has left the three-way call / 坐席已退出")
            if agent is not None and session.agent_name not in (None, agent):
                raise NotYourCall(call_id, agent)
            return session
        self._connected(call_id, agent)  # raises when there is no agent
        return None

    def _connected(self, call_id: str, agent: str | None) -> tuple[Party, Party, str]:
        """The caller's channel, the agent's channel it is bridged with, the agent."""
        model = self._model()
        caller = next((c for c in model.channels_of(call_id) if c.agent), None)
        if caller is None:
            raise NoAgent(call_id, "no agent is connected / 没有坐席接通")
        if agent is not None and caller.agent != agent:
            raise NotYourCall(call_id, agent)
        bridge = model.channels.bridges.get(caller.bridge or "")
        peers = [] if bridge is None else [u for u in bridge.channels if u != caller.uniqueid]
        peer = model.channels.get(peers[0]) if len(peers) == 1 else None
        if peer is None:
            raise NoAgent(call_id, "the caller is not bridged with the agent / 来电者未与坐席"
                          "接通")
        return (Party("caller", caller.name, caller.uniqueid),
                Party("agent", peer.name, peer.uniqueid), caller.agent or "")

    def _new_session(self, call_id: str, agent: str | None) -> Session:
        caller, agent_party, name = self._connected(call_id, agent)
        return Session(call_id, call_id, caller, agent_party, agent_name=name)

    def _interpreter(self, definition: m.Definition, call_id: str) -> str:
        """The interpreter desk of the caller's language (the call's, from the IVR)."""
        call = self._model().calls.get(call_id)
        language = (call.language if call is not None else None) or ""
        desk = interpreter_for(definition, language)
        if desk is None:
            raise NoInterpreter(call_id, language)
        return desk.name

    def _announcement(self, definition: m.Definition, announce: str | None) -> str:
        if not announce:
            return ""
        if not _PROMPT_RE.fullmatch(announce):
            raise BadAnnouncement(announce)
        language = definition.settings.default_language
        if self._prompt_exists is None:
            return f"{language}/{announce}"
        found = self._prompt_exists(announce, language)
        if found is None:
            raise BadAnnouncement(announce)
        return found

    def _leg(self, session: Session, dial: DialTarget, definition: m.Definition,
             now: dt.datetime | None) -> Leg:
        offer = fallback_for(definition, dial, now=now)
        department = dial.id if dial.kind == "department" else None
        return Leg(session.new_leg_id(), dial.id, dial.kind, dial.number, dial.label,
                   department, offer.as_data() if offer is not None else {})

    # -- actions -------------------------------------------------------------------------

    async def _installed(self, client: AMIClient, conference: str) -> None:
        """Whether the published dialplan has ``[ivr-threeway]`` (asked once a minute)."""
        now = time.monotonic()
        if now - self._installed_at < INSTALLED_TTL_S:
            return
        reply = await client.send_action(
            "Command", {"Command": f"dialplan show {conference}@{THREEWAY_CONTEXT}"},
            timeout=ACTION_TIMEOUT_S)
        response = reply.response if isinstance(reply, EventList) else reply
        lines = response.getall("Output")
        if not response.success or not any("ConfBridge(" in line for line in lines):
            raise NotInstalled(THREEWAY_CONTEXT)
        self._installed_at = now

    async def _redirect(self, client: AMIClient, session: Session) -> None:
        assert session.agent is not None
        conf = session.conference
        await self._send(client, session.call_id, "Redirect", {
            "Channel": session.caller.channel, "ExtraChannel": session.agent.channel,
            "Context": THREEWAY_CONTEXT, "Exten": conf, "Priority": "1",
            "ExtraContext": THREEWAY_CONTEXT, "ExtraExten": conf, "ExtraPriority": "1"})

    async def _send(self, client: AMIClient, call_id: str, action: str,
                    fields: Mapping[str, Any]) -> Response | EventList:
        reply = await client.send_action(action, fields, timeout=ACTION_TIMEOUT_S)
        if isinstance(reply, Response) and not reply.success:
            raise AsteriskRefused(action, call_id, reply.message or "")
        return reply

    def _cancel(self, session: Session, leg: Leg) -> list[Effect]:
        leg.state, leg.reason = "failed", "cancelled"
        out = [Effect("hangup", session.call_id, channel=name)
               for name in leg.channels.values()]
        out.append(Effect("emit", session.call_id, "threeway.failed",
                          {**leg.data(), "reason": "cancelled"}))
        out.append(Effect("settle", session.call_id, leg=leg))
        return out

    # -- AMI events ----------------------------------------------------------------------

    def on_ami_event(self, event: Event) -> None:
        effects = self.state.feed(event)
        if effects:
            self._run(effects)

    async def resync(self, client: AMIClient) -> bool:
        """After a (re)connect: forget the sessions whose conference Asterisk no longer
        has (it ended while the bridge was away); in the others, whoever is no longer
        listed (``ConfbridgeList``) left meanwhile — a caller gone ends the conference,
        a caller left alone is let go, as when it is heard."""
        if not self.state.sessions:
            return True
        reply = await client.send_action("ConfbridgeListRooms", timeout=ACTION_TIMEOUT_S)
        rooms = ({e.get("Conference") for e in reply.events}
                 if isinstance(reply, EventList) else set())
        for session in list(self.state.sessions.values()):
            if session.conference not in rooms:
                self.state.close(session)
                for leg in session.legs.values():
                    if leg.state == "ringing":
                        leg.state, leg.reason = "failed", "lost"
                    self._settle(session.call_id, leg)
                continue
            listed = await client.send_action("ConfbridgeList",
                                              {"Conference": session.conference},
                                              timeout=ACTION_TIMEOUT_S)
            present = ({e.get("Uniqueid") or "" for e in listed.events}
                       if isinstance(listed, EventList) else set())
            self._run(self.state.reconcile(session, present))
        return True

    def _run(self, effects: list[Effect]) -> None:
        for e in effects:
            if e.kind == "emit":
                try:
                    self._emit(e.call_id, e.type, e.data, e.routing, e.channel)
                except Exception:  # noqa: BLE001 - the call goes on without the event
                    METRICS.inc("threeway.emit_failed")
                    log.exception("threeway.emit_failed")
            elif e.kind == "settle" and e.leg is not None:
                self._settle(e.call_id, e.leg)
            elif e.kind == "hangup" and e.channel:
                self._spawn(self._quietly(e.call_id, "Hangup", {"Channel": e.channel}))
            elif e.kind == "end":
                self._spawn(self._quietly(e.call_id, "ConfbridgeKick",
                                          {"Conference": e.channel, "Channel": "all"}))

    def _settle(self, call_id: str, leg: Leg) -> None:
        fut = self._outcomes.pop((call_id, leg.id), None)
        result = LegResult(call_id, leg.id, leg.state, leg.target, leg.kind, leg.number,
                           leg.label, call_id, leg.reason, leg.fallback)
        self._done[(call_id, leg.id)] = result
        while len(self._done) > MAX_OUTCOMES:
            self._done.popitem(last=False)
        if fut is not None and not fut.done():
            fut.set_result(result)

    async def _quietly(self, call_id: str, action: str, fields: Mapping[str, Any]) -> None:
        client = self._ami()
        if client is None:
            return
        try:
            reply = await client.send_action(action, fields, timeout=ACTION_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - logged; the state follows the events
            log_event(log, logging.WARNING, "threeway.action_failed", call_id=call_id,
                      action=action, error=repr(exc))
            return
        if isinstance(reply, Response) and not reply.success:
            log_event(log, logging.INFO, "threeway.action_refused", call_id=call_id,
                      action=action, message=reply.message)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for fut in self._outcomes.values():
            if not fut.done():
                fut.cancel()


THREEWAY = web.AppKey("ivr.threeway", ThreeWayService)
