"""The bridge process: the AMI client, the FastAGI server running the IVR, service-level
figures and the call-event pipeline, on one event loop with one orderly shutdown.

It holds no business logic of its own: AMI events go, in the order Asterisk sent them,
to :class:`ivr.callstats.CallStats` and to the call-event pipeline (which share the call
builder's Linkedid tracker, :class:`ivr.calls.tracker.CallTracker`); FastAGI sessions
go to the IVR runtime.  The same code runs against a real Asterisk (``ivr serve``) and
against the emulator (``ivr demo``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Protocol

from ivr.agi.server import FastAGIServer, Handler
from ivr.ami.client import AMIClient, AMISettings
from ivr.ami.include_filter import include_filter
from ivr.ami.messages import Event, EventList, Response
from ivr.callstats import CallStats
from ivr.config import Settings
from ivr.events.builder import CONSUMED_AMI_EVENTS, CONSUMED_VARIABLES
from ivr.events.pipeline import CallEventPipeline
from ivr.log import event as log_event
from ivr.metrics import METRICS

log = logging.getLogger("ivr.bridge")

SWEEP_EVERY_S = 300.0


class AmiConsumer(Protocol):
    """A part that reads AMI events (e.g. :class:`ivr.agents.monitor.QueueMonitor`): the
    bridge passes it the events it declares, in wire order, lets them through its event
    filter, and calls ``resync`` after every (re)connect."""

    @property
    def consumed_ami_events(self) -> frozenset[str]: ...

    def on_ami_event(self, event: Event) -> None: ...

    async def resync(self, client: AMIClient) -> bool: ...


class Bridge:
    def __init__(
        self,
        settings: Settings,
        *,
        ivr_handler: Handler,
        pipeline: CallEventPipeline | None = None,
        ami_settings: AMISettings | None = None,
        consumers: Sequence[AmiConsumer] = (),
    ) -> None:
        settings.require("ami_secret")
        self.settings = settings
        # one Linkedid tracker: the call-event builder keeps it, the figures read it
        self.stats = CallStats(calls=pipeline.builder.calls if pipeline is not None else None)
        self.pipeline = pipeline
        self.agi = FastAGIServer()
        self.agi.add_route("ivr", ivr_handler)
        self.ami = AMIClient(
            settings.ami_host,
            settings.ami_port,
            username=settings.ami_user,
            secret=settings.ami_secret,
            settings=ami_settings,
            on_connect=self._on_connect,
        )
        self.ami.on_event("*", self._on_event)
        self.consumers = tuple(consumers)
        for consumer in self.consumers:
            for name in sorted(consumer.consumed_ami_events):
                self.ami.on_event(name, consumer.on_ami_event)
        self.live_channels = 0
        self._pending: set[asyncio.Future[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def agi_port(self) -> int:
        port = self.agi.port
        if port is None:
            raise RuntimeError("the FastAGI server is not started")
        return port

    async def start(self) -> None:
        await self.agi.start(self.settings.agi_host, self.settings.agi_port)
        try:
            await self.ami.start()
        except BaseException:
            await self.agi.close()
            raise
        if self.pipeline is not None:
            self._sweeper = asyncio.create_task(self._sweep(), name="events-sweep")

    async def _sweep(self, every_s: float = SWEEP_EVERY_S) -> None:
        """End calls whose last Hangup was missed (e.g. during an AMI reconnect), so
        their state does not leak and their ticket still gets ``call.ended``."""
        assert self.pipeline is not None
        while True:
            await asyncio.sleep(every_s)  # a periodic chore: nothing to await instead
            try:
                await self.pipeline.sweep()
            except Exception as exc:  # noqa: BLE001 - the next sweep retries
                METRICS.inc("bridge.sweep_failed")
                log_event(log, logging.WARNING, "bridge.sweep_failed", error=repr(exc))

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.agi.close()
        await self.ami.close()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def __aenter__(self) -> Bridge:
        await self.start()
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _on_event(self, event: Event) -> None:
        """Runs synchronously, in wire order, for every AMI event."""
        self.stats.on_event(event)
        if self.pipeline is not None:
            fut = self.pipeline.submit_ami_event(event)
            if fut is not None:
                self._pending.add(fut)
                fut.add_done_callback(self._stored)

    def _stored(self, fut: asyncio.Future[None]) -> None:
        self._pending.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            METRICS.inc("bridge.events_store_failed")
            log_event(log, logging.ERROR, "bridge.events_store_failed", error=str(fut.exception()))

    def event_filter(self) -> str | None:
        """The AMI event filter the bridge asks for after each login: exactly the events
        its consumers read (``None`` when ``ami_event_filter`` is off)."""
        if not self.settings.ami_event_filter:
            return None
        events = set(CallStats.CONSUMED_AMI_EVENTS)
        variables: set[str] = set()
        if self.pipeline is not None:
            events |= CONSUMED_AMI_EVENTS
            variables |= CONSUMED_VARIABLES
        for consumer in self.consumers:
            events |= consumer.consumed_ami_events
        return include_filter(events, variables)

    async def _apply_filter(self, client: AMIClient) -> None:
        pattern = self.event_filter()
        if pattern is None:
            return
        reply = await client.send_action("Filter", {"Operation": "Add", "Filter": pattern},
                                         timeout=10)
        if isinstance(reply, Response) and reply.success:
            log_event(log, logging.INFO, "bridge.ami_filter", filter=pattern)
            return
        # Nothing is lost: without a filter the session keeps receiving every event.
        METRICS.inc("bridge.ami_filter_refused")
        message = reply.get("Message") if isinstance(reply, Response) else repr(reply)
        log_event(log, logging.WARNING, "bridge.ami_filter_refused", message=message,
                  hint="the AMI user needs write=system; every event is still received")

    async def _on_connect(self, client: AMIClient) -> None:
        """After every (re)connect: ask for only the events the bridge reads, then read
        what is live, so state is rebuilt, not guessed."""
        await self._apply_filter(client)
        # Calls known before asking (e.g. resumed from checkpoints after a restart) whose
        # channels are not listed hung up while the bridge was not listening: ended;
        # listed calls it does not know started meanwhile: adopted.  Only a complete
        # list is judged (a truncated one would end live calls).
        mark = self.pipeline.resync_mark() if self.pipeline is not None else None
        result = await client.send_action("CoreShowChannels", timeout=10)
        if isinstance(result, EventList):
            self.live_channels = len(result.events)
            if (mark is not None and self.pipeline is not None and result.response.success
                    and result.finished):
                fut = self.pipeline.submit_resync(mark, result.events)
                if fut is not None:  # stored like AMI events: never blocks the hook
                    self._pending.add(fut)
                    fut.add_done_callback(self._stored)
        log_event(
            log,
            logging.INFO,
            "bridge.resync",
            live_channels=self.live_channels,
            connects=client.connects,
        )
        for consumer in self.consumers:  # each re-reads its own state (QueueStatus …)
            try:
                await consumer.resync(client)
            except Exception as exc:  # noqa: BLE001 - one consumer does not stop the others
                METRICS.inc("bridge.consumer_resync_failed")
                log_event(log, logging.WARNING, "bridge.consumer_resync_failed",
                          consumer=type(consumer).__name__, error=repr(exc))
