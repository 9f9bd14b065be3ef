"""Supervision over AMI: join a live agent call from the supervisor's phone, switch mode,
leave (:class:`SupervisionService`, the application's ``SUPERVISION`` part and one of the
bridge's AMI consumers).

Joining is what trace 13 records: ``Originate`` of the supervisor's phone into
``ChanSpy(<agent channel>,qES[w|B])`` with ``Async: true``; the spy is on when Asterisk
publishes ``ChanSpyStart`` for that leg, off at its ``ChanSpyStop``.  ChanSpy is given the
agent's *channel name* (``Local/1001@agent-local-00000005;1``), a prefix only that
channel has, where trace 13 gave the interface (``Local/1001@agent-local``), which would
also match ``Local/10011@…`` or the agent's next call (app_chanspy.c matches channel-name
prefixes).  Switching mode re-originates ChanSpy with the new options after hanging up the
old leg, as trace 13 does: ChanSpy's own ``d`` option (keys 4/5/6 on the supervisor's
phone) changes the mode with no AMI event, so the bridge could not audit or report it.
``E`` ends the supervisor's leg when the agent's channel hangs up; an unanswered phone
fails the Originate and nothing happens to the call.

Every input is checked against the policy and the live call model before anything is sent
to Asterisk (:mod:`ivr.supervision.errors`).  Each join, mode change and leave is a call
event of the agent's call (``supervision.joined``/``mode``/``left``, in the call's order:
reported synchronously as the AMI event is read) and an audit record (the API audits the
requests; this service the ends nobody asked for: the call ended, the phone hung up or did
not answer).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ivr.ami.client import AMIClient
from ivr.ami.errors import AMIError
from ivr.ami.messages import Event, Response
from ivr.calls.model import CallModel
from ivr.calls.steps import ServiceStep
from ivr.events.model import DataValue, Source
from ivr.log import event as log_event
from ivr.metrics import METRICS
from ivr.privacy import mask_number
from ivr.supervision.errors import (
    AsteriskRefused,
    AsteriskUnavailable,
    BadMode,
    CallNotLive,
    NotAgentChannel,
    NotSupervisor,
    NotSupervisorsPhone,
    OutsideSupervisedQueues,
    SessionConflict,
    UnknownSession,
)
from ivr.supervision.policy import SupervisionPolicy, Supervisor
from ivr.supervision.state import MODE_LABELS, MODES, Actor, Session, Sessions

log = logging.getLogger("ivr.supervision")

SUPERVISOR_ROLES = frozenset({"supervisor", "admin"})
ACTION_TIMEOUT_S = 10.0
Report = Callable[[ServiceStep], object]
Audit = Callable[[Actor, str, str, str, str], Awaitable[None]]


def _agent_prefix(interface: str) -> str:
    """``Local/1001@agent-local/n`` → ``Local/1001@agent-local-`` (its channels' names)."""
    return (interface[:-2] if interface.endswith("/n") else interface) + "-"


class SupervisionService:
    """Supervision sessions over the bridge's AMI client, on the live call model."""

    consumed_ami_events = frozenset({"OriginateResponse", "ChanSpyStart", "ChanSpyStop",
                                     "Hangup"})
    consumed_variables: frozenset[str] = frozenset()

    def __init__(self, *, ami: Callable[[], AMIClient | None],
                 model: Callable[[], CallModel | None],
                 policy: Callable[[], SupervisionPolicy],
                 report: Report | None = None, audit: Audit | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._ami = ami
        self._model = model
        self._policy = policy
        self._report = report
        self._audit = audit
        self.clock = clock
        self.sessions = Sessions()
        self._early: OrderedDict[str, Event] = OrderedDict()  # OriginateResponses read
        # before the Originate's reply reached us, by ActionID (bounded)
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- reading -----------------------------------------------------------------

    @property
    def policy(self) -> SupervisionPolicy:
        return self._policy()

    def supervisor(self, actor: Actor) -> Supervisor:
        if actor.role not in SUPERVISOR_ROLES:
            raise NotSupervisor(f"role {actor.role!r} may not listen to calls: supervisors "
                                f"and admins only / 角色 {actor.role!r} 无权监听通话（仅班长、"
                                "管理员）")
        sup = self.policy.supervisors.get(actor.name)
        if sup is None:
            raise NotSupervisor(f"{actor.name!r} is not a supervisor in the staff policy "
                                "([supervision.supervisors]) / 人员策略中没有班长 "
                                f"{actor.name!r}")
        return sup

    def agent_calls(self, actor: Actor) -> list[dict[str, Any]]:
        """The live calls with an agent connected that ``actor`` may listen to."""
        sup = self.supervisor(actor)
        model = self._model()
        out: list[dict[str, Any]] = []
        if model is None:
            return out
        for call in list(model.calls.values()):
            if not sup.supervises(call.queue):
                continue
            for chan in self._agent_channels(model, call.call_id):
                out.append({"call_id": call.call_id, "queue": call.queue,
                            "agent": call.agent, "channel": chan.name,
                            "caller": mask_number(call.caller) if call.caller else None,
                            "started_at": call.started_at})
        return sorted(out, key=lambda c: (c["started_at"], c["call_id"]))

    def visible_sessions(self, actor: Actor, agent_interface: str | None) -> list[Session]:
        """Supervisors and admins see every session; an agent sees the live sessions on
        its own calls only when the policy says its panel shows them."""
        if actor.role in SUPERVISOR_ROLES:
            return list(self.sessions.by_id.values())
        if not self.policy.show_agent or not agent_interface:
            return []
        prefix = _agent_prefix(agent_interface)
        return [s for s in self.sessions.live() if s.spyee.startswith(prefix)]

    def get(self, session_id: str) -> Session:
        s = self.sessions.by_id.get(session_id)
        if s is None:
            raise UnknownSession(f"no supervision session {session_id!r} / 没有监听会话 "
                                 f"{session_id!r}")
        return s

    @staticmethod
    def _agent_channels(model: CallModel, call_id: str) -> list[Any]:
        call = model.call(call_id)
        if call is None:
            return []
        if model.agent_of(call_id) is None:  # no agent connected (AgentConnect … Complete)
            return []
        return [c for c in model.channels_of(call_id)
                if c.uniqueid in call.agent_channels and c.state == "Up"]

    # -- acting ------------------------------------------------------------------

    def _client(self) -> AMIClient:
        client = self._ami()
        if client is None or not client.connected:
            raise AsteriskUnavailable("not connected to Asterisk: nothing was done / "
                                      "未连接 Asterisk：未执行任何操作")
        return client

    @staticmethod
    def _mode(mode: str) -> str:
        if mode not in MODES:
            raise BadMode(f"mode {mode!r}: one of {', '.join(MODES)} / 模式 {mode!r} 无效，"
                          "应为 listen（监听）、whisper（耳语）或 barge（强插）")
        return mode

    async def join(self, actor: Actor, call_id: str, mode: str = "listen", *,
                   phone: str | None = None, channel: str | None = None) -> Session:
        """Call the supervisor's phone into ChanSpy on the agent's leg of ``call_id``;
        every check first (nothing is sent on bad input).  The session is ``ringing``
        until the phone answers and the spy starts."""
        sup = self.supervisor(actor)
        self._mode(mode)
        if phone is None:
            phone = sup.phones[0]
        elif phone not in sup.phones:
            raise NotSupervisorsPhone(
                f"phone {phone!r} is not one of {actor.name!r}'s phones "
                f"({', '.join(sup.phones)}) / 电话 {phone!r} 不是班长 {actor.name!r} 的电话")
        model = self._model()
        call = None if model is None else model.call(call_id)
        if model is None or call is None:
            ended = model is not None and model.has_ended(call_id)
            raise CallNotLive(
                f"call {call_id!r} {'has ended' if ended else 'is not in progress'} / "
                f"通话 {call_id!r} {'已结束' if ended else '不存在或未在进行'}")
        agents = self._agent_channels(model, call_id)
        if channel is not None:
            chosen = next((c for c in agents if channel in (c.name, c.uniqueid)), None)
            if chosen is None:
                raise NotAgentChannel(
                    f"channel {channel!r} is not an agent's leg of call {call_id!r} "
                    f"(agent legs: {', '.join(c.name for c in agents) or 'none'}) / "
                    f"通道 {channel!r} 不是通话 {call_id!r} 的坐席通道")
        elif not agents:
            raise NotAgentChannel(f"call {call_id!r} has no agent connected / 通话 "
                                  f"{call_id!r} 尚未接通坐席")
        else:
            chosen = agents[0]
        if not sup.supervises(call.queue):
            raise OutsideSupervisedQueues(
                f"call {call_id!r} is in queue {call.queue!r}, which {actor.name!r} does not "
                f"supervise ({', '.join(sorted(sup.queues))}) / 通话所在队列 {call.queue!r} "
                f"不在班长 {actor.name!r} 的管辖范围")
        if chosen.name.startswith(phone + "-"):
            raise NotSupervisorsPhone(f"phone {phone!r} is the agent's own line / "
                                      f"电话 {phone!r} 是该坐席自己的线路")
        busy = self.sessions.of_actor(actor.name) or self.sessions.on_phone(phone)
        if busy is not None:
            raise SessionConflict(
                f"{actor.name!r} is already on call {busy.call_id!r} (session {busy.id}, "
                f"phone {busy.phone}): leave it first / 班长已在监听另一通话，请先退出")
        client = self._client()
        s = Session(id=secrets.token_hex(6), actor=actor, phone=phone, call_id=call_id,
                    queue=call.queue, agent=call.agent, spyee=chosen.name,
                    spyee_uid=chosen.uniqueid, mode=mode, created_at=self.clock())
        self.sessions.add(s)
        await self._originate(client, s)
        log_event(log, logging.INFO, "supervision.join", session=s.id, call=call_id,
                  supervisor=actor.name, mode=mode, phone=phone)
        return s

    async def switch(self, actor: Actor, session_id: str, mode: str) -> Session:
        """Change the mode: hang up the supervisor's ChanSpy leg, originate it again with
        the new options (trace 13); ``supervision.mode`` when the new leg spies."""
        s = self._own(actor, session_id)
        self._mode(mode)
        if s.status != "active":
            raise SessionConflict(f"session {s.id} is {s.status}, not active: wait for the "
                                  f"phone to answer / 会话 {s.id} 尚未接通，无法切换模式")
        if mode == s.mode:
            return s
        if self._model() is None or self._model_call(s) is None:
            raise CallNotLive(f"call {s.call_id!r} has ended / 通话 {s.call_id!r} 已结束")
        client = self._client()
        old = s.spyer
        s.switching_from, s.mode, s.status, s.spyer, s.action_id = (
            s.mode, mode, "ringing", None, None)
        self._notify()
        if old is not None:
            await self._hangup(client, old)
        await self._originate(client, s)
        log_event(log, logging.INFO, "supervision.switch", session=s.id, call=s.call_id,
                  supervisor=actor.name, mode=mode)
        return s

    async def leave(self, actor: Actor, session_id: str) -> Session:
        """Hang up the supervisor's leg; the agent's call goes on."""
        s = self._own(actor, session_id)
        if not s.live:
            raise SessionConflict(f"session {s.id} has already ended ({s.reason}) / 会话 "
                                  f"{s.id} 已结束")
        client = self._client()
        s.leaving = True
        target = s.spyer or f"/^{s.phone.replace('/', chr(92) + '/')}-/"
        if s.status == "ringing" and s.switching_from is None:
            self._finish(s, "failed", "left")  # never joined: no call event
        await self._hangup(client, target)
        return s

    def _own(self, actor: Actor, session_id: str) -> Session:
        s = self.get(session_id)
        self.supervisor(actor)
        if s.actor.name != actor.name and actor.role != "admin":
            raise NotSupervisor(f"session {s.id} is {s.actor.name!r}'s, not {actor.name!r}'s "
                                f"/ 会话 {s.id} 属于其他班长")
        return s

    def _model_call(self, s: Session) -> Any:
        model = self._model()
        return None if model is None else model.call(s.call_id)

    async def _originate(self, client: AMIClient, s: Session) -> None:
        fields = {"Channel": s.phone, "Application": "ChanSpy",
                  "Data": f"{s.spyee},{MODES[s.mode]}", "CallerID": self.policy.caller_id,
                  "Async": "true"}
        try:
            reply = await client.send_action("Originate", fields, timeout=ACTION_TIMEOUT_S)
        except AMIError as exc:
            self._fail_originate(s, "asterisk_error")
            raise AsteriskUnavailable(f"Originate to {s.phone} failed: {exc} / 呼叫班长电话失败"
                                      ) from exc
        if not isinstance(reply, Response) or not reply.success:
            message = reply.message if isinstance(reply, Response) else "?"
            self._fail_originate(s, "asterisk_refused")
            raise AsteriskRefused(f"Asterisk refused the Originate to {s.phone}: {message} / "
                                  f"Asterisk 拒绝呼叫班长电话：{message}")
        s.action_id = reply.get("ActionID")
        early = self._early.pop(s.action_id or "", None)
        if early is not None:
            self._originate_response(s, early)

    def _fail_originate(self, s: Session, reason: str) -> None:
        if s.switching_from is not None:
            self._left(s, reason, Source("ami", "Originate", ""))
        else:
            self._finish(s, "failed", reason)

    async def _hangup(self, client: AMIClient, channel: str) -> None:
        try:
            await client.send_action("Hangup", {"Channel": channel}, timeout=ACTION_TIMEOUT_S)
        except AMIError as exc:
            raise AsteriskUnavailable(f"Hangup of {channel} failed: {exc} / 挂断班长通道失败"
                                      ) from exc

    # -- AMI events ----------------------------------------------------------------

    def on_ami_event(self, event: Event) -> None:
        name = event.name
        if name == "OriginateResponse":
            aid = event.get("ActionID") or ""
            s = self.sessions.by_action(aid)
            if s is not None:
                self._originate_response(s, event)
            elif aid:
                self._early[aid] = event
                while len(self._early) > 64:
                    self._early.popitem(last=False)
        elif name == "ChanSpyStart":
            spyer = event.get("SpyerChannel") or ""
            s = self.sessions.starting(spyer, event.get("SpyeeChannel") or "")
            if s is not None:
                self._started(s, spyer, event)
        elif name == "ChanSpyStop":
            s = self.sessions.by_spyer(event.get("SpyerChannel") or "")
            if s is not None and s.status == "active":
                self._stopped(s, Source("ami", name, event.get("SpyerUniqueid") or ""))
        elif name == "Hangup":
            uid = event.get("Uniqueid") or ""
            chan = event.get("Channel") or ""
            for s in self.sessions.live():
                if s.spyee_uid == uid:
                    if s.status == "active" or s.switching_from is not None:
                        self._left(s, "call_ended", Source("ami", name, uid))
                    else:
                        self._finish(s, "failed", "call_ended")
                elif s.spyer == chan and s.status == "active":
                    self._stopped(s, Source("ami", name, uid))

    def _originate_response(self, s: Session, ev: Event) -> None:
        if (ev.get("Response") or "").lower() == "success":
            s.spyer = ev.get("Channel") or s.spyer
            self._notify()
            return
        reason = "not_answered"
        METRICS.inc("supervision.not_answered")
        log_event(log, logging.INFO, "supervision.not_answered", session=s.id,
                  phone=s.phone, reason=ev.get("Reason"))
        self._fail_originate(s, reason)

    def _started(self, s: Session, spyer: str, ev: Event) -> None:
        s.spyer = spyer
        s.status = "active"
        s.modes.append(s.mode)
        src = Source("ami", "ChanSpyStart", ev.get("SpyerUniqueid") or "")
        if s.switching_from is None:
            s.joined_at = self.clock()
            self._event(s, "supervision.joined", src, {})
        else:
            self._event(s, "supervision.mode", src, {"from": s.switching_from})
            s.switching_from = None
        self._notify()

    def _stopped(self, s: Session, src: Source) -> None:
        model = self._model()
        spyee_live = model is not None and s.spyee_uid in model.channels.channels
        reason = ("left" if s.leaving else "supervisor_hung_up" if spyee_live
                  else "call_ended")
        self._left(s, reason, src)

    def _left(self, s: Session, reason: str, src: Source) -> None:
        self._event(s, "supervision.left", src, {"reason": reason})
        self._finish(s, "ended", reason)

    def _finish(self, s: Session, status: str, reason: str) -> None:
        if not s.live:
            return
        s.status, s.reason, s.ended_at = status, reason, self.clock()
        s.switching_from = None
        METRICS.inc(f"supervision.{status}")
        log_event(log, logging.INFO, f"supervision.{status}", session=s.id, call=s.call_id,
                  supervisor=s.actor.name, reason=reason)
        if self._audit is not None and not (reason == "left" and s.leaving):
            # what nobody asked for through the API is audited here (a leave was)
            self._spawn(self._audit(s.actor, f"supervision.{status}", s.call_id, reason,
                                    f"session {s.id} phone {s.phone} mode {s.mode}"))
        self._notify()

    def _event(self, s: Session, type_: str, src: Source, extra: dict[str, DataValue]
               ) -> None:
        if self._report is None:
            return
        data: dict[str, DataValue] = {
            "session": s.id, "supervisor": s.actor.name, "mode": s.mode,
            "mode_label": MODE_LABELS[s.mode], "phone": s.phone, "agent": s.agent,
            "agent_channel": s.spyee, "shown_to_agent": self.policy.show_agent, **extra}
        try:
            self._report(ServiceStep(s.call_id, "supervision", type_, data,
                                     uniqueid=src.uniqueid, ts=self.clock()))
        except Exception as exc:  # noqa: BLE001 - a lost event must not stop the bridge
            METRICS.inc("supervision.report_errors")
            log_event(log, logging.ERROR, "supervision.report_failed", type=type_,
                      error=repr(exc))

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception as exc:  # noqa: BLE001 - logged loudly, the call goes on
                log_event(log, logging.ERROR, "supervision.audit_failed", error=repr(exc))

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Until ``predicate()`` holds (checked after every change of a session)."""
        while not predicate():
            await self._changed.wait()

    async def resync(self, client: AMIClient) -> bool:
        """After a reconnect: a session whose legs Asterisk no longer lists ended while
        the bridge was not listening."""
        model = self._model()
        for s in self.sessions.live():
            if model is not None and s.spyee_uid not in model.channels.channels:
                self._finish(s, "ended", "lost")
        return True

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


SUPERVISION = web.AppKey("ivr.supervision", SupervisionService)
