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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from types import TracebackType

import redis.asyncio as aioredis

from ivr.ami.messages import Event
from ivr.events.builder import BuilderConfig, CallEventBuilder
from ivr.events.config import EventsConfig
from ivr.events.model import CallEvent
from ivr.events.outbox import (
    Outbox,
    OutboxStatus,
    check_partitions,
    ensure_groups,
    keys_for,
    read_status,
)
from ivr.events.steps import IvrStep
from ivr.log import event as log_event
from ivr.metrics import METRICS

log = logging.getLogger("ivr.events.pipeline")


class CallEventPipeline:
    def __init__(
        self,
        redis_url: str | None = None,
        config: EventsConfig | None = None,
        *,
        builder_config: BuilderConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        cfg = config or EventsConfig()
        if redis_url:
            cfg = cfg.with_(redis_url=redis_url)
        self.config = cfg.require("redis_url")
        self.keys = keys_for(self.config)
        self.builder = CallEventBuilder(builder_config, clock=clock)
        self.redis: aioredis.Redis = aioredis.from_url(self.config.redis_url)
        self.outbox = Outbox(self.redis, self.config)
        self.events_built = 0
        self.ami_events = 0
        self.errors = 0
        self._done: asyncio.Future[None] | None = None

    async def __aenter__(self) -> CallEventPipeline:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> None:
        try:
            await check_partitions(self.redis, self.keys)
            await ensure_groups(self.redis, self.keys)
        except BaseException:
            await self.redis.aclose()
            raise
        await self.outbox.start()

    async def close(self) -> None:
        await self.outbox.close(flush=True)
        await self.redis.aclose()

    @property
    def written(self) -> int:
        return self.outbox.written

    def _enqueue(self, events: list[CallEvent]) -> asyncio.Future[None] | None:
        fut: asyncio.Future[None] | None = None
        for ev in events:
            fut = self.outbox.submit(ev)
        self.events_built += len(events)
        return fut  # the writer is FIFO: the last one done means all done

    def submit_ami_event(self, event: Event) -> asyncio.Future[None] | None:
        """Build now, store asynchronously; None when the event produced nothing."""
        self.ami_events += 1
        try:
            events = self.builder.feed_ami(event)
        except Exception as exc:  # noqa: BLE001 - a bad event must not stop the bridge
            self.errors += 1
            METRICS.inc("events.pipeline.errors")
            log_event(log, logging.ERROR, "events.pipeline.ami_failed", ami_event=event.name,
                      error=repr(exc))
            return None
        return self._enqueue(events)

    async def on_ami_event(self, event: Event) -> None:
        fut = self.submit_ami_event(event)
        if fut is not None:
            await fut

    async def on_ivr_step(self, step: IvrStep) -> None:
        """A :data:`ivr.events.steps.StepReporter`: never raises into the IVR."""
        try:
            fut = self._enqueue(self.builder.feed_step(step))
            if fut is not None:
                await fut
        except Exception as exc:  # noqa: BLE001 - the IVR must go on
            self.errors += 1
            METRICS.inc("events.pipeline.errors")
            log_event(log, logging.ERROR, "events.pipeline.step_failed", kind=step.kind,
                      error=repr(exc))

    async def sweep(self, max_idle: float = 4 * 3600.0) -> int:
        """End calls silent for ``max_idle`` seconds; returns how many events that made."""
        events = self.builder.sweep(time.time(), max_idle)
        fut = self._enqueue(events)
        if fut is not None:
            await fut
        return len(events)

    async def flush(self) -> None:
        await self.outbox.flush()

    async def status(self) -> OutboxStatus:
        """Counters for the demo summary (``events_lost`` must be 0)."""
        return await read_status(self.redis, self.keys)
