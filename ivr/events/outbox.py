"""Durable outbox: call events go into Redis Streams before anything else happens.

:class:`Outbox` writes events in order through one writer task that batches them into
one Lua script call (the events, the ``written`` counter and the checkpoints of the calls
they belong to land together, atomically).  While Redis is unreachable the writer keeps
the events in memory, in order, and retries with backoff; :meth:`Outbox.submit` /
:meth:`Outbox.submit_unit` return a future resolved once the write is in Redis.

Call checkpoints (``{prefix}:calls``, hash call id → ``CallState.checkpoint()`` JSON, see
:mod:`ivr.calls.state`) are written in the same script as the events of the same unit,
so after a crash the stored state of a call always matches the last event of it in the
streams.

:func:`read_status` and :func:`replay_dead_letters` serve ``ivr events status`` and
``ivr events replay``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from ivr.errors import ConfigError
from ivr.events.config import EventsConfig
from ivr.events.keys import GROUP, Keys
from ivr.events.levels import LEVELS_RETENTION_S, LevelRecord, is_level_type
from ivr.events.model import CallEvent
from ivr.log import event as log_event
from ivr.metrics import METRICS
from ivr.redisconn import check_cluster, kind_of, require_hash_tag

log = logging.getLogger("ivr.events.outbox")

WRITE_BATCH = 500
# A unit with checkpoints only (no event: a routing variable, a new channel…) waits at
# most this long for an event to ride along with, so it adds no write of its own under
# load (it is written at once by flush/close, or when a caller waits for it).
STATE_LINGER_S = 0.05

# One round trip and one AOF fsync for a whole batch, with the counter and the call
# checkpoints, atomically.  KEYS: stats, calls, levels, fence, positions; ARGV: the
# writer's fencing token ("" = unguarded: a single bridge), n, the levels stream's MINID
# (older entries are trimmed), then (stream, m, e, record) per event (a record not "":
# the event's compact LevelRecord, added to the levels stream, which the pusher never
# deletes from: the service-level figures are rebuilt from it), then k, then
# (call id, checkpoint JSON or "" = call ended: delete) per call, then p, then (field,
# value) per input position (ivr/failover: how far in the AMI stream and the IVR steps
# this batch goes).  A guarded batch whose token is no longer the fence's writes nothing
# and returns -1: another bridge took over.  (Stream keys are passed as arguments: fine
# on a single Redis server, which the outbox uses.)
_ADD_LUA = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[1] then
  return -1
end
local n = tonumber(ARGV[2])
for i = 0, n - 1 do
  local a = 4 + 4 * i
  redis.call('XADD', ARGV[a], '*', 'm', ARGV[a + 1], 'e', ARGV[a + 2])
  if ARGV[a + 3] ~= '' then
    redis.call('XADD', KEYS[3], 'MINID', '~', ARGV[3], '*', 'l', ARGV[a + 3])
  end
end
if n > 0 then
  redis.call('HINCRBY', KEYS[1], 'written', n)
end
local base = 4 + 4 * n
local k = tonumber(ARGV[base])
for j = 0, k - 1 do
  local state = ARGV[base + 2 + 2 * j]
  if state == '' then
    redis.call('HDEL', KEYS[2], ARGV[base + 1 + 2 * j])
  else
    redis.call('HSET', KEYS[2], ARGV[base + 1 + 2 * j], state)
  end
end
local pbase = base + 1 + 2 * k
local p = tonumber(ARGV[pbase])
for j = 0, p - 1 do
  redis.call('HSET', KEYS[5], ARGV[pbase + 1 + 2 * j], ARGV[pbase + 2 + 2 * j])
end
return n
"""
REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


def keys_for(config: EventsConfig) -> Keys:
    return Keys(config.stream_prefix, config.partitions)


# (call id, checkpoint JSON, or None when the call ended and its checkpoint goes)
StateUpdate = tuple[str, str | None]
# (field, value) of the writer's position hash: how far the batch goes in an input
Positions = dict[str, str]
_Unit = tuple[list[CallEvent], list[StateUpdate], asyncio.Future[None], Positions | None]


class OutboxFenced(ConfigError):
    """The outbox's writes are guarded by a fencing token (``ivr/failover``) and another
    bridge holds a newer one: nothing was written, and nothing more will be."""


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


async def check_store(r: aioredis.Redis, config: EventsConfig) -> None:
    """What the Redis behind ``[redis] url`` must offer the outbox (ivr/redisconn.py): on
    a cluster, a hash-tagged prefix (every script's keys in one slot), every slot served,
    and no ``wait_replicas`` (WAIT has no key to route by there)."""
    url = config.redis_url
    require_hash_tag(url, config.stream_prefix, "[events] stream_prefix")
    if kind_of(url) == "cluster" and config.wait_replicas > 0:
        raise ConfigError(
            "[redis] wait_replicas is for a single primary with replicas (Sentinel); on a "
            "Redis Cluster set it to 0 / Redis 集群上 wait_replicas 须为 0")
    if config.wait_replicas < 0 or config.wait_timeout_ms < 0:
        raise ConfigError("[redis] wait_replicas and wait_timeout_ms must not be negative / "
                          "wait_replicas 与 wait_timeout_ms 不能为负数")
    await check_cluster(r, url)


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


class NotReplicated(RedisError):
    """A batch reached the primary but not ``wait_replicas`` replicas in time: it does
    not count as stored and is written again (a duplicate entry is possible if the
    replicas catch up meanwhile; losing one is not)."""


class Outbox:
    """Ordered, batched, retrying writer of call events into the partition streams."""

    def __init__(self, redis: aioredis.Redis, config: EventsConfig) -> None:
        self.redis = redis
        self.config = config
        self.keys = keys_for(config)
        self._queue: deque[_Unit] = deque()
        self._backlog = 0  # events in the queue
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._stopping = False  # the writer must end (even if a cancel is swallowed)
        self._add = redis.register_script(_ADD_LUA)
        self.written = 0  # events this process has written
        self.write_errors = 0
        self.calls_key = self.keys.calls
        # fencing (ivr/failover): (fence key, token, positions hash) while this writer is
        # the owner of its Asterisk's events; None = unguarded (a single bridge)
        self._guard: tuple[str, str, str] | None = None
        self.on_fenced: Callable[[], None] | None = None

    def guard(self, fence_key: str, token: int, positions_key: str) -> None:
        """Write from now on only while ``fence_key`` holds ``token`` (a batch finding
        another token writes nothing; the queue is dropped and :attr:`on_fenced` runs)."""
        self._guard = (fence_key, str(token), positions_key)

    def unguard(self) -> None:
        self._guard = None

    def drop_pending(self, exc: BaseException) -> int:
        """Forget what is queued (a bridge that lost its ownership): each waiter gets
        ``exc``; returns how many events were dropped."""
        dropped = self._backlog
        for _, _, fut, _ in self._queue:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: the caller may not wait for it
        self._queue.clear()
        self._backlog = 0
        return dropped

    @property
    def backlog(self) -> int:
        """Events accepted but not yet in Redis."""
        return self._backlog

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="events-outbox-writer")

    def submit(self, event: CallEvent) -> asyncio.Future[None]:
        """Queue ``event`` (order of calls = order in the stream); the future resolves
        when it is stored in Redis."""
        return self.submit_unit([event], [])

    def submit_unit(self, events: list[CallEvent], states: Sequence[StateUpdate] = (),
                    *, urgent: bool = True,
                    positions: Positions | None = None) -> asyncio.Future[None]:
        """Queue ``events`` and the checkpoints of their calls as one unit: all of it is
        stored in one script call (never split across batches), after every unit
        submitted before it; the future resolves when it is in Redis.  A unit without
        events and not ``urgent`` may wait up to ``STATE_LINGER_S`` for company."""
        if self._closing:
            raise RuntimeError("outbox is closed")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((events, list(states), fut, positions))
        self._backlog += len(events)
        if events or urgent:
            self._wakeup.set()
        elif len(self._queue) == 1:  # an idle writer waits for a wake-up: at most the linger
            asyncio.get_running_loop().call_later(STATE_LINGER_S, self._wakeup.set)
        return fut

    async def write(self, events: list[CallEvent]) -> None:
        if events:
            await self.submit_unit(list(events), [])

    async def flush(self) -> None:
        """Wait until everything submitted so far is in Redis."""
        if self._queue:
            self._wakeup.set()
            await asyncio.shield(self._queue[-1][2])

    async def close(self, flush: bool = True) -> None:
        self._closing = True
        if flush and self._task is not None and not self._task.done():
            await self.flush()
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.drop_pending(RuntimeError("outbox closed before the event was written"))

    def _batch(self) -> tuple[list[_Unit], list[str | int], int]:
        """The next units to write (whole units, about ``WRITE_BATCH`` events) and the
        script arguments: their events, then the latest checkpoint of each call."""
        units: list[_Unit] = []
        ev_args: list[str | int] = []
        states: dict[str, str] = {}
        positions: Positions = {}
        n = 0
        stream_for = self.keys.stream_for
        for unit in self._queue:
            units.append(unit)
            events, updates, _, where = unit
            if where:
                positions.update(where)
            for ev in events:
                fields = entry_fields(ev)
                ev_args += [stream_for(ev.call_id), fields["m"], fields["e"],
                            LevelRecord.of(ev).dumps() if is_level_type(ev.type) else ""]
            n += len(events)
            for cid, state in updates:  # a later unit's checkpoint supersedes
                states[cid] = "" if state is None else state
            if n >= WRITE_BATCH:
                break
        minid = int((time.time() - LEVELS_RETENTION_S) * 1000)
        guard = self._guard
        args: list[str | int] = ["" if guard is None else guard[1], n, f"{minid}-0",
                                 *ev_args, len(states)]
        for cid, state in states.items():
            args += [cid, state]
        args.append(len(positions) if guard is not None else 0)
        if guard is not None:
            for key, value in positions.items():
                args += [key, value]
        return units, args, n

    async def _store(self, keys: list[str], args: list[str | int]) -> Any:
        """One batch: the script, and with ``wait_replicas`` the ``WAIT`` for that many
        replicas on the same connection (a pipeline); too few replicas in time raise
        :class:`NotReplicated`, so the batch is retried and never counts as stored."""
        want = self.config.wait_replicas
        if want <= 0:
            return await self._add(keys=keys, args=args)
        async with self.redis.pipeline(transaction=False) as pipe:
            await self._add(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", want, self.config.wait_timeout_ms)
            result, replicas = await pipe.execute()
        if int(replicas) < want:
            METRICS.inc("events.outbox.not_replicated")
            raise NotReplicated(f"{replicas} of {want} replicas acknowledged the batch "
                                f"within {self.config.wait_timeout_ms} ms")
        return result

    async def _run(self) -> None:
        delay = 0.05
        # Checked after every await: redis-py can absorb a cancellation that arrives
        # while a command is in flight, and close() must not wait for ever.
        while not self._stopping:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not self._wakeup.is_set():  # checkpoints only: let an event catch up
                timer = asyncio.get_running_loop().call_later(STATE_LINGER_S,
                                                              self._wakeup.set)
                try:
                    await self._wakeup.wait()
                finally:
                    timer.cancel()
            units, args, n = self._batch()
            guard = self._guard
            try:
                result = await self._store(
                    [self.keys.stats, self.calls_key, self.keys.levels,
                     self.keys.stats if guard is None else guard[0],
                     self.keys.stats if guard is None else guard[2]], args)
            except REDIS_ERRORS as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # redis-py may turn the cancellation of an in-flight command into a
                    # connection error: close() is waiting for this task to stop.
                    raise asyncio.CancelledError from exc
                self.write_errors += 1
                METRICS.inc("events.outbox.write_errors")
                log_event(log, logging.WARNING, "events.outbox.write_failed",
                          error=repr(exc), backlog=len(self._queue), retry_in=round(delay, 3))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            if result == -1:  # fenced: another bridge owns these calls now
                METRICS.inc("events.outbox.fenced")
                dropped = self.drop_pending(OutboxFenced(
                    "another bridge took over this Asterisk's call events; nothing written "
                    "/ 另一桥接进程已接管，本进程不再写入"))
                log_event(log, logging.WARNING, "events.outbox.fenced", dropped=dropped)
                # the stale token stays: anything submitted later is refused the same way
                if self.on_fenced is not None:
                    self.on_fenced()
                continue
            for _ in units:
                self._queue.popleft()
            self._backlog -= n
            for _, _, fut, _ in units:
                if not fut.done():
                    fut.set_result(None)
            self.written += n
            if n:
                METRICS.inc("events.outbox.written", n)


@dataclass(slots=True)
class PartitionStatus:
    stream: str
    length: int  # entries not yet delivered (delivered ones are deleted)
    pending: int  # read by a pusher, not acknowledged yet
    lag: int | None  # not yet read by any pusher
    consumers: int
    owner: str | None  # pusher holding the partition lease
    fence: int = 0  # the partition's fencing token (lease acquisitions so far)


@dataclass(slots=True)
class BackendOutage:
    """One pusher's record of a ticket-backend outage (``{prefix}:outage``)."""

    consumer: str
    since: float  # wall clock: first failed request of the outage
    failures: int  # failed requests so far
    error: str  # the last one's error
    age_s: float  # how long it has lasted (by Redis's clock)
    updated_ago_s: float  # since the pusher last refreshed the record

    @property
    def stale(self) -> bool:
        """The pusher has not refreshed it for 5 minutes (it retries at least every
        ``backoff_max``): it may have died mid-outage."""
        return self.updated_ago_s > STALE_OUTAGE_S


STALE_OUTAGE_S = 300.0


@dataclass(slots=True)
class OutboxStatus:
    prefix: str
    partitions: list[PartitionStatus] = field(default_factory=list)
    dead_letters: int = 0
    blocked_calls: int = 0
    calls_in_progress: int = 0  # checkpointed by the bridge (resumed after a restart)
    written: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    replayed: int = 0
    retries: int = 0
    oldest_undelivered_s: float | None = None  # age of the oldest event not delivered
    outages: list[BackendOutage] = field(default_factory=list)

    @property
    def backend_outage(self) -> bool:
        return bool(self.outages)

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
        out["backend_outage"] = self.backend_outage
        for o, obj in zip(self.outages, out["outages"], strict=True):
            obj["stale"] = o.stale
        return out


async def read_status(r: aioredis.Redis, keys: Keys) -> OutboxStatus:
    """The outbox's figures from **one snapshot**: every read is in one MULTI/EXEC
    transaction, and every writer changes a stream together with its counter in one
    script or transaction, so ``events_lost`` is exact (0) even while events are
    written and delivered.  (Redis's clock, for the ages, is read just before: a Redis
    Cluster allows no keyless TIME in a transaction.)"""
    secs, micros = await r.time()
    now = int(secs) + int(micros) / 1e6
    async with r.pipeline(transaction=True) as pipe:
        pipe.hgetall(keys.stats)
        for p, stream in enumerate(keys.streams):
            pipe.xlen(stream)
            pipe.xinfo_groups(stream)
            pipe.xrange(stream, count=1)
            pipe.get(keys.lease(p))
            pipe.get(keys.fence(p))
        pipe.xlen(keys.dead)
        pipe.scard(keys.blocked)
        pipe.hlen(keys.calls)
        pipe.hgetall(keys.outage)
        res: list[Any] = await pipe.execute(raise_on_error=False)
    for item in res:
        # XINFO GROUPS of a stream not created yet is an error reply; anything else is
        # a real failure
        if isinstance(item, Exception) and not (
                isinstance(item, ResponseError) and "no such key" in str(item).lower()):
            raise item
    it = iter(res)
    st = OutboxStatus(prefix=keys.prefix)
    stats = _decode(next(it) or {})
    for counter in ("written", "delivered", "dead_lettered", "replayed", "retries"):
        setattr(st, counter, int(stats.get(counter, 0) or 0))
    oldest_ms: int | None = None
    for stream in keys.streams:
        length = int(next(it))
        groups: Any = next(it)
        first: Any = next(it)
        owner: Any = next(it)
        fence: Any = next(it)
        if isinstance(owner, bytes):
            owner = owner.decode()
        if isinstance(owner, str):  # "consumer/token"
            owner = owner.rsplit("/", 1)[0]
        pending = 0
        lag: int | None = None
        consumers = 0
        for g in groups if isinstance(groups, list) else []:
            gname: Any = g.get("name")
            if gname in (GROUP, GROUP.encode()):
                pending = int(g.get("pending", 0))
                raw_lag = g.get("lag")
                lag = int(raw_lag) if raw_lag is not None else None
                consumers = int(g.get("consumers", 0))
        if first:
            raw_id = first[0][0]
            ms = int((raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id))
                     .split("-")[0])
            oldest_ms = ms if oldest_ms is None else min(oldest_ms, ms)
        st.partitions.append(PartitionStatus(
            stream, length, pending, lag, consumers, owner, int(fence or 0)))
    st.dead_letters = int(next(it))
    st.blocked_calls = int(next(it))
    st.calls_in_progress = int(next(it))
    if oldest_ms is not None:
        st.oldest_undelivered_s = round(max(0.0, now - oldest_ms / 1000), 3)
    for consumer, raw in sorted(_decode(next(it) or {}).items()):
        try:
            rec = json.loads(raw)
            st.outages.append(BackendOutage(
                consumer, float(rec["since"]), int(rec["failures"]), str(rec["error"]),
                round(max(0.0, now - float(rec["since"])), 3),
                round(max(0.0, now - float(rec["updated"])), 3)))
        except (ValueError, KeyError, TypeError):
            st.outages.append(BackendOutage(consumer, now, 0, f"unreadable record {raw[:80]!r}",
                                            0.0, 0.0))
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


@dataclass(slots=True)
class OwnerStatus:
    """Who writes one Asterisk server's call events when several bridges serve it
    (``[events] failover``, ivr/failover): the lease holder, its fencing token and every
    bridge's last report (role, readiness, takeovers)."""

    server: str
    owner: str | None
    token: int
    bridges: dict[str, dict[str, Any]]


async def read_owners(r: aioredis.Redis, keys: Keys, servers: Sequence[str]) -> list[OwnerStatus]:
    out: list[OwnerStatus] = []
    for server in servers:
        async with r.pipeline(transaction=True) as pipe:
            pipe.get(keys.owner(server, "lease"))
            pipe.get(keys.owner(server, "fence"))
            pipe.hgetall(keys.owner(server, "bridges"))
            lease, fence, raw = await pipe.execute()
        if not lease and not fence and not raw:
            continue  # no failover for this server
        holder = lease.decode() if isinstance(lease, bytes) else lease
        bridges: dict[str, dict[str, Any]] = {}
        for name, text in _decode(raw or {}).items():
            try:
                bridges[name] = json.loads(text)
            except ValueError:
                bridges[name] = {"role": "?"}
        out.append(OwnerStatus(server, None if holder is None else holder.rsplit("/", 1)[0],
                               int(fence or 0), bridges))
    return out
