"""Missed-call callbacks (漏接回拨): every call abandoned in a queue and every callback
request made in the IVR becomes a durable job that calls the citizen back, within the
queue's working hours, and connects them to the queue at its head.

    service = CallbackService(config, redis, ami=lambda: client, emit=outbox.write,
                              definition=lambda: definition)
    pipeline.add_listener(service.on_call_events)  # queue.abandoned, callback.requested …
    consumers.append(service)                      # an AMI consumer: OriginateResponse
    async with service: ...                        # places due callbacks until closed

Flow (docs/callbacks.md):

1. ``queue.abandoned`` / ``callback.requested`` of a dialable number → the number's job
   of the day (:func:`ivr.callbacks.state.job_id`): created ``scheduled`` (event
   ``callback.scheduled``), due ``delay_s`` later or at the queue's next opening; a
   second missed call of that number the same day joins the same job.
2. A due job is claimed with a lease (:class:`ivr.jobs.LeasedJobs`): it is stored
   ``placing`` (``callback.placed``), then ``Originate`` is sent (async, ``Local/<number>@
   <dial context>``, on answer the rendered ``ivr-route`` at ``queue`` with
   ``IVR_QUEUE``/``IVR_PRIORITY`` — app_queue's ``QUEUE_PRIO`` puts the citizen at the
   head — and ``IVR_CALLBACK_JOB`` = the job id).
3. The ``OriginateResponse`` (matched by its ``Channel``, in whichever bridge process
   sees it first; the others find the job no longer ``placing``) or the synchronous
   ``Originate failed`` gives the outcome: answered (final), or no_answer / busy /
   failed, retried after a back-off until ``attempts``, then ``exhausted``.
4. The citizen reaching an agent on a call of their own cancels the job (``callback.
   cancelled``); while they wait in a queue the callback waits too.  An operator may
   cancel a job (``ivr callbacks cancel``, the API).

An attempt whose outcome nobody saw (every bridge was down until its lease ran out) is
counted failed and retried.  Nothing is ever placed twice for one attempt: the attempt is
stored before the ``Originate`` is sent, and a job is claimed by one process at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from ivr.ami.client import AMIClient
from ivr.ami.errors import AMIActionNotRetried, AMIConnectionError, AMIError
from ivr.ami.messages import Event, EventList, Response
from ivr.callbacks.errors import (
    JobBusy,
    JobFinished,
    UndialableNumber,
    UnknownJob,
    UnknownQueue,
)
from ivr.callbacks.state import Job, Origin, check_number, day_of, job_id, next_open, outcome_of
from ivr.callbacks.store import CallbackStore
from ivr.calls import variables as V
from ivr.config import Settings
from ivr.dialplan import model as m
from ivr.dialplan.hours import definition_is_open
from ivr.events.model import CallEvent
from ivr.log import event as log_event
from ivr.metrics import METRICS
from ivr.privacy import mask_number

log = logging.getLogger("ivr.callbacks")

CALLBACK_JOB_VAR = "IVR_CALLBACK_JOB"  # Originate Variable: the job an attempt belongs to
_LOCAL_SUFFIX = re.compile(r"-[0-9a-fA-F]+;\d$")
_CID_NUMBER = re.compile(r"<([^>]*)>")

Emit = Callable[[list[CallEvent]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CallbacksConfig:
    prefix: str = "ivr:events:callbacks"  # Redis keys ([events] stream_prefix + :callbacks)
    attempts: int = 3
    backoff_s: float = 600.0  # before attempt n+1: backoff_s * 2**(n-1), ≤ backoff_max_s
    backoff_max_s: float = 4 * 3600.0
    delay_s: float = 60.0
    timeout_s: float = 30.0
    dial_context: str = ""  # "" = the definition's settings.dial_context
    caller_id: str = '"12345" <12345>'
    priority: int = 100
    # where an answered callback goes: the rendered dialplan's queue entry point
    context: str = "ivr-route"
    exten: str = "s"
    label: str = "queue"
    lease_grace_s: float = 60.0  # a placing job is due again timeout_s + this later
    wait_on_call_s: float = 120.0  # the citizen is in a queue: look again this much later
    poll_s: float = 1.0
    keep_s: float = 2 * 86400.0  # final jobs are forgotten this long after they ended

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> CallbacksConfig:
        overrides.setdefault("prefix", f"{settings.events.stream_prefix}:callbacks")
        return cls(attempts=settings.callbacks_attempts, backoff_s=settings.callbacks_backoff_s,
                   delay_s=settings.callbacks_delay_s, timeout_s=settings.callbacks_timeout_s,
                   dial_context=settings.callbacks_dial_context,
                   caller_id=settings.callbacks_caller_id,
                   priority=settings.callbacks_priority, **overrides)

    @property
    def lease_s(self) -> float:
        return self.timeout_s + self.lease_grace_s

    @property
    def caller_number(self) -> str:
        """The number part of ``caller_id`` (``"12345" <12345>`` → ``12345``)."""
        found = _CID_NUMBER.search(self.caller_id)
        return (found.group(1) if found else self.caller_id).strip().strip('"')

    def backoff(self, attempts: int) -> float:
        return float(min(self.backoff_s * 2 ** max(attempts - 1, 0), self.backoff_max_s))


def dial_of(channel: str) -> str:
    """The Originate ``Channel`` an ``OriginateResponse``'s ``Channel`` stands for: the
    same string on failure, the created ``;1`` half (``Local/n@ctx-00000005;1``) on
    success (trace 10)."""
    return _LOCAL_SUFFIX.sub("", channel)


def _attempt_channels(rows: list[Event], dial: str, *, up: bool = False) -> list[Event]:
    """The ``;1`` halves of an attempt's Local channel in a ``CoreShowChannels`` list
    (``up``: those answered)."""
    return [e for e in rows
            if dial and (e.get("Channel") or "").startswith(dial + "-")
            and (e.get("Channel") or "").endswith(";1")
            and (not up or e.get("ChannelState") == "6")]


class CallbackService:
    """The jobs, their placing over the bridge's AMI client, and their call events."""

    def __init__(self, config: CallbacksConfig, redis: aioredis.Redis, *,
                 ami: Callable[[], AMIClient | None], emit: Emit,
                 definition: Callable[[], m.Definition],
                 greeting: Callable[[str], str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """``greeting(language)``: the Asterisk file of the greeting the citizen hears on
        answering (``zh/callback-greeting``), played by the dialplan's queue path
        (``IVR_PROMPT``) before the queue; None: no greeting."""
        self.config = config
        self._greeting = greeting
        self.store = CallbackStore(redis, config.prefix)
        self._ami = ami
        self._emit = emit
        self._definition = definition
        self.clock = clock
        self._intake: asyncio.Queue[CallEvent | Event] = asyncio.Queue()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._live: dict[str, set[str]] = {}  # number → its calls waiting in a queue
        self._callback_calls: dict[str, None] = {}  # Linkedids of answered callbacks
        self._next_purge = 0.0
        self._changed = asyncio.Condition()
        self.placed = 0
        self.reached = 0

    async def __aenter__(self) -> CallbackService:
        self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # -- AMI consumer (ivr.bridge.AmiConsumer) ----------------------------------------
    @property
    def consumed_ami_events(self) -> frozenset[str]:
        return frozenset({"OriginateResponse"})

    @property
    def consumed_variables(self) -> frozenset[str]:
        return frozenset()

    def on_ami_event(self, event: Event) -> None:
        if event.name == "OriginateResponse":
            self._intake.put_nowait(event)
            self._wakeup.set()

    async def resync(self, client: AMIClient) -> bool:
        """After every (re)connect: an attempt that was ringing while this process was
        not listening and whose channel is up now was answered (its OriginateResponse
        went to nobody).  The jobs themselves are in Redis."""
        placing = [j for j in await self.store.all() if j.state == "placing"]
        if not placing:
            return True
        rows = await self._channels(client)
        for job in placing:
            up = _attempt_channels(rows, job.dial, up=True)
            if up:
                await self._answered_meanwhile(job, up[0])
        return True

    async def _channels(self, client: AMIClient) -> list[Event]:
        listed = await client.send_action("CoreShowChannels", timeout=10.0)
        return listed.events if isinstance(listed, EventList) else []

    async def _answered_meanwhile(self, job: Job, channel: Event) -> None:
        linkedid = channel.get("Linkedid") or channel.get("Uniqueid") or ""
        self._callback_calls[linkedid] = None
        await self._outcome(job.id, job.dial, "answered", call_id=linkedid,
                            detail="answered while no bridge was listening (its channel is up)")

    # -- pipeline listener -------------------------------------------------------------
    def on_call_events(self, events: Sequence[CallEvent]) -> None:
        """Sync, never raises: keeps what concerns callbacks (stored by the worker)."""
        for ev in events:
            if ev.type in ("queue.abandoned", "callback.requested", "queue.joined",
                           "agent.connected", "call.ended"):
                self._intake.put_nowait(ev)
                self._wakeup.set()

    async def take(self, item: CallEvent | Event) -> None:
        """Act on one intake item (the durable step of the two inputs above)."""
        if isinstance(item, Event):
            await self._originate_response(item)
            return
        ev = item
        if ev.call_id in self._callback_calls:
            if ev.type == "call.ended":
                self._callback_calls.pop(ev.call_id, None)
            return
        number = ev.caller or ""
        if ev.type == "call.ended":
            for calls in self._live.values():
                calls.discard(ev.call_id)
            self._live = {n: c for n, c in self._live.items() if c}
            return
        if number == self.config.caller_number:
            return  # a callback's own call (its caller id is ours)
        if ev.type == "queue.joined":
            self._live.setdefault(number, set()).add(ev.call_id)
            return
        if ev.type == "agent.connected":
            self._live.get(number, set()).discard(ev.call_id)
            await self._citizen_reached(number, ev)
            return
        if ev.type == "queue.abandoned":
            self._live.get(number, set()).discard(ev.call_id)
            queue = str(ev.data.get("queue") or ev.routing.queue or self._general_queue())
            reason = "abandoned"
        else:  # callback.requested
            number = str(ev.data.get("number") or number)
            queue = ev.routing.queue or self._general_queue()
            reason = "requested"
        origin = Origin(ev.call_id, ev.dialled, ev.language, ev.routing.entry,
                        ev.call_started_at, anonymous=ev.routing.anonymous)
        try:
            await self.request(number, queue=queue, origin=origin, reason=reason)
        except UndialableNumber as exc:
            METRICS.inc("callbacks.undialable")
            log_event(log, logging.WARNING, "callbacks.undialable", call_id=ev.call_id,
                      queue=queue, error=str(exc).replace(number, mask_number(number)))

    # -- the API (CLI, HTTP) -----------------------------------------------------------
    async def request(self, number: str, *, queue: str, origin: Origin,
                      reason: str = "abandoned") -> Job:
        """The number's job of the day: created (scheduled) or, if it exists, this call
        joined to it.  Raises :class:`UndialableNumber` before anything is stored."""
        number = check_number(number)
        now = self.clock()
        jid = job_id(day_of(now), number)
        for _ in range(10):
            got = await self.store.get(jid)
            if got is None:
                due = self._opening(queue, now + self.config.delay_s)
                job = Job(id=jid, number=number, day=day_of(now), queue=queue, reason=reason,
                          origin=origin, created_at=now, due_at=due,
                          call_ids=(origin.call_id,))
                job = job.with_events(now, ("scheduled", {"due_at": due}))
                version = await self.store.put(job, None)
                if version is None:
                    continue
                log_event(log, logging.INFO, "callbacks.scheduled", job=jid, queue=queue,
                          number=mask_number(number), call_id=origin.call_id, due_at=due,
                          reason=reason)
                METRICS.inc("callbacks.scheduled")
                await self._flush(job, version)
                return job
            job, version = got
            if origin.call_id in job.call_ids:
                return job  # the same call seen again (a replay)
            if not job.active:
                log_event(log, logging.INFO, "callbacks.once_a_day", job=jid,
                          call_id=origin.call_id, state=job.state)
                return job
            joined = replace(job, call_ids=(*job.call_ids, origin.call_id))
            if await self.store.put(joined, version) is not None:
                log_event(log, logging.INFO, "callbacks.joined", job=jid,
                          call_id=origin.call_id)
                return joined
        raise RuntimeError(f"callback job {jid}: too many concurrent changes")

    async def schedule(self, number: str, *, queue: str | None = None, call_id: str = "",
                       by: str = "operator") -> Job:
        """A callback an operator promised (the API): ``number`` checked (dialable),
        ``queue`` (default the general queue) must be defined; nothing is sent to
        Asterisk now.  Raises :class:`UndialableNumber` / :class:`UnknownQueue` before
        anything is stored."""
        d = self._definition()
        queue = queue or d.settings.general_queue
        if queue not in d.queues:
            raise UnknownQueue(queue, sorted(d.queues))
        check_number(number)
        now = self.clock()
        origin = Origin(call_id or f"{by}-{uuid.uuid4().hex[:12]}", "", None, "", now)
        return await self.request(number, queue=queue, origin=origin, reason="operator")

    async def get(self, job_id_: str) -> Job:
        got = await self.store.get(job_id_)
        if got is None:
            raise UnknownJob(job_id_)
        return got[0]

    async def list(self, *, active_only: bool = False) -> list[Job]:
        jobs = await self.store.all()
        return [j for j in jobs if j.active] if active_only else jobs

    async def cancel(self, job_id_: str, *, by: str = "operator") -> Job:
        """Cancel a scheduled job (nothing is sent to Asterisk).  :class:`UnknownJob`,
        :class:`JobFinished` (already final) or :class:`JobBusy` (an attempt is ringing
        the citizen now) otherwise, nothing changed."""
        for _ in range(10):
            got = await self.store.get(job_id_)
            if got is None:
                raise UnknownJob(job_id_)
            job, version = got
            if not job.active:
                raise JobFinished(job_id_, job.state)
            if job.state == "placing":
                raise JobBusy(job_id_)
            done = await self._finish(job, version, "cancelled", by=by)
            if done is not None:
                return done
        raise JobBusy(job_id_)

    async def wait_for(self, job_id_: str, predicate: Callable[[Job], bool]) -> Job:
        """Until the job satisfies ``predicate`` (tests, the demo): looked at after each
        change made here, and every 0.2 s (another process may change it)."""
        async with self._changed:
            while True:
                got = await self.store.get(job_id_)
                if got is not None and predicate(got[0]):
                    return got[0]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.2)

    async def settled(self, live_calls: Callable[[], Collection[str]], within_s: float) -> bool:
        """Until no job is active and no answered callback's call is live any more
        (``live_calls``: the call ids in progress), at most ``within_s`` real seconds
        (``ivr demo``); False on timeout."""
        try:
            async with asyncio.timeout(within_s):
                while True:
                    jobs = await self.store.all()
                    live = set(live_calls())
                    if (self._intake.empty() and not any(j.active for j in jobs)
                            and not any(j.callback_call_id in live for j in jobs)):
                        return True
                    await asyncio.sleep(0.1)
        except TimeoutError:
            return False

    # -- placing -----------------------------------------------------------------------
    async def run_due(self) -> int:
        """Place every job due now (claimed one by one); returns how many were placed."""
        placed = 0
        while not self._stopping:
            got = await self.store.claim(self.clock(), self.config.lease_s)
            if got is None:
                break
            placed += await self._attempt(*got)
        return placed

    async def _attempt(self, job: Job, version: int) -> int:
        now = self.clock()
        cfg = self.config
        if job.state == "placing":  # its lease ran out: nobody here saw the outcome
            await self._lost_attempt(job, version, now)
            return 0
        if not job.active:
            await self.store.put(job, version)  # not due any more
            return 0
        ami = self._ami()
        if ami is None or not ami.connected:  # Asterisk unreachable: not an attempt
            await self.store.put(replace(job, due_at=now + max(cfg.poll_s, 5.0)), version)
            return 0
        if self._live.get(job.number):  # the citizen is waiting in a queue right now
            await self.store.put(replace(job, due_at=now + cfg.wait_on_call_s)
                                 .noted(now, "citizen in a queue"), version)
            return 0
        opening = self._opening(job.queue, now)
        if opening > now + 1:
            await self.store.put(replace(job, due_at=opening).noted(now, "queue closed"),
                                 version)
            return 0
        d = self._definition()
        context = cfg.dial_context or d.settings.dial_context
        language = job.origin.language or d.settings.default_language
        dial = f"Local/{job.number}@{context}"
        attempt = job.attempts + 1
        placing = replace(job, state="placing", attempts=attempt, placed_at=now, dial=dial,
                          due_at=now + cfg.lease_s).noted(now, f"attempt {attempt}")
        placing = placing.with_events(now, ("placed", {"attempt": attempt}))
        new_version = await self.store.put(placing, version)
        if new_version is None:
            return 0  # cancelled meanwhile
        await self.store.set_placing(dial, job.id)
        await self._flush(placing, new_version)
        self.placed += 1
        METRICS.inc("callbacks.placed")
        fields: dict[str, str | list[str]] = {
            "Channel": dial, "Context": cfg.context, "Exten": cfg.exten,
            "Priority": cfg.label, "Timeout": str(int(cfg.timeout_s * 1000)),
            "CallerID": cfg.caller_id, "Async": "true",
            "Variable": [f"{CALLBACK_JOB_VAR}={job.id}", f"{V.QUEUE}={job.queue}",
                         f"{V.PRIORITY}={cfg.priority}",
                         *([f"{V.LANGUAGE}={job.origin.language}"]
                           if job.origin.language else []),
                         *([f"{V.PROMPT}={self._greeting(language)}"]
                           if self._greeting is not None else [])]}
        log_event(log, logging.INFO, "callbacks.originate", job=job.id, attempt=attempt,
                  queue=job.queue, number=mask_number(job.number), context=context)
        try:
            reply = await ami.send_action("Originate", fields, timeout=10.0)
        except AMIActionNotRetried as exc:  # the connection dropped with it in flight
            log_event(log, logging.WARNING, "callbacks.originate_unknown", job=job.id,
                      error=str(exc))
            return 1
        except AMIConnectionError as exc:  # not connected: it was never sent
            await self._outcome(job.id, dial, "failed", detail=f"not sent: {exc}")
            return 1
        except AMIError as exc:
            # not known whether Asterisk queued it: its OriginateResponse, or the lease,
            # decides (never sent again before then)
            log_event(log, logging.WARNING, "callbacks.originate_unknown", job=job.id,
                      error=str(exc))
            return 1
        if isinstance(reply, Response) and not reply.success:
            # the synchronous failure reply (trace 10: "Originate failed"): no event follows
            await self._outcome(job.id, dial, "failed", detail=reply.message or "Error")
        return 1

    async def _lost_attempt(self, job: Job, version: int, now: float) -> None:
        """An attempt whose ``OriginateResponse`` nobody saw (the bridge restarted while
        it rang): Asterisk's live channels say what became of it — the attempt's ``;1``
        up (the citizen answered, the call goes on: answered), still ringing (wait), or
        gone (failed, retried)."""
        ami = self._ami()
        if ami is None or not ami.connected:
            await self.store.put(replace(job, due_at=now + max(self.config.poll_s, 5.0)),
                                 version)
            return
        try:
            rows = await self._channels(ami)
        except AMIError as exc:
            log_event(log, logging.WARNING, "callbacks.channels_unknown", job=job.id,
                      error=str(exc))
            await self.store.put(replace(job, due_at=now + 30.0), version)
            return
        mine = _attempt_channels(rows, job.dial)
        up = _attempt_channels(rows, job.dial, up=True)
        if up:
            await self._answered_meanwhile(job, up[0])
        elif mine:  # still ringing: its OriginateResponse comes
            await self.store.put(replace(job, due_at=now + self.config.lease_s), version)
        else:
            await self._outcome(job.id, job.dial, "failed",
                                detail="no OriginateResponse seen and no channel left")

    async def _originate_response(self, ev: Event) -> None:
        dial = dial_of(ev.get("Channel") or "")
        jid = await self.store.placing(dial)
        if jid is None:
            return  # not ours (another Originate of the bridge, or already applied)
        reason = ev.get("Reason")
        outcome = outcome_of(reason) if (ev.get("Response") or "") != "Success" else "answered"
        uniqueid = ev.get("Uniqueid") or ""
        if outcome == "answered" and uniqueid and uniqueid != "<unknown>":
            self._callback_calls[uniqueid] = None
            while len(self._callback_calls) > 10_000:
                self._callback_calls.pop(next(iter(self._callback_calls)))
        await self._outcome(jid, dial, outcome, detail=f"Reason {reason}",
                            call_id=uniqueid if outcome == "answered" else "")

    async def _outcome(self, jid: str, dial: str, outcome: str, *, detail: str = "",
                       call_id: str = "") -> None:
        """Apply the outcome of the attempt ``dial`` of job ``jid``, once (another process
        that saw it first leaves the job no longer ``placing``)."""
        cfg = self.config
        for _ in range(10):
            got = await self.store.get(jid)
            if got is None:
                return
            job, version = got
            if job.state != "placing" or job.dial != dial:
                return
            now = self.clock()
            data: dict[str, str | int | float | bool | None] = {"detail": detail}
            if outcome == "answered":
                new = replace(job, state="answered", finished_at=now, last_outcome=outcome,
                              callback_call_id=call_id, dial="")
                new = new.with_events(now, ("answered", {**data, "callback_call_id": call_id}))
            elif job.attempts >= cfg.attempts:
                new = replace(job, state="exhausted", finished_at=now, last_outcome=outcome,
                              dial="")
                new = new.with_events(now, (outcome, data),
                                      ("exhausted", {"attempts": job.attempts}))
            else:
                due = self._opening(job.queue, now + cfg.backoff(job.attempts))
                new = replace(job, state="scheduled", due_at=due, last_outcome=outcome,
                              dial="")
                new = new.with_events(now, (outcome, {**data, "retry_at": due}))
            new = new.noted(now, f"{outcome}: {detail}" if detail else outcome)
            new_version = await self.store.put(new, version)
            if new_version is None:
                continue
            await self.store.clear_placing(dial, jid)
            if outcome == "answered":
                self.reached += 1
            METRICS.inc(f"callbacks.{outcome}")
            log_event(log, logging.INFO if outcome == "answered" else logging.WARNING,
                      f"callbacks.{outcome}", job=jid, attempt=job.attempts, state=new.state,
                      detail=detail)
            await self._flush(new, new_version)
            return

    async def _citizen_reached(self, number: str, ev: CallEvent) -> None:
        """A new call of the citizen reached an agent: today's job is not needed."""
        try:
            number = check_number(number)
        except UndialableNumber:
            return
        jid = job_id(day_of(self.clock()), number)
        for _ in range(10):
            got = await self.store.get(jid)
            if got is None:
                return
            job, version = got
            if job.state != "scheduled" or ev.call_id in job.call_ids:
                return
            if await self._finish(job, version, "cancelled", by="citizen_called_again",
                                  call_id=ev.call_id) is not None:
                return

    async def _finish(self, job: Job, version: int, state: str, *, by: str,
                      call_id: str = "") -> Job | None:
        now = self.clock()
        new = replace(job, state=state, finished_at=now).noted(now, f"{state} by {by}")
        new = new.with_events(now, ("cancelled", {"by": by, "call": call_id or None}))
        new_version = await self.store.put(new, version)
        if new_version is None:
            return None
        METRICS.inc("callbacks.cancelled")
        log_event(log, logging.INFO, "callbacks.cancelled", job=job.id, by=by)
        return await self._flush(new, new_version)

    async def _flush(self, job: Job, version: int) -> Job:
        """Send the job's stored events, then forget them (if nobody changed the job
        meanwhile; else whoever did sends them again: same ids, the backend keeps one)."""
        if job.pending:
            await self._emit([CallEvent.loads(t) for t in job.pending])
            job = replace(job, pending=())
            await self.store.put(job, version)
        async with self._changed:
            self._changed.notify_all()
        return job

    # -- hours -------------------------------------------------------------------------
    def _general_queue(self) -> str:
        return self._definition().settings.general_queue

    def _opening(self, queue: str, ts: float) -> float:
        """``ts`` if the queue works then, else its next opening (the queue's ``hours``;
        a queue without hours works around the clock)."""
        d = self._definition()
        q = d.queues.get(queue)
        hours = q.hours if q is not None else None
        if not hours or hours not in d.hours:
            return ts

        def is_open(t: float) -> bool:
            return bool(definition_is_open(d, hours, dt.datetime.fromtimestamp(t, dt.UTC)))

        found = next_open(ts, is_open)
        return ts + 86400.0 if found is None else found

    # -- the loop ----------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="callbacks-worker")

    async def _run(self) -> None:
        while not self._stopping:
            try:
                while not self._intake.empty() and not self._stopping:
                    await self.take(self._intake.get_nowait())
                if not self._stopping:
                    await self.run_due()
                await self._purge_if_due()
            except RedisError as exc:
                log_event(log, logging.ERROR, "callbacks.redis_failed", error=repr(exc))
            except Exception as exc:  # noqa: BLE001 - the worker must outlive a bug
                log_event(log, logging.ERROR, "callbacks.worker_failed", error=repr(exc),
                          exc_info=True)
            if self._stopping or not self._intake.empty():
                continue
            self._wakeup.clear()
            try:
                async with asyncio.timeout(self.config.poll_s):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    async def _purge_if_due(self) -> None:
        now = self.clock()
        if now < self._next_purge:
            return
        self._next_purge = now + 3600.0
        n = await self.store.purge(now - self.config.keep_s)
        if n:
            log_event(log, logging.INFO, "callbacks.purged", jobs=n)

    async def close(self) -> None:
        """Stop after the step in progress; what was taken in is stored first.  Jobs stay
        in Redis for the next start (an attempt in progress: its OriginateResponse is
        applied by whichever bridge sees it, or the lease runs out)."""
        if self._task is None:
            return
        task, self._task = self._task, None
        self._stopping = True
        self._wakeup.set()
        await asyncio.gather(task, return_exceptions=True)
        while not self._intake.empty():
            try:
                await self.take(self._intake.get_nowait())
            except RedisError as exc:
                log_event(log, logging.ERROR, "callbacks.redis_failed", error=repr(exc))
                break


CALLBACKS = web.AppKey("ivr.callbacks", CallbackService)
