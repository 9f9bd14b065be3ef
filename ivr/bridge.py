"""The bridge process: the AMI client and the FastAGI server running the IVR, on one event
loop with one orderly shutdown.

It holds no business logic of its own.  AMI events go, in the order Asterisk sent them,
to the **AMI consumers** registered with it (:class:`AmiConsumer`: the service-level
figures, the call-event pipeline, the live queues …): each consumer declares the AMI
events (and ``VarSet`` variables) it reads and gets exactly those; the AMI event filter
the bridge asks Asterisk for is the union of the declarations; after every (re)connect
each consumer's ``resync`` re-reads what Asterisk lists.  FastAGI sessions go to the IVR
runtime.  The same code runs against a real Asterisk (``ivr serve``) and against the
emulator (``ivr demo``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Protocol

from ivr.agi.server import FastAGIServer, Handler
from ivr.ami.client import AMIClient, AMISettings
from ivr.ami.include_filter import include_filter
from ivr.ami.messages import Event, Response
from ivr.config import Settings
from ivr.log import event as log_event
from ivr.metrics import METRICS

log = logging.getLogger("ivr.bridge")


class AmiConsumer(Protocol):
    """A part that reads AMI events (the service-level figures, the call-event pipeline,
    :class:`ivr.agents.monitor.QueueMonitor` …).

    * ``consumed_ami_events``: the names of the AMI events it reads.  The bridge passes
      it those and no other, in wire order, and lets them through its event filter.
    * ``consumed_variables``: of the ``VarSet`` events, the variables it reads (the filter
      passes those only; empty: every ``VarSet`` if it declares ``VarSet``, else none).
    * ``on_ami_event(event)``: runs synchronously as the event is parsed; it must not
      block (no I/O awaited) and should not raise (a raise is logged and counted, the
      other consumers still get the event).
    * ``resync(client)``: after every (re)connect and the filter, in registration order:
      re-read what Asterisk lists (``CoreShowChannels``, ``QueueStatus`` …) so state is
      rebuilt, not guessed.  False (or a raise) = not rebuilt; logged, the others go on.
    """

    @property
    def consumed_ami_events(self) -> frozenset[str]: ...

    @property
    def consumed_variables(self) -> frozenset[str]: ...

    def on_ami_event(self, event: Event) -> None: ...

    async def resync(self, client: AMIClient) -> bool: ...


class AmiConsumers(list[AmiConsumer]):
    """The consumers registered with the application (``ivr.app.AMI_CONSUMERS``), in the
    order each event is passed to them."""


def consumer_filter(consumers: Iterable[AmiConsumer]) -> str:
    """The one AMI include filter for ``consumers``: the union of the events they declare
    and, of the ``VarSet`` events, the variables they declare (every ``VarSet`` when a
    consumer reads ``VarSet`` without naming variables).  ``ValueError`` when they
    declare nothing."""
    events: set[str] = set()
    variables: set[str] = set()
    every_varset = False
    for consumer in consumers:
        events |= consumer.consumed_ami_events
        if "VarSet" in consumer.consumed_ami_events:
            if consumer.consumed_variables:
                variables |= consumer.consumed_variables
            else:
                every_varset = True
    return include_filter(events, () if every_varset else variables)


EventHandler = Callable[[Event], None]


class Bridge:
    def __init__(
        self,
        settings: Settings,
        *,
        ivr_handler: Handler,
        consumers: Sequence[AmiConsumer] = (),
        ami_settings: AMISettings | None = None,
    ) -> None:
        settings.require("ami_secret")
        self.settings = settings
        self.consumers = tuple(consumers)
        # event name -> the handlers of the consumers that read it, in registration order
        self._routes: dict[str, tuple[EventHandler, ...]] = {}
        for consumer in self.consumers:
            for name in consumer.consumed_ami_events:
                self._routes[name] = (*self._routes.get(name, ()), consumer.on_ami_event)
        self.agi = FastAGIServer(max_sessions=settings.agi_max_sessions,
                                 max_sessions_per_peer=settings.agi_max_sessions_per_peer)
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
        self.ami_events = 0  # every AMI event received (the filter passes only the read ones)

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

    async def close(self) -> None:
        await self.agi.close()
        await self.ami.close()

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
        """Runs synchronously, in wire order, for every AMI event: each consumer that
        reads it gets it, in registration order."""
        self.ami_events += 1
        handlers = self._routes.get(event.name)
        if handlers is None:
            return
        for handler in handlers:
            try:
                handler(event)
            except Exception as exc:  # noqa: BLE001 - one consumer does not stop the others
                METRICS.inc("bridge.consumer_failed")
                log_event(log, logging.ERROR, "bridge.consumer_failed", ami_event=event.name,
                          consumer=_name(handler), error=repr(exc))

    def event_filter(self) -> str | None:
        """The AMI event filter the bridge asks for after each login: exactly the events
        its consumers declare (``None`` when ``ami_event_filter`` is off or no consumer
        reads anything)."""
        if not self.settings.ami_event_filter or not self._routes:
            return None
        return consumer_filter(self.consumers)

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
        """After every (re)connect: ask for only the events the consumers read, then let
        each consumer re-read what is live, in registration order, so state is rebuilt,
        not guessed."""
        await self._apply_filter(client)
        failed: list[str] = []
        for consumer in self.consumers:
            try:
                rebuilt = await consumer.resync(client)
            except Exception as exc:  # noqa: BLE001 - one consumer does not stop the others
                rebuilt = False
                log_event(log, logging.WARNING, "bridge.consumer_resync_failed",
                          consumer=type(consumer).__name__, error=repr(exc))
            if not rebuilt:
                failed.append(type(consumer).__name__)
                METRICS.inc("bridge.consumer_resync_failed")
        log_event(log, logging.INFO, "bridge.resync", consumers=len(self.consumers),
                  failed=failed, connects=client.connects)


def _name(handler: EventHandler) -> str:
    owner = getattr(handler, "__self__", None)
    return type(owner).__name__ if owner is not None else getattr(handler, "__qualname__", "?")
