"""The live feed (``GET /api/feed``, a WebSocket): queues, calls and service-level figures
as they change, numbered, filtered by role.

:class:`Feed` keeps the last value of each topic (``queues``, ``calls``, ``stats``) and
a bounded history of changes, each with the next sequence number.  Something happened
(:meth:`Feed.poke`: an AMI event the feed's consumer reads, an API action) → shortly
after (coalesced, :data:`COALESCE_S`) each topic is read again and, if it differs from
the last value, published as ``{"seq", "type": "change", "topic", "data"}`` to every
subscriber.  A client that reconnects sends the last ``seq`` it saw: it gets the changes
after it from the history, or — too old, or another process — a full snapshot (one
message per topic) carrying the current ``seq``.  Sequence numbers start at a random base
per :class:`Feed` (per process run), so a ``seq`` seen from another bridge, or from
this one before a restart, is never taken for one of this feed's (it gets a snapshot,
not the changes after a number that meant something else).  A subscriber too slow to keep up (its
queue of :data:`MAX_PENDING` messages is full) is disconnected; it reconnects and
resumes.  Pure apart from the event loop's timer; no I/O.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import Callable
from typing import Any

from ivr.agents.state import CONSUMED_AMI_EVENTS as QUEUE_EVENTS
from ivr.ami.client import AMIClient
from ivr.ami.messages import Event

TOPICS = ("queues", "calls", "stats")
COALESCE_S = 0.05
HISTORY = 1000
MAX_PENDING = 500
BASE_BITS = 31  # a random base << 21: below 2**52, exact in a JSON (double) number; 2**21
# changes (weeks at a busy hotline's rate) before it could reach another feed's range
# what changes the topics (all of them read by other consumers already: the bridge's
# AMI event filter is unchanged)
FEED_EVENTS = QUEUE_EVENTS | frozenset({"Newchannel", "Hangup"})

Message = dict[str, Any]


class Subscriber:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue(MAX_PENDING)
        self.overflowed = False

    def put(self, msg: Message | None) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(msg)
        except asyncio.QueueFull:
            self.overflowed = True  # the reader sees it and ends the connection


class Feed:
    def __init__(self, read: Callable[[str], Any], history: int = HISTORY,
                 base: int | None = None) -> None:
        self.read = read  # topic -> its current value (plain JSON data)
        self.base = (secrets.randbits(BASE_BITS) + 1) << 21 if base is None else base
        self.seq = self.base  # the first change is base + 1
        self.last: dict[str, Any] = {}
        self.history: deque[Message] = deque(maxlen=history)
        self.subscribers: set[Subscriber] = set()
        self._pending: asyncio.TimerHandle | None = None

    def poke(self) -> None:
        """Something may have changed: publish the changed topics soon (coalesced)."""
        if self._pending is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._pending = loop.call_later(COALESCE_S, self.publish)

    def publish(self) -> list[Message]:
        self._pending = None
        out = []
        for topic in TOPICS:
            try:
                data = self.read(topic)
            except Exception:  # a part not running (yet): nothing to say about it
                continue
            if topic in self.last and self.last[topic] == data:
                continue
            self.last[topic] = data
            self.seq += 1
            msg: Message = {"seq": self.seq, "type": "change", "topic": topic, "data": data}
            self.history.append(msg)
            out.append(msg)
            for sub in self.subscribers:
                sub.put(msg)
        return out

    def catch_up(self, since: int | None) -> list[Message]:
        """What a client that saw ``since`` missed: the changes after it, or a snapshot
        (``since`` unknown: before the history, from another feed, or none)."""
        if since is not None and since == self.seq:
            return []
        if (since is not None and self.history and self.base <= since < self.seq
                and self.history[0]["seq"] <= since + 1):
            return [m for m in self.history if m["seq"] > since]
        if not self.last:
            self.publish()
        return [{"seq": self.seq, "type": "snapshot", "topic": t, "data": d}
                for t, d in self.last.items()]

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
        self.feed.poke()

    async def resync(self, client: AMIClient) -> bool:
        self.feed.poke()
        return True
