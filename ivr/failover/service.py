"""Several bridges for one Asterisk: one owner writes its call events, hot standbys
listen and take over without a gap (the application's ``CALL_EVENTS`` part when
``[events] failover`` is on).

Why an owner and not every bridge writing the same events: the builder numbers a call's
events (``seq``) from everything it saw of the call — AMI events *and* the IVR steps that
reach only the bridge whose FastAGI server ran them — and a bridge that joins later
adopts calls from ``CoreShowChannels`` with ``seq`` from 1.  Two builders would number the
same call differently.  So one bridge numbers, and the others continue its numbering
from the checkpoints it stored:

* **Owner lease, fenced** (:mod:`ivr.failover.lease`): the bridge holding it builds and
  stores the call events of its Asterisk; its outbox writes only while the fence holds
  its token, so a paused owner that lost the lease writes nothing more.
* **Positions**: the owner asks Asterisk for a mark (``UserEvent: IvrMark``) every
  ``MARK_EVERY_S``; each stored batch records, in the same Lua call, the position of the
  last AMI event it holds ("the n-th event after mark m", the same event in every
  bridge's stream, :mod:`ivr.failover.tape`) and the last IVR step applied.
* **Hot standby**: connected to the same AMI, it keeps what it hears since the marks
  (the tape) and no call state.  When the owner's lease lapses it takes it (new token),
  makes sure it has read everything Asterisk sent before (a mark of its own, awaited),
  loads the checkpoints, replays the events after the stored position, then lists the
  live channels (``CoreShowChannels``) as after any (re)connect.  A standby is *ready*
  when the stored position's mark is on its tape (nothing before it is missing).
* **IVR steps** go through Redis (``{prefix}:owner:{server}:steps``): whichever bridge's
  FastAGI server ran the step adds it; the owner applies them in order and stores the
  id of the last one with its events.

A bridge whose writes were fenced off, or which could not renew its lease, forgets its
calls and becomes a standby again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from ivr.ami.messages import Event
from ivr.calls.steps import IvrStep
from ivr.events.builder import CONSUMED_AMI_EVENTS, CONSUMED_VARIABLES
from ivr.events.feed import SWEEP_EVERY_S, CallEventFeed
from ivr.events.outbox import OutboxFenced
from ivr.events.pipeline import CallEventPipeline
from ivr.failover.lease import Acquired, OwnerLease
from ivr.failover.tape import MARK_EVENT, Tape, format_position, parse_position
from ivr.log import event as log_event
from ivr.metrics import METRICS

if TYPE_CHECKING:
    from ivr.ami.client import AMIClient

log = logging.getLogger("ivr.failover")

MARK_EVERY_S = 0.2
OWNER_TAPE_SEGMENTS = 100  # the owner keeps ~20 s of its own tape (for after a demotion)
BARRIER_TIMEOUT_S = 5.0
_ERRORS = (RedisError, OSError, asyncio.TimeoutError, ConnectionError)


def step_json(step: IvrStep) -> str:
    return json.dumps({"call_id": step.call_id, "uniqueid": step.uniqueid,
                       "kind": step.kind, "entry": step.entry, "step": step.step,
                       "data": dict(step.data), "ts": step.ts},
                      ensure_ascii=False, separators=(",", ":"))


def step_from_json(text: str | bytes) -> IvrStep:
    obj: Any = json.loads(text)
    return IvrStep(call_id=str(obj["call_id"]), uniqueid=str(obj["uniqueid"]),
                   kind=str(obj["kind"]), entry=str(obj["entry"]), step=str(obj["step"]),
                   data={str(k): str(v) for k, v in obj["data"].items()},
                   ts=float(obj["ts"]))


class FailoverFeed(CallEventFeed):
    """The call-event pipeline as an AMI consumer, owner or hot standby (see above)."""

    consumed_ami_events = CONSUMED_AMI_EVENTS | {"UserEvent"}
    consumed_variables = CONSUMED_VARIABLES

    def __init__(self, pipeline: CallEventPipeline, *, consumer: str,
                 lease_ms: int = 3000, mark_every_s: float = MARK_EVERY_S,
                 sweep_every_s: float | None = SWEEP_EVERY_S) -> None:
        super().__init__(pipeline, sweep_every_s=sweep_every_s)
        self.server = pipeline.server
        self.consumer = consumer
        keys = pipeline.keys
        self.lease = OwnerLease(pipeline.redis, keys, pipeline.server, consumer, lease_ms)
        self.mark_every_s = mark_every_s
        self.tape = Tape()
        self.role = "standby"  # standby | taking-over | owner
        self.ready = False
        self.takeovers = 0
        self.replayed = 0  # AMI events replayed from the tape at takeovers
        self.steps_key = keys.owner(pipeline.server, "steps")
        self.bridges_key = keys.owner(pipeline.server, "bridges")
        self._variables = frozenset(CONSUMED_VARIABLES)
        self._client: AMIClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._steps_task: asyncio.Task[None] | None = None
        self._mark_seq = 0
        self._barriers: dict[str, asyncio.Future[None]] = {}
        self._step_stored = ""  # id of the last step whose events are stored
        self._last_renew = 0.0
        self._free_since: float | None = None
        self._round = asyncio.Event()  # set after every round of _run (role, readiness)
        pipeline.step_relay = self._relay_step
        pipeline.outbox.on_fenced = lambda: self._demote("fenced")

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> FailoverFeed:
        await super().__aenter__()
        self._task = asyncio.create_task(self._run(), name=f"failover-{self.server or '-'}")
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._stop_steps()
        await super().close()
        try:
            if self.role == "owner":
                await self.pipeline.flush()
                await self.lease.release()  # a standby takes over at once
            await self.pipeline.redis.hdel(self.bridges_key, self.consumer)
        except (*_ERRORS, OutboxFenced) as exc:
            log_event(log, logging.WARNING, "failover.release_failed", error=repr(exc))
        self.role = "standby"

    # -- AMI, in wire order ------------------------------------------------------------

    def on_ami_event(self, event: Event) -> None:
        name = event.name
        if name == "UserEvent":
            if event.get("UserEvent") != MARK_EVENT:
                return
            mark = event.get("Mark") or ""
            if not mark:
                return
            at = self.tape.on_mark(mark)
            barrier = self._barriers.pop(mark, None)
            if barrier is not None and not barrier.done():
                barrier.set_result(None)
            if self.role == "owner":
                self._track(self.pipeline.commit_positions({"ami": format_position(at)}))
            return
        if name == "VarSet" and (event.get("Variable") or "").lstrip("_") not in self._variables:
            return  # what the event filter lets through (before it is set: everything)
        pos = self.tape.record(event)
        if self.role == "owner":
            self._track(self.pipeline.submit_ami_event(
                event, None if pos is None else {"ami": format_position(pos)}))

    async def resync(self, client: AMIClient) -> bool:
        """After every (re)connect: what was missed cannot be replayed, the tape restarts
        at the next mark; an owner lists the live channels (as a single bridge does)."""
        self._client = client
        self.tape.reset()
        self.ready = False
        if self.role == "owner":
            return await super().resync(client)
        return True

    def _stored(self, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and isinstance(fut.exception(), OutboxFenced):
            self._pending.discard(fut)
            return
        super()._stored(fut)

    # -- IVR steps ---------------------------------------------------------------------

    async def _relay_step(self, step: IvrStep) -> None:
        """The IVR's step reporter: into Redis, for the owner (never raises)."""
        try:
            await self.pipeline.redis.xadd(self.steps_key, {"s": step_json(step)})
        except _ERRORS as exc:
            METRICS.inc("failover.step_relay_failed")
            log_event(log, logging.ERROR, "failover.step_relay_failed", kind=step.kind,
                      error=repr(exc))

    async def _read_steps(self, start: str) -> None:
        last = start or "0-0"
        redis = self.pipeline.redis
        trimmed = ""
        while self.role == "owner":
            try:
                res: Any = await redis.xread({self.steps_key: last}, count=200, block=500)
                for _stream, entries in res or []:
                    for raw_id, fields in entries:
                        eid = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                        last = eid
                        raw = fields.get(b"s", fields.get("s"))
                        try:
                            step = step_from_json(raw)
                        except (ValueError, KeyError, TypeError) as exc:
                            log_event(log, logging.ERROR, "failover.bad_step", id=eid,
                                      error=repr(exc))
                            continue
                        if self.role != "owner":
                            return
                        fut = self.pipeline.submit_step(step, {"step": eid})
                        if fut is not None:
                            self._track(fut)
                            fut.add_done_callback(self._step_done_cb(eid))
                if self._step_stored and self._step_stored != trimmed:
                    trimmed = self._step_stored
                    await redis.xtrim(self.steps_key, minid=trimmed)
            except _ERRORS as exc:
                log_event(log, logging.WARNING, "failover.steps_read_failed", error=repr(exc))
                await asyncio.sleep(0.2)

    def _step_done_cb(self, eid: str) -> Callable[[asyncio.Future[None]], None]:
        def done(fut: asyncio.Future[None]) -> None:
            if not fut.cancelled() and fut.exception() is None:
                self._step_stored = eid
        return done

    async def _stop_steps(self) -> None:
        task, self._steps_task = self._steps_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- ownership ---------------------------------------------------------------------

    async def _run(self) -> None:
        renew_every = self.lease.lease_ms / 3000
        while True:
            try:
                if self.role == "owner" and not (self._client and self._client.connected):
                    # this owner hears nothing: a connected standby should write instead
                    await self.lease.release()
                    self._demote("AMI connection lost")
                if self.role == "owner":
                    now = time.monotonic()
                    if now - self._last_renew >= renew_every:
                        if await self.lease.renew():
                            self._last_renew = now
                        else:
                            self._demote("lease lost")
                    if self.role == "owner":
                        await self._mark()
                        self.tape.keep_last(OWNER_TAPE_SEGMENTS)
                elif self.role == "standby":
                    await self._check_ready()
                    client = self._client
                    # a standby that is not ready (its tape lacks the owner's stored
                    # position) leaves a free lease to a ready one for one lease more
                    free = self.ready or await self._free_for(time.monotonic())
                    if free and client is not None and client.connected:
                        acquired = await self.lease.acquire()
                        if acquired is not None:
                            await self._take_over(client, acquired)
                await self._publish()
                self._round.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the next round retries
                METRICS.inc("failover.round_failed")
                log_event(log, logging.WARNING, "failover.round_failed", role=self.role,
                          error=repr(exc))
            await asyncio.sleep(self.mark_every_s)  # the marks' period

    async def _free_for(self, now: float) -> bool:
        """The lease has been free for a whole lease period (seen by this bridge)."""
        if await self.lease.owner() is not None:
            self._free_since = None
            return False
        if self._free_since is None:
            self._free_since = now
        return now - self._free_since >= self.lease.lease_ms / 1000

    async def wait_until(self, predicate: Callable[[FailoverFeed], bool]) -> None:
        """Until ``predicate(self)`` holds after a round (role, readiness …)."""
        while not predicate(self):
            self._round.clear()
            await self._round.wait()

    async def _mark(self) -> str | None:
        client = self._client
        if client is None or not client.connected:
            return None
        self._mark_seq += 1
        mark = f"{self.consumer}.{self.lease.token}.{self._mark_seq}"
        await client.send_action("UserEvent", {"UserEvent": MARK_EVENT, "Mark": mark},
                                 timeout=5)
        return mark

    async def _check_ready(self) -> None:
        pos = parse_position((await self.lease.positions()).get("ami"))
        self.ready = pos is not None and self.tape.covers(pos[0])
        if self.ready and pos is not None:
            self.tape.trim_before(pos[0])  # stored by the owner: never replayed

    async def _take_over(self, client: AMIClient, acquired: Acquired) -> None:
        self.role = "taking-over"
        started = time.monotonic()
        try:
            # everything Asterisk sent before now is on the tape once our own mark is
            mark = f"{self.consumer}.{acquired.token}.barrier"
            barrier: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._barriers[mark] = barrier
            await client.send_action("UserEvent", {"UserEvent": MARK_EVENT, "Mark": mark},
                                     timeout=BARRIER_TIMEOUT_S)
            try:
                await asyncio.wait_for(barrier, BARRIER_TIMEOUT_S)
            except TimeoutError:
                log_event(log, logging.WARNING, "failover.barrier_timeout", mark=mark)
            calls = await self.pipeline.load_checkpoints()
        except BaseException:
            self.role = "standby"
            await self.lease.release()
            raise
        # from here to the end: synchronous, no AMI event slips in between
        builder = self.pipeline.builder
        builder.reset()
        for call in calls:
            builder.restore(call)
        self.pipeline.outbox.guard(self.lease.fence_key, acquired.token, self.lease.pos_key)
        stored = parse_position(acquired.positions.get("ami"))
        replay, covered = self.tape.after(stored)
        self.role = "owner"
        self.ready = False
        self.takeovers += 1
        self._last_renew = started
        for pos, event in replay:
            self._track(self.pipeline.submit_ami_event(event, {"ami": format_position(pos)}))
        self.replayed += len(replay)
        METRICS.inc("failover.takeovers")
        level = logging.INFO if covered or stored is None else logging.WARNING
        log_event(log, level, "failover.took_over", server=self.server, token=acquired.token,
                  calls=len(calls), replayed=len(replay), covered=covered,
                  stored=None if stored is None else format_position(stored),
                  ms=round((time.monotonic() - started) * 1000, 1))
        if stored is not None and not covered:
            METRICS.inc("failover.gap_possible")
        self._steps_task = asyncio.create_task(
            self._read_steps(acquired.positions.get("step", "0-0")),
            name=f"failover-steps-{self.server or '-'}")
        # the live channels and internal legs, as after any (re)connect
        if not await super().resync(client):
            log_event(log, logging.WARNING, "failover.resync_failed", server=self.server)

    def _demote(self, why: str) -> None:
        """No longer the owner: forget the calls (the new owner continues them)."""
        if self.role != "owner":
            return
        self.role = "standby"
        self.ready = False
        self.pipeline.builder.reset()
        self.pipeline.outbox.drop_pending(OutboxFenced(f"ownership lost ({why})"))
        task, self._steps_task = self._steps_task, None
        if task is not None:
            task.cancel()
        METRICS.inc("failover.demoted")
        log_event(log, logging.WARNING, "failover.demoted", server=self.server, reason=why)

    async def _publish(self) -> None:
        await self.pipeline.redis.hset(self.bridges_key, self.consumer, json.dumps({
            "role": self.role, "ready": self.ready, "token": self.lease.token,
            "tape_events": self.tape.events, "takeovers": self.takeovers,
            "replayed": self.replayed, "updated": time.time()}))
