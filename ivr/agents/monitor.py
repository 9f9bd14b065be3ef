"""Keeps a :class:`~ivr.agents.state.QueueState` live from an AMI client: the events it
reads, in wire order, and a ``QueueStatus`` after every (re)connect.

In the application the bridge's AMI client drives it (the monitor is one of the bridge's
consumers: ``consumed_ami_events``, ``on_ami_event``, ``resync``); the command line
attaches it to its own client (:meth:`QueueMonitor.attach`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ivr.agents.catalog import AgentCatalog
from ivr.agents.state import CONSUMED_AMI_EVENTS, QueueState
from ivr.ami.client import AMIClient
from ivr.ami.messages import Event, EventList
from ivr.log import event as log_event
from ivr.metrics import METRICS

log = logging.getLogger("ivr.agents.monitor")

RESYNC_TIMEOUT_S = 10.0


class QueueMonitor:
    consumed_ami_events = CONSUMED_AMI_EVENTS
    consumed_variables: frozenset[str] = frozenset()

    def __init__(self, state: QueueState | None = None, *,
                 catalog: Callable[[], AgentCatalog] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.state = state or QueueState()
        self._catalog = catalog
        self.clock = clock
        self._changed: asyncio.Event | None = None

    def on_ami_event(self, event: Event) -> None:
        """Runs synchronously, in wire order."""
        if self.state.apply(event, self.clock()):
            self._notify()

    def attach(self, client: AMIClient) -> None:
        """Receive ``client``'s events (for a client the bridge does not own)."""
        for name in sorted(self.consumed_ami_events):
            client.on_event(name, self.on_ami_event)

    async def resync(self, client: AMIClient) -> bool:
        """Re-read every queue with ``QueueStatus``; True when the state was rebuilt."""
        if self._catalog is not None:
            self.state.wrapup = dict(self._catalog().wrapup)
        self.state.begin_resync()
        try:
            result = await client.send_action("QueueStatus", timeout=RESYNC_TIMEOUT_S)
        except BaseException:
            self.state.abort_resync()
            raise
        if not (isinstance(result, EventList) and result.response.success
                and result.finished):
            self.state.abort_resync()
            METRICS.inc("agents.resync_failed")
            log_event(log, logging.WARNING, "agents.resync_failed", result=repr(result)[:200])
            return False
        self.state.apply_status(result.events, self.clock())
        self._notify()
        log_event(log, logging.INFO, "agents.resync", queues=len(self.state.queues),
                  members=sum(len(q.members) for q in self.state.queues.values()),
                  waiting=sum(len(q.callers) for q in self.state.queues.values()))
        return True

    async def wait_for(self, predicate: Callable[[QueueState], bool]) -> None:
        """Until ``predicate(state)`` holds (checked after every change); bound it with
        ``asyncio.timeout``."""
        while not predicate(self.state):
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
