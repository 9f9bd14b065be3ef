"""Service-level figures of the hotline from the AMI event stream (no I/O).

A 12345 hotline is held to answering within 15 seconds and a 95 % answer rate
(GB/T 33358-2016).  :class:`CallStats` follows calls by ``Linkedid`` and queue
entries by ``Uniqueid``, and takes wait times from Asterisk's own ``HoldTime``
(``AgentConnect``, ``QueueCallerAbandon``), so the figures are what app_queue measured.

Which calls are live comes from the one Linkedid tracker (:class:`ivr.calls.tracker.
CallTracker`): the bridge shares the call-event builder's, a stand-alone ``CallStats``
feeds its own.  The figures are running totals; a call's own record lives only while
the call does, so a long-running bridge keeps memory for the calls in progress, not for
every call it ever saw.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ivr.ami.messages import Event, EventList
from ivr.calls.tracker import CallTracker

if TYPE_CHECKING:
    from ivr.ami.client import AMIClient

ANSWER_TARGET_S = 15
# bounds: records of calls whose end is never heard (their Newchannel was never seen),
# and the ids of ended calls whose late events must not count them again
MAX_LIVE_CALLS = 100_000
MAX_ENDED_REMEMBERED = 10_000
RESYNC_TIMEOUT_S = 10.0


@dataclass(slots=True)
class _Call:
    queued: bool = False
    answered: bool = False
    abandoned: bool = False
    waiting: set[str] = field(default_factory=set)  # its uniqueids in a queue now


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
    """Feed the AMI events it reads to :meth:`on_event`; read :meth:`summary` any time.

    ``calls``: the bridge's Linkedid tracker, kept by the call-event builder (which must
    then see the same events); without it ``CallStats`` keeps and feeds its own.

    One of the bridge's AMI consumers (:class:`ivr.bridge.AmiConsumer`): it declares
    :attr:`consumed_ami_events`; :meth:`resync` after a (re)connect rebuilds its own
    tracker from ``CoreShowChannels`` (a shared tracker is rebuilt by its keeper)."""

    # the AMI events this reads (the bridge's AMI event filter includes them)
    CONSUMED_AMI_EVENTS = frozenset({"Newchannel", "Hangup", "QueueCallerJoin",
                                     "QueueCallerLeave", "AgentConnect", "QueueCallerAbandon"})
    consumed_ami_events = CONSUMED_AMI_EVENTS
    consumed_variables: frozenset[str] = frozenset()

    def __init__(self, target_s: int = ANSWER_TARGET_S,
                 calls: CallTracker | None = None,
                 internal_contexts: frozenset[str] = frozenset()) -> None:
        self.target_s = target_s
        # legs the bridge originates with a Linkedid of their own (a three-way party's
        # Local/<n>@ivr-threeway-leg): not calls of the hotline (the builder's rule)
        self.internal_contexts = internal_contexts
        self._internal: OrderedDict[str, None] = OrderedDict()
        self._feeds = calls is None
        self.calls = CallTracker() if calls is None else calls
        self.calls.on_call_ended(self._call_ended)
        self._live_calls = self.calls.call_channels  # read per Hangup
        self._live: OrderedDict[str, _Call] = OrderedDict()  # calls in progress
        self._ended_ids: OrderedDict[str, None] = OrderedDict()
        self._waiting: dict[str, str] = {}  # uniqueid in a queue now -> its Linkedid
        self._seen = self._ended = self._offered = self._answered = self._abandoned = 0
        self._wait_total = self._wait_count = 0
        self._answered_in_target = 0
        self.events = 0

    @property
    def live_records(self) -> int:
        """Calls whose record is kept (those in progress)."""
        return len(self._live)

    def _call(self, ev: Event) -> _Call | None:
        linkedid = ev.get("Linkedid")
        if not linkedid:
            return None
        call = self._live.get(linkedid)
        if call is not None or linkedid in self._ended_ids or linkedid in self._internal:
            return call
        call = self._live[linkedid] = _Call()
        self._seen += 1
        if len(self._live) > MAX_LIVE_CALLS:
            _, oldest = self._live.popitem(last=False)
            self._unwait_all(oldest)
        return call

    def _call_ended(self, linkedid: str) -> None:
        """The tracker's news: the call's last channel is gone."""
        call = self._live.pop(linkedid, None)
        if call is None:  # a call this never saw an event of
            return
        self._unwait_all(call)
        self._ended += 1
        self._ended_ids[linkedid] = None
        if len(self._ended_ids) > MAX_ENDED_REMEMBERED:
            self._ended_ids.popitem(last=False)

    def _unwait(self, uniqueid: str) -> None:
        linkedid = self._waiting.pop(uniqueid, None)
        if linkedid:
            call = self._live.get(linkedid)
            if call is not None:
                call.waiting.discard(uniqueid)

    def _unwait_all(self, call: _Call) -> None:
        for uid in call.waiting:
            self._waiting.pop(uid, None)
        call.waiting.clear()

    def _waited(self, ev: Event) -> int:
        wait = _int(ev.get("HoldTime"))
        self._wait_total += wait
        self._wait_count += 1
        return wait

    def on_event(self, ev: Event) -> None:
        self.events += 1
        name = ev.name
        if name == "Newchannel":
            if (self.internal_contexts and ev.get("Uniqueid") == ev.get("Linkedid")
                    and (ev.get("Context") or "") in self.internal_contexts):
                self._internal[ev.get("Linkedid") or ""] = None
                if len(self._internal) > MAX_ENDED_REMEMBERED:
                    self._internal.popitem(last=False)
            self._call(ev)
            if self._feeds:
                self.calls.feed(ev)
        elif name == "Hangup":
            uid = ev.get("Uniqueid") or ""
            self._unwait(uid)
            self._call(ev)
            if self._feeds:
                self.calls.remove(uid)
            linkedid = ev.get("Linkedid") or ""
            if linkedid in self._live and linkedid not in self._live_calls:
                self._call_ended(linkedid)  # no channel of it was ever known
        elif name == "QueueCallerJoin":
            call = self._call(ev)
            uid = ev.get("Uniqueid") or ""
            self._waiting[uid] = ev.get("Linkedid") or ""
            if call is not None:
                call.waiting.add(uid)
                if not call.queued:
                    call.queued = True
                    self._offered += 1
        elif name == "QueueCallerLeave":
            self._unwait(ev.get("Uniqueid") or "")
        elif name == "AgentConnect":
            call = self._call(ev)
            if call is not None and not call.answered:
                call.answered = True
                self._answered += 1
                if self._waited(ev) <= self.target_s:
                    self._answered_in_target += 1
        elif name == "QueueCallerAbandon":
            call = self._call(ev)
            self._unwait(ev.get("Uniqueid") or "")
            if call is not None and not call.answered and not call.abandoned:
                call.abandoned = True
                self._abandoned += 1
                self._waited(ev)

    on_ami_event = on_event  # the bridge's consumer hook

    async def resync(self, client: AMIClient) -> bool:
        """After a (re)connect.  A shared tracker is rebuilt by the call-event pipeline
        (its keeper): nothing to do.  Its own tracker is rebuilt from what Asterisk
        lists: True when it was."""
        if not self._feeds:
            return True
        mark = self.calls.snapshot()
        result = await client.send_action("CoreShowChannels", timeout=RESYNC_TIMEOUT_S)
        if not (isinstance(result, EventList) and result.response.success
                and result.finished):
            return False
        self.rebuild(mark, result.events)
        return True

    def rebuild(self, mark: frozenset[str], listed: Iterable[Event]) -> None:
        """Its own tracker after a (re)connect: channels of ``mark`` (taken before asking)
        not ``listed`` (``CoreShowChannel`` rows) hung up unheard, and their calls end;
        listed channels it did not know are added."""
        live = {uid: row.get("Linkedid") or uid for row in listed
                if (uid := row.get("Uniqueid"))}
        self.calls.prune(mark, live)
        for uid, linkedid in live.items():
            self.calls.add(uid, linkedid)

    def summary(self) -> StatsSummary:
        offered, answered = self._offered, self._answered
        return StatsSummary(
            calls=self._seen,
            ended=self._ended,
            offered=offered,
            answered=answered,
            abandoned=self._abandoned,
            answered_15s=self._answered_in_target,
            average_wait_s=(round(self._wait_total / self._wait_count, 2)
                            if self._wait_count else 0.0),
            answer_rate=round(answered / offered, 4) if offered else 0.0,
            answer_rate_15s=round(self._answered_in_target / offered, 4) if offered else 0.0,
            in_queue=len(self._waiting),
        )


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
