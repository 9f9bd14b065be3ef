"""Service-level figures of the hotline from the AMI event stream (no I/O).

A 12345 hotline is held to answering within 15 seconds and a 95 % answer rate
(GB/T 33358-2016).  :class:`CallStats` follows calls by ``Linkedid`` and queue
entries by ``Uniqueid``, and takes wait times from Asterisk's own ``HoldTime``
(``AgentConnect``, ``QueueCallerAbandon``), so the figures are what app_queue measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ivr.ami.messages import Event

ANSWER_TARGET_S = 15


@dataclass(slots=True)
class _Call:
    linkedid: str
    channels: set[str] = field(default_factory=set)
    queued: bool = False
    answered: bool = False
    abandoned: bool = False
    wait_s: int | None = None
    ended: bool = False


@dataclass(frozen=True, slots=True)
class StatsSummary:
    calls: int  # calls seen (by Linkedid)
    ended: int  # calls whose every channel hung up
    offered: int  # calls that joined a queue
    answered: int  # answered by an agent (AgentConnect)
    abandoned: int  # caller hung up while waiting in a queue
    answered_15s: int  # answered within 15 s of joining the queue
    average_wait_s: float  # mean wait of answered and abandoned callers
    answer_rate: float  # answered / offered
    answer_rate_15s: float  # answered within 15 s / offered
    in_queue: int  # waiting now


class CallStats:
    """Feed every AMI event to :meth:`on_event`; read :meth:`summary` any time."""

    # the AMI events this reads (the bridge's AMI event filter includes them)
    CONSUMED_AMI_EVENTS = frozenset({"Newchannel", "Hangup", "QueueCallerJoin",
                                     "QueueCallerLeave", "AgentConnect", "QueueCallerAbandon"})

    def __init__(self, target_s: int = ANSWER_TARGET_S) -> None:
        self.target_s = target_s
        self._calls: dict[str, _Call] = {}
        self._waiting: set[str] = set()  # uniqueids in a queue now
        self._waits: list[int] = []
        self._answered_in_target = 0
        self.events = 0

    def _call(self, ev: Event) -> _Call | None:
        linkedid = ev.get("Linkedid")
        if not linkedid:
            return None
        call = self._calls.get(linkedid)
        if call is None:
            call = self._calls[linkedid] = _Call(linkedid)
        return call

    def on_event(self, ev: Event) -> None:
        self.events += 1
        name = ev.name
        if name == "Newchannel":
            call = self._call(ev)
            if call is not None:
                call.channels.add(ev.get("Uniqueid") or "")
        elif name == "Hangup":
            call = self._call(ev)
            uid = ev.get("Uniqueid") or ""
            self._waiting.discard(uid)
            if call is not None:
                call.channels.discard(uid)
                if not call.channels:
                    call.ended = True
        elif name == "QueueCallerJoin":
            call = self._call(ev)
            if call is not None:
                call.queued = True
            self._waiting.add(ev.get("Uniqueid") or "")
        elif name == "QueueCallerLeave":
            self._waiting.discard(ev.get("Uniqueid") or "")
        elif name == "AgentConnect":
            call = self._call(ev)
            if call is not None and not call.answered:
                call.answered = True
                wait = _int(ev.get("HoldTime"))
                call.wait_s = wait
                self._waits.append(wait)
                if wait <= self.target_s:
                    self._answered_in_target += 1
        elif name == "QueueCallerAbandon":
            call = self._call(ev)
            self._waiting.discard(ev.get("Uniqueid") or "")
            if call is not None and not call.answered and not call.abandoned:
                call.abandoned = True
                wait = _int(ev.get("HoldTime"))
                call.wait_s = wait
                self._waits.append(wait)

    def summary(self) -> StatsSummary:
        calls = self._calls.values()
        offered = sum(1 for c in calls if c.queued)
        answered = sum(1 for c in calls if c.answered)
        abandoned = sum(1 for c in calls if c.abandoned)
        return StatsSummary(
            calls=len(self._calls),
            ended=sum(1 for c in calls if c.ended),
            offered=offered,
            answered=answered,
            abandoned=abandoned,
            answered_15s=self._answered_in_target,
            average_wait_s=round(sum(self._waits) / len(self._waits), 2) if self._waits else 0.0,
            answer_rate=round(answered / offered, 4) if offered else 0.0,
            answer_rate_15s=round(self._answered_in_target / offered, 4) if offered else 0.0,
            in_queue=len(self._waiting),
        )


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
