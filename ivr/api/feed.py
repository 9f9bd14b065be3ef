"""The live feed (``GET /api/feed``, a WebSocket): queues, calls and service-level figures
as they change, numbered, filtered by role.

:class:`Feed` keeps the last value of each topic (``queues``, ``calls``, ``stats``) and
the last change of each.  Something happened (:meth:`Feed.poke`: an AMI event the feed's
consumer reads, a call event) → shortly after (coalesced: :data:`COALESCE_S`, longer
when re-reading the topics is dear, so that it takes at most :data:`BUDGET` of the
bridge's time) each topic
is read again and, if it differs from the last value, published as a :class:`Change`
with the next sequence number to every subscriber: ``{"seq", "type": "change", "topic",
"data"}`` (the whole topic), and for ``calls`` and ``queues`` also as a delta (``{"seq",
"type": "delta", "topic", "upsert": […], "remove": [key…]}``, see :func:`_delta`) for
the clients that ask for deltas — a wallboard of thousands of calls and agents then gets
what changed, not whole lists 20 times a second.

A client that reconnects sends the last ``seq`` it saw: it gets, for each topic that
changed after it, the topic's latest value (whole: all it needs, since a topic's value
is complete; nothing older is kept, so memory does not grow with the rate of change);
a ``seq`` that is not this feed's (sequence numbers start at a random base per feed:
another bridge, or this one before a restart) or none gets a full snapshot.  A
subscriber too slow to keep up (its queue of :data:`MAX_PENDING` changes is full) is
disconnected; it reconnects and resumes.  How a change looks to a role (masked,
filtered) is decided by the API (:mod:`ivr.api.http`) and cached on the change, so a
change is serialised once per view, not once per client.  Pure apart from the event
loop's timer; no I/O.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ivr.agents.state import CONSUMED_AMI_EVENTS as QUEUE_EVENTS
from ivr.ami.client import AMIClient
from ivr.ami.messages import Event

TOPICS = ("queues", "calls", "stats")
COALESCE_S = 0.05
BUDGET = 0.2  # at most this share of the bridge's time goes to re-reading the topics
MAX_PENDING = 500
BASE_BITS = 31  # a random base << 21: below 2**52, exact in a JSON (double) number; 2**21
# changes (weeks at a busy hotline's rate) before it could reach another feed's range
# what changes the topics (all of them read by other consumers already: the bridge's
# AMI event filter is unchanged)
CHANNEL_EVENTS = frozenset({"Newchannel", "Hangup"})
FEED_EVENTS = QUEUE_EVENTS | CHANNEL_EVENTS

Message = dict[str, Any]


@dataclass(slots=True, eq=False)
class Change:
    """One published change of a topic (or a snapshot of it).  ``upsert``/``remove``:
    the calls that changed or left (``calls`` only, None for a snapshot or a catch-up,
    which are whole).  ``frames``/``texts``: the serialised forms already made, by view."""

    seq: int
    topic: str
    data: Any
    type: str = "change"  # or "snapshot"
    upsert: list[dict[str, Any]] | None = None
    remove: list[str] | None = None
    texts: dict[Any, str | None] = field(default_factory=dict)
    frames: dict[Any, bytes | None] = field(default_factory=dict)  # as sent, by view

    def message(self) -> Message:
        return {"seq": self.seq, "type": self.type, "topic": self.topic, "data": self.data}

    def delta(self) -> Message | None:
        if self.upsert is None or self.remove is None:
            return None
        return {"seq": self.seq, "type": "delta", "topic": self.topic,
                "upsert": self.upsert, "remove": self.remove}


class Subscriber:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Change | None] = asyncio.Queue(MAX_PENDING)
        self.overflowed = False

    def put(self, change: Change | None) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(change)
        except asyncio.QueueFull:
            self.overflowed = True  # the reader sees it and ends the connection


DELTA_KEYS = {"calls": "call_id", "queues": "queue"}
"""The topics published as deltas too, and the key of their entries."""
NESTED_KEYS = {"agents": "interface", "callers": "uniqueid"}
"""Lists inside a queue entry that a delta carries as their own upsert/remove."""


def _by(entries: Any, key: str) -> dict[str, Any] | None:
    """The entries by their key; None when they are not a list of keyed objects (or two
    share a key)."""
    if not isinstance(entries, list):
        return None
    try:
        out = {e[key]: e for e in entries}
    except (TypeError, KeyError, IndexError):
        return None
    return out if len(out) == len(entries) else None


def _delta(before: dict[str, Any], now: dict[str, Any], topic: str
           ) -> tuple[list[dict[str, Any]], list[str]]:
    """The entries that appeared or changed and the keys that left.  A changed queue
    carries only its changed fields (and its key), its ``agents``/``callers`` as
    ``{"upsert": […], "remove": [keys]}``; a call is carried whole."""
    upsert: list[dict[str, Any]] = []
    for k, entry in now.items():
        old = before.get(k)
        if old == entry:
            continue
        if old is None or topic != "queues":
            upsert.append(entry)
            continue
        part: dict[str, Any] = {"queue": k}
        for field_, value in entry.items():
            sub_key = NESTED_KEYS.get(field_)
            was = _by(old.get(field_), sub_key) if sub_key is not None else None
            is_ = _by(value, sub_key) if sub_key is not None else None
            if was is not None and is_ is not None:
                sub = {"upsert": [v for n, v in is_.items() if was.get(n) != v],
                       "remove": [n for n in was if n not in is_]}
                if sub["upsert"] or sub["remove"]:
                    part[field_] = sub
            elif old.get(field_) != value:
                part[field_] = value
        upsert.append(part)
    return upsert, [k for k in before if k not in now]


class Feed:
    def __init__(self, read: Callable[[str], Any], base: int | None = None,
                 clock: Callable[[], float] = time.thread_time) -> None:
        self.read = read  # topic -> its current value (plain JSON data)
        self.clock = clock  # CPU time of this thread: the publish's own cost, not the
        # time other processes took the CPU meanwhile (a busy box would stretch the wait)
        self.interval = COALESCE_S  # from a poke to the publish: grows with its cost
        self.base = (secrets.randbits(BASE_BITS) + 1) << 21 if base is None else base
        self.seq = self.base  # the first change is base + 1
        self.last: dict[str, Any] = {}
        self.latest: dict[str, Change] = {}  # topic -> its last change
        self._by_topic: dict[str, dict[str, Any]] = {}  # the last entries by key (deltas)
        self.subscribers: set[Subscriber] = set()
        self._pending: asyncio.TimerHandle | None = None
        self._dirty: set[str] = set()  # poked since the last publish

    def poke(self, *topics: str) -> None:
        """Something may have changed in ``topics`` (none named: any): publish what
        changed soon (coalesced; only the topics poked are read again)."""
        self._dirty.update(topics or TOPICS)
        if self._pending is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._pending = loop.call_later(self.interval, self.publish)

    def publish(self, topics: Iterable[str] | None = None) -> list[Change]:
        """Read every topic, publish what changed.  Its cost sets how long the next poke
        waits (:data:`COALESCE_S`, or longer when re-reading thousands of calls and
        agents is dear: at most :data:`BUDGET` of the time, so the AMI events the bridge
        must read keep their share)."""
        start = self.clock()
        try:
            return self._publish(topics)
        finally:
            self.interval = max(COALESCE_S, (self.clock() - start) / BUDGET)

    def _publish(self, topics: Iterable[str] | None) -> list[Change]:
        self._pending = None
        wanted = set(topics if topics is not None else (self._dirty or TOPICS))
        self._dirty -= wanted
        out = []
        for topic in TOPICS:
            if topic not in wanted:
                continue
            try:
                data = self.read(topic)
            except Exception:  # a part not running (yet): nothing to say about it
                continue
            key = DELTA_KEYS.get(topic)
            now = None if key is None else _by(data, key)
            before = self._by_topic.get(topic)
            if now is not None and before is not None and topic in self.last:
                # keyed: the delta says whether anything changed (one pass, not two)
                upsert, remove = _delta(before, now, topic)
                if not upsert and not remove and list(now) == list(before):
                    continue
            elif topic in self.last and self.last[topic] == data:
                continue
            else:
                upsert, remove = ([], []) if now is None else _delta(before or {}, now, topic)
            self.last[topic] = data
            self.seq += 1
            change = Change(self.seq, topic, data)
            if now is not None:
                change.upsert, change.remove = upsert, remove
                self._by_topic[topic] = now
            else:
                self._by_topic.pop(topic, None)
            self.latest[topic] = change
            out.append(change)
            for sub in self.subscribers:
                sub.put(change)
        return out

    def catch_up(self, since: int | None) -> list[Change]:
        """What a client that saw ``since`` missed: each topic's latest change after it
        (whole), or — ``since`` none or not this feed's — a snapshot of every topic."""
        if since is not None and self.base <= since <= self.seq:
            return sorted((c for c in self.latest.values() if c.seq > since),
                          key=lambda c: c.seq)
        if not self.last:
            self.publish(TOPICS)
        return [Change(self.seq, t, d, type="snapshot") for t, d in self.last.items()]

    def subscribe(self) -> Subscriber:
        sub = Subscriber()
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        for sub in list(self.subscribers):
            sub.put(None)


class FeedConsumer:
    """The feed as an AMI consumer: pokes it on the events that change its topics."""

    consumed_ami_events = FEED_EVENTS
    consumed_variables: frozenset[str] = frozenset()

    def __init__(self, feed: Feed) -> None:
        self.feed = feed

    def on_ami_event(self, event: Event) -> None:
        if event.name in CHANNEL_EVENTS:
            self.feed.poke("calls", "stats")
        else:  # a queue, member, caller or agent event
            self.feed.poke("queues", "stats")

    async def resync(self, client: AMIClient) -> bool:
        self.feed.poke()
        return True
