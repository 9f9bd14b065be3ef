"""Transfers of a call in progress (转接), as an agent asks for them: blind
(``BlindTransfer`` on the agent's leg, or ``Redirect`` of the caller's channel), attended
(``Atxfer`` on the agent's leg: consult, then complete — or back to the caller when the
target declines or hangs up) and one-key (110 …: attended, completed by the bridge as
soon as the target answers; busy or no answer: the caller is back with the agent).

Every request is checked against the live call model (:mod:`ivr.calls`: the call is in
progress, an agent talks with the caller in a bridge, the target resolves to a dialable
number) before anything is sent: bad input raises a
:class:`~ivr.transfers.errors.TransferInputError` and nothing happens to the call.  Each
step is a call event of the call (``transfer.requested``, ``transfer.answered``, then
one of ``transfer.completed`` / ``transfer.returned`` / ``transfer.failed``; Asterisk's own
``BlindTransfer``/``AttendedTransfer`` stay ``transfer.blind``/``transfer.attended``), so
the ticket follows the transfer under the same call id.

:class:`TransferService` is also an AMI consumer (``ivr.bridge.AmiConsumer``): the bridge
feeds it, after the call-event pipeline, the events that tell how an attended transfer
goes (:mod:`ivr.transfers.state`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ivr.ami.client import AMIClient
from ivr.ami.messages import Event, Response
from ivr.calls import variables as V
from ivr.calls.channels import Channel
from ivr.calls.model import CallModel
from ivr.calls.steps import ServiceStep
from ivr.dialplan.render import ROUTE_CONTEXT
from ivr.log import event as log_event
from ivr.privacy import mask_number
from ivr.transfers.errors import (
    AsteriskRefused,
    CallNotActive,
    NoAgent,
    NoTransfer,
    NotReady,
    TransferInProgress,
)
from ivr.transfers.state import Change, Transfer, Transfers
from ivr.transfers.targets import DialTarget, Resolver

log = logging.getLogger("ivr.transfers")

ACTION_TIMEOUT_S = 10.0
SERVICE = "transfers"
BLIND_METHODS = {"blindtransfer": "BlindTransfer", "redirect": "Redirect", "route": "Route"}
ROUTE_RING_S = 30  # a Route transfer rings the target this long before the fallback queue
ROUTE_LABEL = "transfer"  # the rendered [ivr-route]'s transfer step (Dial, else the queue)

Reporter = Callable[[ServiceStep], object]
"""Takes the transfer's call events in order (the pipeline's ``submit_service_step``)."""


class TransferService:
    """Blind, attended and one-key transfers over the bridge's AMI client."""

    consumed_ami_events = frozenset({"Newchannel", "Newstate", "BridgeEnter", "Unhold",
                                     "Hangup", "AttendedTransfer", "DialBegin", "DialEnd",
                                     "QueueCallerJoin"})
    consumed_variables: frozenset[str] = frozenset()

    def __init__(self, ami: Callable[[], AMIClient | None] | AMIClient, model: CallModel,
                 resolver: Resolver, report: Reporter, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._ami = ami if callable(ami) and not isinstance(ami, AMIClient) else (lambda: ami)
        self.model = model
        self.resolver = resolver
        self.report = report
        self.clock = clock
        self.state = Transfers()
        self.history: list[Transfer] = []  # the last transfers that ended (bounded)
        self.counts: dict[str, int] = {}  # "<kind>.<outcome>" → how many
        self.listeners: list[Callable[[Change], None]] = []
        self._tick = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()  # auto-completions in flight

    # -- checks (no I/O) ---------------------------------------------------------------

    def _client(self) -> AMIClient:
        client = self._ami()
        if client is None or not client.connected:
            raise NotReady()
        return client

    def legs(self, call_id: str) -> tuple[Channel, Channel, str, str | None]:
        """The caller's channel, the agent's leg in the same bridge, the bridge and the
        agent (member name); raises :class:`CallNotActive` or :class:`NoAgent`."""
        model = self.model
        call = model.call(call_id)
        if call is None:
            raise CallNotActive(call_id, model.has_ended(call_id))
        channels = model.channels_of(call_id)
        caller = next((c for c in channels if c.agent), None)
        if caller is None:
            raise NoAgent(call_id)
        bridge = model.channels.bridges.get(caller.bridge or "")
        if bridge is None:
            raise NoAgent(call_id, "the caller is not in a bridge with the agent (on hold "
                          "or in a conference)")
        agent_leg = next((c for uid in bridge.channels if uid in call.agent_channels
                          and (c := model.channels.get(uid)) is not None), None)
        if agent_leg is None:
            raise NoAgent(call_id, "the agent's leg is not in the caller's bridge")
        return caller, agent_leg, bridge.id, caller.agent

    def _check_free(self, call_id: str) -> None:
        t = self.state.active(call_id)
        if t is not None:
            raise TransferInProgress(call_id, t.kind, t.ref)

    # -- operations --------------------------------------------------------------------

    async def blind(self, call_id: str, target: str, *, method: str = "blindtransfer",
                    kind: str = "blind") -> Transfer:
        """Send the caller to ``target`` (a directory entry or a number) and release the
        agent.  ``method``: ``blindtransfer`` (the agent's leg transfers its peer,
        ``BlindTransfer``) or ``redirect`` (the caller's channel is sent, ``Redirect``):
        over when Asterisk accepts it (``transfer.completed``) or refuses it
        (``transfer.failed``, :class:`AsteriskRefused` raised); ``route``: the caller's
        channel goes through the published dialplan's transfer step (``[ivr-route]``
        ``transfer``: ``Dial`` with a timeout), so a target that does not answer never
        loses the caller — back in the target's fallback queue (or the call's own):
        completed when the target answers, failed (busy, no answer) once the caller is
        back in the queue; :meth:`wait` for it."""
        action = BLIND_METHODS.get(method.lower())
        if action is None:
            raise ValueError(f"unknown blind transfer method {method!r} (blindtransfer, "
                             "redirect)")
        dial = self.resolver.resolve(target)
        self._check_free(call_id)
        caller, agent_leg, bridge, agent = self.legs(call_id)
        client = self._client()
        t = self._new(call_id, kind, action, target, dial, caller, agent_leg, bridge, agent)
        if action == "Route":
            await self._route(client, t)
            return t
        if action == "BlindTransfer":
            fields = {"Channel": agent_leg.name, "Context": dial.context, "Exten": dial.number}
        else:
            fields = {"Channel": caller.name, "Context": dial.context, "Exten": dial.number,
                      "Priority": "1"}
        self._emit(t, "requested")
        await self._send(client, t, action, fields)
        self._finish(t, "completed", None)
        return t

    async def _route(self, client: AMIClient, t: Transfer) -> None:
        call = self.model.call(t.call_id)
        t.fallback_queue = (self.resolver.fallback_queue(t.target)
                            or (call.queue if call is not None else None)
                            or self.resolver.general_queue())
        self.state.add(t)  # before the Redirect: its events can come before its response
        self._emit(t, "requested")
        # the transfer step's inputs on the caller's channel (nothing audible changes), then
        # the caller goes there; the agent's leg, left alone, hangs up
        for name, value in ((V.TRANSFER, t.target.number), (V.TIMEOUT, str(ROUTE_RING_S)),
                            (V.PROMPT, ""), (V.RESUME, ""),
                            (V.OPERATOR_QUEUE, t.fallback_queue)):
            await self._send(client, t, "Setvar", {"Channel": t.caller_channel,
                                                   "Variable": name, "Value": value})
        await self._send(client, t, "Redirect", {"Channel": t.caller_channel,
                                                 "Context": ROUTE_CONTEXT, "Exten": "s",
                                                 "Priority": ROUTE_LABEL})

    async def attended(self, call_id: str, target: str, *, kind: str = "attended",
                       auto_complete: bool = False, dial: DialTarget | None = None
                       ) -> Transfer:
        """Consult ``target`` (``Atxfer`` on the agent's leg: the caller is held, the
        target rings).  Then :meth:`complete` (or the agent hangs up) hands the caller
        over; :meth:`cancel`, or the target declining, returns the agent to the caller.
        Returns at once; :meth:`wait` for the outcome."""
        dial = dial or self.resolver.resolve(target)
        self._check_free(call_id)
        caller, agent_leg, bridge, agent = self.legs(call_id)
        client = self._client()
        t = self._new(call_id, kind, "Atxfer", target, dial, caller, agent_leg, bridge, agent)
        t.auto_complete = auto_complete
        self.state.add(t)  # before the action: its events can come before its response
        self._emit(t, "requested")
        await self._send(client, t, "Atxfer", {"Channel": agent_leg.name,
                                               "Context": dial.context, "Exten": dial.number})
        return t

    async def one_key(self, call_id: str, target: str = "110") -> Transfer:
        """One-key transfer (一键转接) to an emergency service: the target is called at once
        and the caller handed over as soon as it answers; busy or no answer → the caller is
        back with the agent (``transfer.failed``)."""
        dial = self.resolver.one_key(target)
        return await self.attended(call_id, target, kind="one_key", auto_complete=True,
                                   dial=dial)

    async def complete(self, call_id: str) -> Transfer:
        """Hand the caller to the target the agent is consulting (the agent's leg leaves
        the call: features.conf's hang-up completion)."""
        t = self._consulting(call_id, "complete")
        if t.phase != "answered":
            raise NoTransfer(call_id, "the target has not answered yet: nothing to hand over",
                             "转接目标尚未接听")
        t.completing = True
        await self._send(self._client(), t, "Hangup", {"Channel": t.agent_channel,
                                                       "Cause": "16"}, fail=False)
        return t

    async def cancel(self, call_id: str) -> Transfer:
        """Give up the attended transfer: the target's leg is hung up, the agent is back
        with the caller (``transfer.returned`` or, before an answer, ``transfer.failed``
        with reason ``cancelled``)."""
        t = self._consulting(call_id, "cancel")
        if t.target_channel is None:
            raise NoTransfer(call_id, "the target's leg has not been placed yet",
                             "转接目标尚未呼出")
        t.cancelled = True
        await self._send(self._client(), t, "Hangup", {"Channel": t.target_channel,
                                                       "Cause": "16"}, fail=False)
        return t

    def _consulting(self, call_id: str, what: str) -> Transfer:
        t = self.state.active(call_id)
        if t is None:
            if self.model.call(call_id) is None:
                raise CallNotActive(call_id, self.model.has_ended(call_id))
            raise NoTransfer(call_id, f"no attended transfer in progress to {what}",
                             "没有进行中的转接")
        return t

    def active(self, call_id: str) -> Transfer | None:
        return self.state.active(call_id)

    async def wait(self, t: Transfer, *, phase: str | None = None,
                   timeout: float = 30.0) -> Transfer:  # noqa: ASYNC109
        """Until ``t`` is over (or reaches ``phase``: ``ringing``, ``answered``)."""
        order = ("requested", "ringing", "answered", "done")
        want = order.index(phase) if phase is not None else order.index("done")
        async with asyncio.timeout(timeout):
            while not t.done and order.index(t.phase) < want:
                tick = self._tick
                await tick.wait()
        return t

    # -- internals -----------------------------------------------------------------------

    def _new(self, call_id: str, kind: str, method: str, ref: str, dial: DialTarget,
             caller: Channel, agent_leg: Channel, bridge: str, agent: str | None) -> Transfer:
        return Transfer(id=uuid.uuid4().hex[:12], call_id=call_id, kind=kind, method=method,
                        ref=ref, target=dial, agent=agent, agent_uid=agent_leg.uniqueid,
                        agent_channel=agent_leg.name, caller_uid=caller.uniqueid,
                        caller_channel=caller.name, bridge=bridge,
                        requested_at=self.clock())

    async def _send(self, client: AMIClient, t: Transfer, action: str,
                    fields: dict[str, str], *, fail: bool = True) -> None:
        try:
            reply = await client.send_action(action, fields, timeout=ACTION_TIMEOUT_S)
        except Exception as exc:
            if fail and not t.done:
                self._finish(t, "failed", "not_sent")
            raise AsteriskRefused(action, fields.get("Channel", ""), repr(exc)) from exc
        if isinstance(reply, Response) and reply.success:
            return
        message = reply.message if isinstance(reply, Response) else repr(reply)
        log_event(log, logging.WARNING, "transfers.refused", call=t.call_id, action=action,
                  message=message)
        if fail and not t.done:
            self._finish(t, "failed", "refused", message=message)
        raise AsteriskRefused(action, fields.get("Channel", ""), message or "")

    def _finish(self, t: Transfer, outcome: str, reason: str | None, **extra: Any) -> None:
        if t.done:
            return
        change = self.state.finish(t, outcome, reason)
        self._changed(change, **extra)

    def _emit(self, t: Transfer, what: str, **extra: Any) -> None:
        data = t.data()
        now = self.clock()
        if what != "requested":
            data["elapsed_s"] = round(now - t.requested_at, 3)
        if what in ("answered", "completed", "returned", "failed"):
            data["target_channel"] = t.target_channel
        if what in ("returned", "failed"):
            data["reason"] = t.reason
            data["cause"] = t.target_cause
        data.update(extra)
        routing: dict[str, str] = {}
        if what == "completed":  # the ticket says where the call went
            routing["tag"] = f"transferred:{t.target.id or t.target.number}"
            if t.target.kind == "department" and t.target.id:
                routing["department"] = t.target.id
        self.report(ServiceStep(t.call_id, SERVICE, f"transfer.{what}", data,
                                uniqueid=t.agent_uid, routing=routing, ts=now))
        log_event(log, logging.INFO, f"transfers.{what}", call=t.call_id, kind=t.kind,
                  method=t.method, target=mask_number(t.target.number), entry=t.target.id,
                  reason=t.reason)

    def _changed(self, change: Change, **extra: Any) -> None:
        t = change.transfer
        if change.what != "ringing":
            self._emit(t, change.what, **extra)
        if t.done:
            key = f"{t.kind}.{t.outcome}"
            self.counts[key] = self.counts.get(key, 0) + 1
            self.history.append(t)
            del self.history[:-1000]
        for listener in self.listeners:
            try:
                listener(change)
            except Exception as exc:  # noqa: BLE001 - a listener must not stop the bridge
                log_event(log, logging.ERROR, "transfers.listener_failed", error=repr(exc))
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    # -- the AMI consumer ------------------------------------------------------------------

    def on_ami_event(self, event: Event) -> None:
        for change in self.state.feed(event, self.clock()):
            self._changed(change)
            t = change.transfer
            if change.what == "answered" and t.auto_complete and not t.completing:
                t.completing = True
                task = asyncio.get_running_loop().create_task(self._auto_complete(t))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _auto_complete(self, t: Transfer) -> None:
        try:
            await self._send(self._client(), t, "Hangup", {"Channel": t.agent_channel,
                                                           "Cause": "16"}, fail=False)
        except Exception as exc:  # noqa: BLE001 - logged; the agent can still complete
            log_event(log, logging.WARNING, "transfers.auto_complete_failed", call=t.call_id,
                      error=repr(exc))

    async def resync(self, client: AMIClient) -> bool:
        """After a (re)connect (the call model has been rebuilt before): a transfer whose
        caller or agent leg is gone failed (``lost``)."""
        for change in self.state.forget_missing(set(self.model.channels.channels)):
            self._changed(change)
        return True

    async def close(self) -> None:
        """Stop: the auto-completions still in flight are cancelled."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def summary(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


TRANSFERS = web.AppKey("ivr.transfers", TransferService)
