"""Durable outbox: call events go into Redis Streams before anything else happens.

:class:`Outbox` writes events in order through one writer task that batches them into
``MULTI`` pipelines (the events and the ``written`` counter land together).  While Redis
is unreachable the writer keeps the events in memory, in order, and retries with
backoff; :meth:`Outbox.submit` returns a future resolved once the event is in Redis.

:func:`read_status` and :func:`replay_dead_letters` serve ``ivr events status`` and
``ivr events replay``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from ivr.errors import ConfigError
from ivr.events.config import EventsConfig
from ivr.events.keys import GROUP, Keys
from ivr.events.model import CallEvent
from ivr.log import event as log_event
from ivr.metrics import METRICS

log = logging.getLogger("ivr.events.outbox")

WRITE_BATCH = 500

# One round trip and one AOF fsync for a whole batch, with the counter, atomically.
# KEYS: stats; ARGV: n, then (stream, m, e) per event.  (Stream keys are passed as
# arguments: fine on a single Redis server, which is what the outbox uses.)
_ADD_LUA = """
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  redis.call('XADD', ARGV[2 + 3 * i], '*', 'm', ARGV[3 + 3 * i], 'e', ARGV[4 + 3 * i])
end
redis.call('HINCRBY', KEYS[1], 'written', n)
return n
"""
REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


def keys_for(config: EventsConfig) -> Keys:
    return Keys(config.stream_prefix, config.partitions)


ENTRY_FIELDS = ("m", "e")


def entry_fields(event: CallEvent) -> dict[str, str]:
    """Stream entry of one event: ``m`` = call id, seq, event id, type, ts joined by
    tabs (what the pusher needs without parsing JSON), ``e`` = the JSON body sent."""
    return {
        "m": f"{event.call_id}\t{event.seq}\t{event.id}\t{event.type}\t{event.ts!r}",
        "e": event.dumps(),
    }


def parse_meta(meta: str) -> tuple[str, int, str, str, float]:
    """(call id, seq, event id, type, ts) from an entry's ``m`` field."""
    parts = meta.split("\t")
    if len(parts) != 5:
        return ("", 0, "", "", 0.0)
    call, seq, eid, type_, ts = parts
    return call, int(seq or 0), eid, type_, float(ts or 0)


async def check_partitions(r: aioredis.Redis, keys: Keys) -> None:
    """The partition count is fixed per prefix: a call must keep its partition."""
    meta = f"{keys.prefix}:partitions"
    await r.set(meta, str(keys.partitions), nx=True)
    stored = await r.get(meta)
    if stored is not None and int(stored) != keys.partitions:
        raise ConfigError(
            f"outbox {keys.prefix!r} was created with {int(stored)} partitions, config says "
            f"{keys.partitions}; drain it before changing 'partitions' / 分区数与已有队列不符"
        )


async def ensure_groups(r: aioredis.Redis, keys: Keys) -> None:
    for stream in keys.streams:
        try:
            await r.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


class Outbox:
    """Ordered, batched, retrying writer of call events into the partition streams."""

    def __init__(self, redis: aioredis.Redis, config: EventsConfig) -> None:
        self.redis = redis
        self.config = config
        self.keys = keys_for(config)
        self._queue: deque[tuple[CallEvent, asyncio.Future[None]]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._add = redis.register_script(_ADD_LUA)
        self.written = 0  # events this process has written
        self.write_errors = 0

    @property
    def backlog(self) -> int:
        """Events accepted but not yet in Redis."""
        return len(self._queue)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="events-outbox-writer")

    def submit(self, event: CallEvent) -> asyncio.Future[None]:
        """Queue ``event`` (order of calls = order in the stream); the future resolves
        when it is stored in Redis."""
        if self._closing:
            raise RuntimeError("outbox is closed")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((event, fut))
        self._wakeup.set()
        return fut

    async def write(self, events: list[CallEvent]) -> None:
        futs = [self.submit(e) for e in events]
        if futs:
            await asyncio.gather(*futs)

    async def flush(self) -> None:
        """Wait until everything submitted so far is in Redis."""
        if self._queue:
            await asyncio.shield(self._queue[-1][1])

    async def close(self, flush: bool = True) -> None:
        self._closing = True
        if flush and self._task is not None and not self._task.done():
            await self.flush()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for _, fut in self._queue:
            if not fut.done():
                fut.set_exception(RuntimeError("outbox closed before the event was written"))
                fut.exception()  # mark retrieved
        self._queue.clear()

    async def _run(self) -> None:
        delay = 0.05
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = [self._queue[i] for i in range(min(WRITE_BATCH, len(self._queue)))]
            args: list[str | int] = [len(batch)]
            for ev, _ in batch:
                fields = entry_fields(ev)
                args += [self.keys.stream_for(ev.call_id), fields["m"], fields["e"]]
            try:
                await self._add(keys=[self.keys.stats], args=args)
            except REDIS_ERRORS as exc:
                self.write_errors += 1
                METRICS.inc("events.outbox.write_errors")
                log_event(log, logging.WARNING, "events.outbox.write_failed",
                          error=repr(exc), backlog=len(self._queue), retry_in=round(delay, 3))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            for _ in batch:
                self._queue.popleft()
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)
            self.written += len(batch)
            METRICS.inc("events.outbox.written", len(batch))


@dataclass(slots=True)
class PartitionStatus:
    stream: str
    length: int  # entries not yet delivered (delivered ones are deleted)
    pending: int  # read by a pusher, not acknowledged yet
    lag: int | None  # not yet read by any pusher
    consumers: int
    owner: str | None  # pusher holding the partition lease


@dataclass(slots=True)
class OutboxStatus:
    prefix: str
    partitions: list[PartitionStatus] = field(default_factory=list)
    dead_letters: int = 0
    blocked_calls: int = 0
    written: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    replayed: int = 0
    retries: int = 0

    @property
    def undelivered(self) -> int:
        return sum(p.length for p in self.partitions)

    @property
    def pending(self) -> int:
        return sum(p.pending for p in self.partitions)

    @property
    def events_lost(self) -> int:
        """Events written that are neither delivered, nor in a stream, nor dead letters:
        0 unless something is broken."""
        return (self.written + self.replayed - self.delivered - self.dead_lettered
                - self.undelivered)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["undelivered"] = self.undelivered
        out["pending"] = self.pending
        out["events_lost"] = self.events_lost
        return out


async def read_status(r: aioredis.Redis, keys: Keys) -> OutboxStatus:
    st = OutboxStatus(prefix=keys.prefix)
    stats = await r.hgetall(keys.stats)
    for counter in ("written", "delivered", "dead_lettered", "replayed", "retries"):
        raw = stats.get(counter, stats.get(counter.encode(), 0))
        setattr(st, counter, int(raw or 0))
    for p, stream in enumerate(keys.streams):
        length = int(await r.xlen(stream))
        pending = 0
        lag: int | None = None
        consumers = 0
        try:
            groups: list[dict[Any, Any]] = await r.xinfo_groups(stream)
            for g in groups:
                gname: Any = g.get("name")
                if gname in (GROUP, GROUP.encode()):
                    pending = int(g.get("pending", 0))
                    raw_lag = g.get("lag")
                    lag = int(raw_lag) if raw_lag is not None else None
                    consumers = int(g.get("consumers", 0))
        except ResponseError:
            pass  # no stream yet
        owner = await r.get(keys.lease(p))
        st.partitions.append(PartitionStatus(
            stream, length, pending, lag, consumers,
            owner.decode() if isinstance(owner, bytes) else owner))
    st.dead_letters = int(await r.xlen(keys.dead))
    st.blocked_calls = int(await r.scard(keys.blocked))
    return st


@dataclass(frozen=True, slots=True)
class DeadLetter:
    entry_id: str
    call_id: str
    seq: int
    event_id: str
    reason: str
    attempts: int
    fields: dict[str, str]


def _decode(fields: dict[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v))
        for k, v in fields.items()
    }


async def list_dead_letters(
    r: aioredis.Redis, keys: Keys, count: int = 10_000
) -> list[DeadLetter]:
    out: list[DeadLetter] = []
    rows: Any = await r.xrange(keys.dead, count=count)
    for entry_id, raw in rows:
        f = _decode(raw or {})
        call, seq, eid, _type, _ts = parse_meta(f.get("m", ""))
        out.append(DeadLetter(
            entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id),
            call, seq, eid,
            f.get("reason", ""), int(f.get("attempts", "0") or 0), f))
    return out


async def replay_dead_letters(
    r: aioredis.Redis, keys: Keys, call_id: str | None = None
) -> int:
    """Move dead letters (all, or one call's) back to their partition streams, call by
    call in sequence order, atomically with unblocking the call.  Returns how many."""
    letters = await list_dead_letters(r, keys)
    by_call: dict[str, list[DeadLetter]] = {}
    for d in letters:
        if call_id is None or d.call_id == call_id:
            by_call.setdefault(d.call_id, []).append(d)
    moved = 0
    for call, items in by_call.items():
        items.sort(key=lambda d: d.seq)
        async with r.pipeline(transaction=True) as pipe:
            for d in items:
                body = {k: v for k, v in d.fields.items()
                        if k in ENTRY_FIELDS}
                pipe.xadd(keys.stream_for(call), body)  # type: ignore[arg-type]
                pipe.xdel(keys.dead, d.entry_id)
            pipe.srem(keys.blocked, call)
            pipe.hincrby(keys.stats, "replayed", len(items))
            await pipe.execute()
        moved += len(items)
        METRICS.inc("events.outbox.replayed", len(items))
        log_event(log, logging.INFO, "events.outbox.replayed", call_id=call, count=len(items))
    return moved
