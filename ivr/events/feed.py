"""The call-event pipeline as one of the bridge's AMI consumers
(:class:`ivr.bridge.AmiConsumer`).

    feed = CallEventFeed(pipeline)          # registered with the application
    async with feed:                        # the sweeper runs
        ...                                 # the bridge passes it its events, in wire order
    # the store of the last events awaited

It reads the events and ``VarSet`` variables the call-event builder reads
(:data:`ivr.events.builder.CONSUMED_AMI_EVENTS`, ``CONSUMED_VARIABLES``), builds each
event's call events at once and stores them asynchronously (never blocking the AMI
reader); after every (re)connect it lists the live channels (``CoreShowChannels``) so the
calls that hung up while nobody listened are ended and those that started meanwhile are
adopted; every :data:`SWEEP_EVERY_S` it ends calls whose last ``Hangup`` was missed.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import TYPE_CHECKING

from ivr.ami.messages import Event, EventList
from ivr.events.builder import CONSUMED_AMI_EVENTS, CONSUMED_VARIABLES
from ivr.events.pipeline import CallEventPipeline
from ivr.log import event as log_event
from ivr.metrics import METRICS

if TYPE_CHECKING:
    from ivr.ami.client import AMIClient

log = logging.getLogger("ivr.events.feed")

SWEEP_EVERY_S = 300.0
RESYNC_TIMEOUT_S = 10.0


class CallEventFeed:
    consumed_ami_events = CONSUMED_AMI_EVENTS
    consumed_variables = CONSUMED_VARIABLES

    def __init__(self, pipeline: CallEventPipeline, *,
                 sweep_every_s: float | None = SWEEP_EVERY_S) -> None:
        self.pipeline = pipeline
        self.sweep_every_s = sweep_every_s
        self.live_channels = 0  # what the last CoreShowChannels listed
        self._pending: set[asyncio.Future[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def __aenter__(self) -> CallEventFeed:
        if self.sweep_every_s is not None:
            self._sweeper = asyncio.create_task(self._sweep(self.sweep_every_s),
                                                name="events-sweep")
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop sweeping and wait until what was built is stored (or failed)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def on_ami_event(self, event: Event) -> None:
        """Runs synchronously, in wire order: built now, stored asynchronously."""
        self._track(self.pipeline.submit_ami_event(event))

    async def resync(self, client: AMIClient) -> bool:
        """Calls known before asking (e.g. resumed from checkpoints after a restart) whose
        channels are not listed hung up while the bridge was not listening: ended; listed
        calls it does not know started meanwhile: adopted.  Only a complete list is
        judged (a truncated one would end live calls): False otherwise."""
        mark = self.pipeline.resync_mark()
        result = await client.send_action("CoreShowChannels", timeout=RESYNC_TIMEOUT_S)
        if not isinstance(result, EventList):
            return False
        self.live_channels = len(result.events)
        if not (result.response.success and result.finished):
            return False
        self._track(self.pipeline.submit_resync(mark, result.events))
        return True

    def _track(self, fut: asyncio.Future[None] | None) -> None:
        if fut is not None:
            self._pending.add(fut)
            fut.add_done_callback(self._stored)

    def _stored(self, fut: asyncio.Future[None]) -> None:
        self._pending.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            METRICS.inc("bridge.events_store_failed")
            log_event(log, logging.ERROR, "bridge.events_store_failed",
                      error=str(fut.exception()))

    async def _sweep(self, every_s: float) -> None:
        """End calls whose last Hangup was missed (e.g. during an AMI reconnect), so
        their state does not leak and their ticket still gets ``call.ended``."""
        while True:
            await asyncio.sleep(every_s)  # a periodic chore: nothing to await instead
            try:
                await self.pipeline.sweep()
            except Exception as exc:  # noqa: BLE001 - the next sweep retries
                METRICS.inc("bridge.sweep_failed")
                log_event(log, logging.WARNING, "bridge.sweep_failed", error=repr(exc))
