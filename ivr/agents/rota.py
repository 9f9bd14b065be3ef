"""A break rota (轮休): the agents of a queue take breaks in turn, each with a reason from
the catalog, and come back — what a supervisor does through :class:`AgentService` over
AMI (``QueuePause`` with a ``Reason``, then unpause).  ``ivr demo`` runs one on the
hotline queue so its agents are seen pausing and resuming.

The rota never pauses so many that fewer than ``keep_ready`` members of the queue stay
unpaused, and when it stops it resumes every agent it paused, so it leaves the queue as
it found it.  Time comes from the caller (``sleep``, ``clock``): the emulator's clock in
the demo, the wall clock otherwise."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from ivr.agents.errors import AgentError
from ivr.agents.service import AgentService
from ivr.log import event as log_event

log = logging.getLogger("ivr.agents.rota")


@dataclass(frozen=True, slots=True)
class RotaChange:
    at: float  # wall-clock time of the operation (the clock given)
    interface: str
    paused: bool
    reason: str  # the catalog label Asterisk stores as PausedReason ("" when resuming)


@dataclass
class PauseRota:
    service: AgentService
    queue: str
    sleep: Callable[[float], Awaitable[None]]
    clock: Callable[[], float]
    every_s: float = 30.0  # one agent goes on a break this often
    break_s: float = 45.0  # and comes back this much later
    keep_ready: int = 2  # never fewer unpaused members than this
    reasons: Sequence[str] = ()  # catalog codes in turn (default: the whole catalog)
    on_change: Callable[[RotaChange], None] | None = None
    changes: list[RotaChange] = field(default_factory=list)
    refused: int = 0
    _on_break: dict[str, float] = field(default_factory=dict)  # interface -> back at
    _last: str = ""

    async def run(self) -> None:
        """Pause and resume in turn until cancelled (then call :meth:`finish`)."""
        while True:
            await self.step()
            await self.sleep(self.every_s)

    async def step(self) -> None:
        now = self.clock()
        for interface, back in sorted(self._on_break.items()):
            if back <= now:
                await self._set(interface, False)
        q = self.service.state.queues.get(self.queue)
        members = [] if q is None else sorted(q.members.values(), key=lambda m: m.interface)
        unpaused = [m.interface for m in members if not m.paused]
        if len(unpaused) <= self.keep_ready:
            return
        candidates = [i for i in unpaused if i not in self._on_break]
        if not candidates:
            return
        # in turn: the first after the last one sent on a break (interfaces in order)
        interface = next((i for i in candidates if i > self._last), candidates[0])
        self._last = interface
        await self._set(interface, True)

    async def finish(self) -> None:
        """Resume everyone still on a break."""
        for interface in sorted(self._on_break):
            await self._set(interface, False)

    def _next_reason(self) -> str:
        codes = list(self.reasons) or list(self.service.catalog.pause_reasons)
        if not codes:  # no catalog: the service refuses the pause, naming the catalog
            return ""
        return codes[len([c for c in self.changes if c.paused]) % len(codes)]

    async def _set(self, interface: str, paused: bool) -> None:
        label = ""
        try:
            if paused:
                label = self.service.catalog.reason_label(self._next_reason())
                # noted before the action is sent: a rota stopped while it is in flight
                # counts the break and still resumes her (finish)
                self._on_break[interface] = self.clock() + self.break_s
                try:
                    await self.service.pause(interface, label, [self.queue])
                except asyncio.CancelledError:
                    self._record(interface, True, label)
                    raise
            else:
                await self.service.unpause(interface, [self.queue])
        except AgentError as exc:  # e.g. logged out meanwhile: said, and the rota goes on
            self.refused += 1
            self._on_break.pop(interface, None)
            log_event(log, logging.WARNING, "agents.rota.refused", interface=interface,
                      queue=self.queue, paused=paused, error=str(exc))
            return
        if not paused:
            self._on_break.pop(interface, None)
        self._record(interface, paused, label)

    def _record(self, interface: str, paused: bool, label: str) -> None:
        change = RotaChange(self.clock(), interface, paused, label)
        self.changes.append(change)
        if self.on_change is not None:
            self.on_change(change)
