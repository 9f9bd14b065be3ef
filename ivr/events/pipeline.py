"""What the bridge wires in: AMI events and IVR steps → builder → durable outbox.

    pipeline = CallEventPipeline(redis_url, config)
    await pipeline.start()
    await pipeline.on_ami_event(event)      # for every AMI Event
    await pipeline.on_ivr_step(step)        # a StepReporter for the IVR runtime
    ...
    await pipeline.close()                  # flushes what is still in memory

``on_ami_event`` returns once the call events it produced are in Redis.  A reader that
must not wait for Redis per event uses :meth:`submit_ami_event` (ordering is fixed when
it is called; the returned future says when the events are stored).  Delivery is the
:class:`ivr.events.pusher.Pusher`'s job, in this process or in ``ivr events push``.

Durable call state: every call the builder changed is checkpointed in
``{prefix}:calls`` in the same script call as its new events (see
:mod:`ivr.events.outbox`); :meth:`start` resumes the calls found there, so a restarted
bridge continues each call in progress with the same ids and the next seq.  After each
AMI (re)connect its AMI consumer (:class:`ivr.events.feed.CallEventFeed`) calls
:meth:`resync_mark` / :meth:`submit_resync` with the live channels
(``CoreShowChannels``) to end the calls that hung up while nobody was listening and adopt
those that started meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis

from ivr.ami.messages import Event
from ivr.calls.state import CallState
from ivr.calls.steps import IvrStep, ServiceStep
from ivr.events.builder import BuilderConfig, CallEventBuilder
from ivr.events.config import EventsConfig
from ivr.events.model import CallEvent
from ivr.events.outbox import (
    Outbox,
    OutboxStatus,
    Positions,
    check_partitions,
    check_store,
    ensure_groups,
    keys_for,
    read_status,
)
from ivr.log import event as log_event
from ivr.metrics import METRICS
from ivr.redisconn import connect as redis_connect

log = logging.getLogger("ivr.events.pipeline")

# At most this many calls are resumed from checkpoints (a bound on start-up memory and
# time; far above the calls a bridge has in progress).
MAX_RESUMED_CALLS = 200_000


class CallEventPipeline:
    def __init__(
        self,
        redis_url: str | None = None,
        config: EventsConfig | None = None,
        *,
        builder_config: BuilderConfig | None = None,
        clock: Callable[[], float] = time.time,
        durable_state: bool = True,
        server: str = "",
        resume: bool = True,
    ) -> None:
        cfg = config or EventsConfig()
        if redis_url:
            cfg = cfg.with_(redis_url=redis_url)
        self.config = cfg.require("redis_url")
        self.keys = keys_for(self.config)
        self.durable_state = durable_state
        self.server = server  # the Asterisk server whose calls these are ("": the only one)
        self.resume = resume  # False: a standby (ivr/failover) loads checkpoints on takeover
        self.builder = CallEventBuilder(builder_config, clock=clock,
                                        track_changes=durable_state)
        self._clock = clock
        self.redis: aioredis.Redis = redis_connect(self.config.redis_url)
        self.outbox = Outbox(self.redis, self.config)
        self.outbox.calls_key = self.keys.calls_of(server)
        # an IVR step goes here instead of the builder when set (ivr/failover: the steps
        # of a call go through Redis to whichever bridge owns the call events)
        self.step_relay: Callable[[IvrStep], Awaitable[None]] | None = None
        self.events_built = 0
        self.ami_events = 0
        self.errors = 0
        self.resumed_calls = 0  # calls continued from checkpoints at start
        self._listeners: list[Callable[[list[CallEvent]], None]] = []

    def add_listener(self, listener: Callable[[list[CallEvent]], None]) -> None:
        """``listener(events)`` sees every batch of call events the builder makes, in
        build order, as they are submitted to the outbox (before they are stored).  It
        must be quick and must not raise (it is logged and skipped if it does); a part
        that must not lose one stores what it needs itself (e.g. the recordings worker,
        ivr.recordings)."""
        self._listeners.append(listener)

    async def __aenter__(self) -> CallEventPipeline:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> None:
        try:
            await check_store(self.redis, self.config)
            await check_partitions(self.redis, self.keys)
            await ensure_groups(self.redis, self.keys)
            if self.durable_state and self.resume:
                await self._resume()
        except BaseException:
            await self.redis.aclose()
            raise
        await self.outbox.start()

    async def _resume(self) -> None:
        """Load the checkpoints of calls in progress (a previous bridge process)."""
        found = await self.load_checkpoints()
        for call in found:
            self.builder.restore(call)

    async def load_checkpoints(self) -> list[CallState]:
        """The checkpoints of this server's calls in progress (at most
        ``MAX_RESUMED_CALLS``; unreadable ones logged and deleted)."""
        key = self.outbox.calls_key
        total = int(await self.redis.hlen(key))
        found: dict[str, CallState] = {}
        bad: list[str] = []
        cursor = 0
        while len(found) < MAX_RESUMED_CALLS:
            cursor, chunk = await self.redis.hscan(key, cursor, count=1000)
            rows: dict[Any, Any] = chunk if isinstance(chunk, dict) else {}
            for raw_id, text in rows.items():
                cid = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                try:
                    found[cid] = CallState.from_checkpoint(text)
                except ValueError as exc:
                    bad.append(cid)
                    log_event(log, logging.ERROR, "events.pipeline.bad_checkpoint",
                              call_id=cid, error=str(exc), action="deleted; the call's "
                              "later events are counted as unknown_channel_events")
            if cursor == 0:
                break
        if bad:
            await self.redis.hdel(key, *bad)
        calls = list(found.values())[:MAX_RESUMED_CALLS]
        self.resumed_calls = min(len(found), MAX_RESUMED_CALLS)
        METRICS.inc("events.pipeline.resumed_calls", self.resumed_calls)
        log_event(log, logging.INFO, "events.pipeline.resumed", calls=self.resumed_calls,
                  checkpoints=total, bad=len(bad))
        if total - len(bad) > self.resumed_calls:
            log_event(log, logging.ERROR, "events.pipeline.resume_truncated",
                      resumed=self.resumed_calls, checkpoints=total,
                      limit=MAX_RESUMED_CALLS)
        return calls

    async def close(self) -> None:
        await self.outbox.close(flush=True)
        await self.redis.aclose()

    @property
    def written(self) -> int:
        return self.outbox.written

    def _enqueue(self, events: list[CallEvent], urgent: bool = False,
                 positions: Positions | None = None) -> asyncio.Future[None] | None:
        """Store ``events`` with the checkpoints of the calls that changed, as one unit
        (state and outbox never disagree); None when there is nothing to store.  A
        change without events is written with the next events, within
        ``STATE_LINGER_S``, unless ``urgent`` (the caller waits for it)."""
        states = self.builder.take_dirty()
        if not events and not states and not positions:
            return None
        self.events_built += len(events)
        fut = self.outbox.submit_unit(events, states, urgent=urgent, positions=positions)
        for listener in self._listeners if events else ():
            try:
                listener(events)
            except Exception as exc:  # noqa: BLE001 - a listener must not stop the bridge
                METRICS.inc("events.pipeline.listener_errors")
                log_event(log, logging.ERROR, "events.pipeline.listener_failed",
                          listener=repr(listener), error=repr(exc))
        return fut

    def submit_ami_event(self, event: Event,
                         positions: Positions | None = None) -> asyncio.Future[None] | None:
        """Build now, store asynchronously; None when the event changed nothing.
        ``positions`` (ivr/failover) is stored with its events when it made any."""
        self.ami_events += 1
        try:
            events = self.builder.feed_ami(event)
        except Exception as exc:  # noqa: BLE001 - a bad event must not stop the bridge
            self.errors += 1
            METRICS.inc("events.pipeline.errors")
            log_event(log, logging.ERROR, "events.pipeline.ami_failed", ami_event=event.name,
                      error=repr(exc))
            return None
        if positions is not None and not events and not self.builder.dirty:
            return None  # changed nothing: its position rides with the next store
        return self._enqueue(events, positions=positions)

    def submit_step(self, step: IvrStep,
                    positions: Positions | None = None) -> asyncio.Future[None] | None:
        """Build one IVR step's events now, store them (with ``positions``) asynchronously."""
        try:
            events = self.builder.feed_step(step)
        except Exception as exc:  # noqa: BLE001 - a bad step must not stop the bridge
            self.errors += 1
            METRICS.inc("events.pipeline.errors")
            log_event(log, logging.ERROR, "events.pipeline.step_failed", kind=step.kind,
                      error=repr(exc))
            events = []
        return self._enqueue(events, urgent=True, positions=positions)

    def commit_positions(self, positions: Positions) -> asyncio.Future[None] | None:
        """Store how far this bridge's input goes (with whatever changed meanwhile)."""
        return self._enqueue([], positions=positions)

    async def on_ami_event(self, event: Event) -> None:
        fut = self.submit_ami_event(event)
        if fut is not None:
            await self.outbox.flush()  # written now, not after STATE_LINGER_S
            await fut

    async def on_ivr_step(self, step: IvrStep) -> None:
        """A :data:`ivr.calls.steps.StepReporter`: never raises into the IVR."""
        if self.step_relay is not None:
            await self.step_relay(step)
            return
        try:
            fut = self._enqueue(self.builder.feed_step(step))
            if fut is not None:
                await fut
        except Exception as exc:  # noqa: BLE001 - the IVR must go on
            self.errors += 1
            METRICS.inc("events.pipeline.errors")
            log_event(log, logging.ERROR, "events.pipeline.step_failed", kind=step.kind,
                      error=repr(exc))

    def submit_service_step(self, step: ServiceStep) -> asyncio.Future[None] | None:
        """A slice's service step (:class:`ivr.calls.steps.ServiceStep`): built now, in
        order with the AMI events read so far; stored asynchronously (None: nothing to
        store, e.g. the call is not in progress).  Never raises."""
        try:
            return self._enqueue(self.builder.feed_service(step))
        except Exception as exc:  # noqa: BLE001 - a service must go on
            self.errors += 1
            METRICS.inc("events.pipeline.errors")
            log_event(log, logging.ERROR, "events.pipeline.service_step_failed",
                      type=step.type, service=step.service, error=repr(exc))
            return None

    async def on_service_step(self, step: ServiceStep) -> None:
        """:meth:`submit_service_step`, returning once the event is in Redis."""
        fut = self.submit_service_step(step)
        if fut is not None:
            await fut

    async def sweep(self, max_idle: float = 4 * 3600.0) -> int:
        """End calls silent for ``max_idle`` seconds; returns how many events that made."""
        events = self.builder.sweep(time.time(), max_idle)
        fut = self._enqueue(events)
        if fut is not None:
            await fut
        return len(events)

    def resync_mark(self) -> dict[str, frozenset[str]]:
        """Take before asking Asterisk for its live channels (``CoreShowChannels``)."""
        return self.builder.channels_snapshot()

    def submit_resync(self, mark: Mapping[str, frozenset[str]],
                      live: Iterable[Event | str]) -> asyncio.Future[None] | None:
        """``live`` = the ``CoreShowChannel`` events of the list Asterisk gave after
        the (re)connect.  Adopts the live calls the builder does not know (they started
        while the bridge was restarting or disconnected: ``call.started`` with
        ``adopted: true``) and ends the calls of ``mark`` none of whose channels is
        listed (they hung up meanwhile: ``call.ended`` with ``reason: lost``).  Built
        now, stored asynchronously (like :meth:`submit_ami_event`)."""
        rows = list(live)
        try:
            events = self.builder.resync(mark, rows, self._clock())
        except Exception as exc:  # noqa: BLE001 - a bad list must not stop the bridge
            self.errors += 1
            METRICS.inc("events.pipeline.errors")
            log_event(log, logging.ERROR, "events.pipeline.resync_failed",
                      live_channels=len(rows), error=repr(exc))
            return None
        ended = sum(1 for e in events if e.type == "call.ended")
        adopted = sum(1 for e in events if e.type == "call.started" and e.data.get("adopted"))
        log_event(log, logging.INFO, "events.pipeline.resync", calls=len(mark),
                  live_channels=len(rows), ended=ended, adopted=adopted)
        return self._enqueue(events)

    async def resync(self, mark: Mapping[str, frozenset[str]],
                     live: Iterable[Event | str]) -> int:
        """:meth:`submit_resync` and wait until stored; returns how many events."""
        before = self.events_built
        fut = self.submit_resync(mark, live)
        if fut is not None:
            await fut
        return self.events_built - before

    async def flush(self) -> None:
        await self.outbox.flush()

    async def status(self) -> OutboxStatus:
        """Counters for the demo summary (``events_lost`` must be 0)."""
        return await read_status(self.redis, self.keys)
