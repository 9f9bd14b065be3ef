"""Delivers the outbox to the ticket backend: at least once, in order per call.

One worker per partition stream.  A worker first takes the partition's lease
(renewed), so one pusher at a time owns a partition.  The lease is fenced: each
acquisition increments the partition's fencing token, every write under the lease (acks,
dead letters, claiming, reading) is a script that does nothing unless the token is still
current, and the lease is checked before each request (which carries the token as
``X-Ivr-Fence``), so a pusher paused past its lease sends and writes nothing once
another took the partition.  The owner then re-claims
every entry still pending in the consumer group (``XAUTOCLAIM`` from ``0-0``: entries a
killed pusher had read but not acknowledged) and delivers them before reading new ones
(``XREADGROUP >``).  Pushers share the partitions: each says every third of a lease
that it is alive (``{prefix}:pushers``, :data:`_CENSUS_LUA`), takes no more than its fair
share (partitions ÷ live pushers, rounded up) and hands back its highest partition when
it holds more — between batches, so the next holder re-claims what it left pending and
order holds; one pusher alone takes them all.  A batch is split by call: different calls
are delivered concurrently, the events of one call strictly one after the other, and the next batch
is read only when the whole batch is settled, so seq n+1 of a call is never sent before
seq n was acknowledged.

With ``batch_max > 1`` (default) a partition batch goes out as ``POST {ticket_url}/batch``
and the backend answers per event; with ``batch_max = 1`` each event is POSTed alone with
its id as ``Idempotency-Key``.  Requests carry an HMAC signature (scheme v2).

Failures (the rule, :func:`retryable_status`): what the backend cannot take *now* — no
answer (timeout, connection refused/reset), 5xx, 408, 429, 401/403 (credentials or clock:
not the event's fault), 409 ``out_of_order`` — is retried with exponential backoff and
jitter (``backoff_base`` … ``backoff_max``, at least a ``Retry-After``) for as long as the
event has been failing less than ``retry_budget`` (default 24 h), so an outage of hours
needs no person; the later events of its call wait behind it.  What the backend rejects
as wrong — any other 4xx, a per-event ``invalid`` or ``conflict`` — goes to the
dead-letter stream at once, and so does an event whose budget ran out; its call is then
marked blocked: every later event of that call is dead-lettered too (reason
``blocked``) until ``ivr events replay`` puts them back, in order.

``out_of_order`` (the backend lacks an earlier event of the call) is the one per-call
"not now": it is retried only for ``out_of_order_window`` (default 60 s, a real race
settles sooner), and meanwhile the call is **parked** — its events stay pending in the
group, later events of the call read meanwhile join it in order, and the partition goes
on reading and delivering every other call (no head-of-line blocking).  When the window
has passed the event is dead-lettered (error log ``events.pusher.out_of_order_dead_letter``
naming the call, counter ``events.pusher.out_of_order_dead_lettered``) and its later
events follow it as ``blocked``: retrying cannot mend the backend's state for that call.

Outage: when requests have failed with the backend down for ``outage_after`` seconds
without one success, the pusher logs ``events.pusher.outage_started`` at error level,
sets the gauge ``events.pusher.outage`` to 1 and records itself in ``{prefix}:outage``
(``ivr events status`` shows it); the first success logs ``events.pusher.outage_ended``
(error level, with its duration) and clears both.

Delivered entries are acknowledged and deleted atomically with the ``delivered``
counter (a Lua script), so a count is never doubled by a redelivery.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from yarl import URL

from ivr.events.config import EventsConfig
from ivr.events.errors import DeliveryError, EventsError
from ivr.events.keys import GROUP, Keys
from ivr.events.outbox import (
    ENTRY_FIELDS,
    REDIS_ERRORS,
    check_partitions,
    check_store,
    ensure_groups,
    keys_for,
    parse_meta,
)
from ivr.events.signing import IDEMPOTENCY_HEADER, request_target, signed_headers
from ivr.log import event as log_event
from ivr.metrics import METRICS
from ivr.redisconn import connect as redis_connect

log = logging.getLogger("ivr.events.pusher")

# Fencing: every write a pusher makes under its partition lease (acknowledgements, dead
# letters, claiming and reading entries into its name) is one script that first checks
# the partition's fencing token ({prefix}:fence:p{n}) is still the one its lease was
# acquired with, and does nothing (returns -1) otherwise: a pusher paused past its lease
# cannot write once another pusher took the partition.
FENCE_CHECK = "if redis.call('GET', KEYS[{k}]) ~= ARGV[{a}] then return -1 end\n"
STALE = -1  # what a fenced script returns for a stale token

# KEYS: stream, stats, fence ; ARGV: group, token, id...
_ACK_LUA = FENCE_CHECK.format(k=3, a=2) + """
local n = 0
for i = 3, #ARGV do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    redis.call('XDEL', KEYS[1], ARGV[i])
    n = n + 1
  end
end
if n > 0 then redis.call('HINCRBY', KEYS[2], 'delivered', n) end
return n
"""

# KEYS: stream, stats, dead, blocked, fence ; ARGV: group, entry id, call, reason,
# attempts, token, then field/value pairs of the entry.
_DEAD_LUA = FENCE_CHECK.format(k=5, a=6) + """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
local f = {'reason', ARGV[4], 'attempts', ARGV[5], 'source_entry', ARGV[2]}
for i = 7, #ARGV do f[#f + 1] = ARGV[i] end
redis.call('XADD', KEYS[3], '*', unpack(f))
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[3])
redis.call('HINCRBY', KEYS[2], 'dead_lettered', 1)
return 1
"""

# The lease (value "consumer/token") and its fencing token.  KEYS: lease, fence ; ARGV:
# consumer, ttl ms, token ("0" = acquire).  Renewal (token given): kept while the fencing
# token is unchanged (nobody acquired the partition since, even if the lease lapsed),
# else 0.  Acquisition: only a free lease, with the next fencing token.  Returns the
# token held, or 0.
_LEASE_LUA = """
local cur = redis.call('GET', KEYS[1])
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[3] ~= '0' then
  local mine = ARGV[1] .. '/' .. ARGV[3]
  if tonumber(ARGV[3]) == fence and (not cur or cur == mine) then
    redis.call('SET', KEYS[1], mine, 'PX', ARGV[2])
    return fence
  end
  return 0
end
if cur then return 0 end
fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '/' .. fence, 'PX', ARGV[2])
return fence
"""

# The live pushers.  KEYS: pushers ; ARGV: consumer, now ms, until ms ("0": leaving).
# Records this pusher until ARGV[3] (or removes it), drops the lapsed ones, returns how
# many pushers are live (a pusher leaving counts the others).
_CENSUS_LUA = """
if ARGV[3] == '0' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
local all = redis.call('HGETALL', KEYS[1])
local live = 0
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) > tonumber(ARGV[2]) then live = live + 1
  else redis.call('HDEL', KEYS[1], all[i]) end
end
return live
"""

# KEYS: lease ; ARGV: "consumer/token"
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# XAUTOCLAIM under the fence.  KEYS: stream, fence ; ARGV: group, consumer, token, start,
# count.  Returns {next start, entries} (entries deleted meanwhile are acknowledged).
_CLAIM_LUA = FENCE_CHECK.format(k=2, a=3) + """
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[4], 'COUNT', ARGV[5])
if r[3] and #r[3] > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(r[3])) end
return {r[1], r[2]}
"""

# XREADGROUP > under the fence (not blocking).  KEYS: stream, fence ; ARGV: group,
# consumer, token, count.  Returns the entries read, or when there is none the id of the
# stream's last entry ("0-0" when empty) to wait after with a plain XREAD BLOCK.
_READ_LUA = FENCE_CHECK.format(k=2, a=3) + """
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[4],
                     'STREAMS', KEYS[1], '>')
if r and r[1] and #r[1][2] > 0 then return r[1][2] end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then return last[1][1] end
return '0-0'
"""

# Every request carries the partition lease's fencing token: "<token>; partition=<stream>"
# (a backend may refuse a token lower than one it saw for that partition).
FENCE_HEADER = "X-Ivr-Fence"
BLOCKED_REASON = "blocked: an earlier event of this call is in the dead-letter stream"
# Entries of parked calls held per partition: past this, the worker stops reading new
# entries until parked calls settle (memory stays bounded when every call is refused).
MAX_PARKED = 10_000
LATENCY_SAMPLES = 200_000
OUTAGE_REFRESH_S = 10.0  # how often a pusher in an outage refreshes {prefix}:outage
# Statuses that say "not now" although they are 4xx.  401/403: the backend refuses our
# credentials or our clock (a rotated secret, NTP off), not this event — dead-lettering
# every event would need a person to replay them all, so they wait like in an outage.
RETRY_4XX = frozenset({401, 403, 408, 429})


def retryable_status(status: int, body: str = "") -> tuple[bool, bool]:
    """(retryable, backend down) for a non-2xx HTTP answer.  Retryable: the backend
    cannot take the event *now* (5xx, 408, 429, 401/403, 409 ``out_of_order``, anything
    not 4xx); not retryable: the backend rejects it as wrong (other 4xx, 409
    ``conflict``).  Backend down: it took nothing at all (counts toward an outage)."""
    if status == 409:
        return _error_of(body) != "conflict", False
    if 400 <= status < 500:
        retry = status in RETRY_4XX
        return retry, retry
    return True, True


def _error_of(body: str) -> str:
    try:
        obj = json.loads(body)
    except ValueError:
        return ""
    return str(obj.get("error", "")) if isinstance(obj, dict) else ""


def _retry_after(resp: aiohttp.ClientResponse) -> float | None:
    raw = resp.headers.get("Retry-After", "")
    if raw.isascii() and raw.isdigit() and len(raw) < 7:
        return float(raw)
    return None


class OutageMonitor:
    """Is the ticket backend in an outage?  Pure state, fed with each request's outcome:
    an outage starts when requests have failed with the backend down for ``after``
    seconds with no success in between, and ends with the first success."""

    def __init__(self, after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.after = after
        self.clock = clock
        self.failing_since: float | None = None  # first failure of the current streak
        self.failing_since_wall = 0.0  # the same, wall clock
        self.active = False
        self.started_at = 0.0  # wall clock, when the outage was declared
        self.failures = 0  # failed requests in the current streak
        self.last_error = ""

    def failed(self, error: str) -> bool:
        """A request failed with the backend down; True when this starts an outage."""
        now = self.clock()
        if self.failing_since is None:
            self.failing_since = now
            self.failing_since_wall = time.time()
            self.failures = 0
        self.failures += 1
        self.last_error = error
        if not self.active and now - self.failing_since >= self.after:
            self.active = True
            self.started_at = time.time()
            return True
        return False

    def succeeded(self) -> float | None:
        """A request was answered; the failing time (s) when this ends an outage."""
        ended = self.failing_since is not None and self.active
        duration = self.clock() - self.failing_since if self.failing_since is not None else 0
        self.failing_since = None
        self.active = False
        return duration if ended else None

    def failing_for(self) -> float:
        return 0.0 if self.failing_since is None else self.clock() - self.failing_since


class LeaseLost(EventsError):
    """Another pusher holds this partition's lease now."""


class PartitionYielded(EventsError):
    """This pusher handed a partition back: it held more than its fair share."""


@dataclass(slots=True)
class Entry:
    entry_id: str
    call_id: str
    seq: int
    event_id: str
    ts: float
    body: bytes
    fields: dict[str, str]


@dataclass(slots=True)
class PusherStats:
    delivered: int = 0  # acknowledged by the backend (applied or duplicate)
    attempts: int = 0
    failures: int = 0
    dead_lettered: int = 0
    reclaimed: int = 0
    latencies: list[float] = field(default_factory=list)  # event ts -> backend ack, s


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter for the ``attempt``-th retry (1-based): between
    half and all of ``base`` × 2^(attempt−1), capped at ``cap`` (the exponent is bounded:
    an outage of hours makes thousands of attempts)."""
    delay: float = min(cap, base * (2.0 ** min(max(attempt - 1, 0), 60)))
    return delay * random.uniform(0.5, 1.0)


def budget_reason(budget: float, last: str) -> str:
    return f"retry budget of {budget:g}s exhausted; last error: {last}"


def out_of_order_reason(window: float, last: str) -> str:
    return (f"out_of_order for {window:g}s: the backend lacks an earlier event of this call "
            f"(its state for the call is broken; retrying will not mend it); last error: "
            f"{last}")


def _is_out_of_order(exc: DeliveryError) -> bool:
    """A 409 that may pass (not ``conflict``): the backend lacks an earlier event."""
    return exc.status == 409 and exc.retryable


@dataclass(slots=True)
class Parked:
    """A call whose head event the backend answers ``out_of_order``, set aside so the
    partition's other calls keep flowing.  ``entries``: its events read so far, in
    stream order (all still pending in the group); retried at ``retry_at`` until
    ``out_of_order_window`` after ``ooo_since``."""

    entries: list[Entry]
    attempts: int  # failed attempts of the head event
    first_failure: float  # the head's first failure of any kind (retry budget), clock
    ooo_since: float  # the head's first out_of_order answer (the window), clock
    retry_at: float  # clock


def _entry_flat(entry_id: Any, flat: list[Any]) -> Entry:
    """An entry as a script returns it: its fields as a flat field/value list."""
    return _entry(entry_id, dict(zip(flat[::2], flat[1::2], strict=True)))


def _entry(entry_id: Any, raw: dict[Any, Any]) -> Entry:
    f = {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v))
        for k, v in raw.items()
    }
    eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    call, seq, event_id, _type, ts = parse_meta(f.get("m", ""))
    return Entry(eid, call, seq, event_id, ts, f.get("e", "").encode("utf-8"), f)


class Pusher:
    """``async with Pusher(config) as p: ...`` delivers until closed."""

    def __init__(
        self,
        config: EventsConfig,
        *,
        redis: aioredis.Redis | None = None,
        on_delivered: Callable[[Entry], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config.require("redis_url", "ticket_url", "secret")
        self.keys: Keys = keys_for(config)
        self.consumer = config.consumer_name()
        self._own_redis = redis is None
        self.redis = redis or redis_connect(config.redis_url)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._on_delivered = on_delivered
        self._clock = clock
        self.outage = OutageMonitor(config.outage_after, clock)
        self._outage_written = 0.0
        self.stats = PusherStats()
        self._ack = self.redis.register_script(_ACK_LUA)
        self._dead = self.redis.register_script(_DEAD_LUA)
        self._lease = self.redis.register_script(_LEASE_LUA)
        self._release = self.redis.register_script(_RELEASE_LUA)
        self._census_script = self.redis.register_script(_CENSUS_LUA)
        self.share = config.partitions  # partitions this pusher may hold (fair share)
        self._claim = self.redis.register_script(_CLAIM_LUA)
        self._read = self.redis.register_script(_READ_LUA)
        self.batch_url = config.ticket_url.rstrip("/") + "/batch"
        # what is signed is what goes on the request line: the same URL objects
        self._batch_url = URL(self.batch_url)
        self._events_url = URL(config.ticket_url)
        self._batch_target = request_target(self._batch_url)
        self._events_target = request_target(self._events_url)
        self._lease_at = [0.0] * config.partitions
        # per partition: the fencing token of the lease held (0 = none)
        self.fence = [0] * config.partitions
        self._last_id: list[str | None] = [None] * config.partitions
        self.leases_lost = 0  # times another pusher took a partition from this one
        self.lease_lost = asyncio.Event()  # set when it happens (tests await it)
        # test hook: awaited with (partition, entries) before they are sent (a test
        # pauses a pusher here, holding a batch, past its lease)
        self.before_send: Callable[[int, list[Entry]], Awaitable[None]] | None = None
        self._idle = [asyncio.Event() for _ in range(config.partitions)]
        # per partition: calls set aside after out_of_order (call id -> its state)
        self._parked: list[dict[str, Parked]] = [{} for _ in range(config.partitions)]

    async def __aenter__(self) -> Pusher:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> None:
        await check_store(self.redis, self.config)
        timeout = aiohttp.ClientTimeout(total=self.config.request_timeout)
        conn = aiohttp.TCPConnector(limit=self.config.concurrency * self.config.partitions)
        self._session = aiohttp.ClientSession(timeout=timeout, connector=conn)
        METRICS.set_gauge("events.pusher.outage", 0)
        try:  # a field left by a previous process of the same name
            await self.redis.hdel(self.keys.outage, self.consumer)
        except REDIS_ERRORS:
            pass
        await self._census()  # alive before the first lease: a share, not everything
        self._tasks.append(asyncio.create_task(self._census_loop(), name="pusher-census"))
        for p in range(self.config.partitions):
            self._tasks.append(asyncio.create_task(self._worker(p), name=f"pusher-p{p}"))

    async def close(self) -> None:
        self._stopping.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
        try:
            await self._census(leaving=True)
            for p in range(self.config.partitions):
                if self.fence[p]:
                    await self._release(keys=[self.keys.lease(p)],
                                        args=[f"{self.consumer}/{self.fence[p]}"])
                    self.fence[p] = 0
            # this pusher no longer delivers: its outage record goes (the undelivered
            # events and their age still show in `ivr events status`)
            await self.redis.hdel(self.keys.outage, self.consumer)
        except REDIS_ERRORS:
            pass
        if self._own_redis:
            await self.redis.aclose()

    async def wait_idle(self) -> None:
        """Until every partition worker has found its stream empty once more."""
        for ev in self._idle:
            ev.clear()
        await asyncio.gather(*(ev.wait() for ev in self._idle))

    # -- partition worker ------------------------------------------------------------

    async def _worker(self, p: int) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            try:
                await self._hold_lease(p)
                if not self.fence[p]:  # stopping
                    return
                await check_partitions(self.redis, self.keys)
                await ensure_groups(self.redis, self.keys)
                # parked entries are pending in the group: the reclaim takes them again
                self._parked[p] = {}
                await self._reclaim(p)
                await self._read_loop(p)
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except (LeaseLost, PartitionYielded):
                continue
            except REDIS_ERRORS as exc:
                METRICS.inc("events.pusher.redis_errors")
                log_event(log, logging.WARNING, "events.pusher.redis_error", partition=p,
                          error=repr(exc), retry_in=round(delay, 3))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 2.0)
            except Exception as exc:  # noqa: BLE001 - a bug must not stop a partition
                METRICS.inc("events.pusher.errors")
                log.exception("events.pusher.worker_failed",
                              extra={"fields": {"partition": p, "error": repr(exc)}})
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 5.0)

    async def _hold_lease(self, p: int) -> None:
        """Wait until partition ``p``'s lease is free, and take it with the next fencing
        token."""
        keys = [self.keys.lease(p), self.keys.fence(p)]
        self.fence[p] = 0
        # checks the stop flag too: a cancellation that redis-py turned into a Redis error
        # (caught by the worker) must not leave this loop waiting for ever
        while not self._stopping.is_set():
            now = time.monotonic()
            if self.held >= self.share:  # our fair share is taken: leave it to others
                await asyncio.sleep(self.config.lease_ms / 4000)
                continue
            token = int(await self._lease(keys=keys,
                                          args=[self.consumer, self.config.lease_ms, 0]))
            if token:
                self.fence[p] = token
                self._lease_at[p] = now
                return
            await asyncio.sleep(self.config.lease_ms / 4000)

    @property
    def held(self) -> int:
        """Partitions whose lease this pusher holds."""
        return sum(1 for f in self.fence if f)

    async def _census_loop(self) -> None:
        """Every third of a lease: say this pusher is alive and recompute its share."""
        while not self._stopping.is_set():
            await asyncio.sleep(self.config.lease_ms / 3000)
            try:
                await self._census()
            except REDIS_ERRORS as exc:  # the share stays; the workers see Redis too
                log_event(log, logging.WARNING, "events.pusher.redis_error",
                          partition=None, error=repr(exc))

    async def _census(self, leaving: bool = False) -> None:
        """Say this pusher is alive (or leaving) and recompute its fair share of the
        partitions from how many pushers are."""
        wall_ms = int(time.time() * 1000)
        until = 0 if leaving else wall_ms + self.config.lease_ms
        live = int(await self._census_script(keys=[self.keys.pushers],
                                             args=[self.consumer, wall_ms, until]))
        parts = self.config.partitions
        self.share = parts if live <= 1 else -(-parts // live)

    async def _yield_surplus(self, p: int) -> None:
        """Between batches: hand partition ``p`` back when this pusher holds more than
        its share and ``p`` is the highest it holds (the next holder re-claims what is
        pending, so order holds)."""
        if self.held <= self.share or p != max(i for i, f in enumerate(self.fence) if f):
            return
        token, self.fence[p] = self.fence[p], 0
        await self._release(keys=[self.keys.lease(p)], args=[f"{self.consumer}/{token}"])
        METRICS.inc("events.pusher.partitions_yielded")
        log_event(log, logging.INFO, "events.pusher.partition_yielded", partition=p,
                  share=self.share)
        raise PartitionYielded(f"partition {p}: handed to another pusher (fair share)")

    async def _renew_lease(self, p: int) -> None:
        """Renew partition ``p``'s lease if a third of it has passed (called from the
        read loop, between retries so a long outage does not let it lapse, and before
        every request to the backend: a pusher that was paused finds out here, before
        it sends anything, that another one took the partition)."""
        now = time.monotonic()
        if now - self._lease_at[p] > self.config.lease_ms / 3000:
            token = self.fence[p]
            held = await self._lease(keys=[self.keys.lease(p), self.keys.fence(p)],
                                     args=[self.consumer, self.config.lease_ms, token])
            if not held or int(held) != token:
                self._lost(p)
            self._lease_at[p] = now

    def _lost(self, p: int) -> None:
        """Another pusher took the partition (we were cut off or paused longer than the
        lease): stop; the worker waits for the lease again and re-claims."""
        METRICS.inc("events.pusher.lease_lost")
        log_event(log, logging.WARNING, "events.pusher.lease_lost", partition=p,
                  fence=self.fence[p])
        self.fence[p] = 0
        self.leases_lost += 1
        self.lease_lost.set()
        raise LeaseLost(f"partition {p}: another pusher holds the lease now")

    def _check(self, p: int, result: Any) -> Any:
        """The result of a fenced script, or LeaseLost when our token was stale."""
        if isinstance(result, int) and result == STALE:
            self._lost(p)
        return result

    async def _ack_entries(self, p: int, ids: list[str]) -> None:
        self._check(p, await self._ack(
            keys=[self.keys.stream(p), self.keys.stats, self.keys.fence(p)],
            args=[GROUP, self.fence[p], *ids]))

    async def _reclaim(self, p: int) -> None:
        """Take over everything pending in the group (we hold the lease) and deliver it
        in stream order before reading anything new."""
        keys = [self.keys.stream(p), self.keys.fence(p)]
        start = "0-0"
        while True:
            res = self._check(p, await self._claim(
                keys=keys, args=[GROUP, self.consumer, self.fence[p], start,
                                 self.config.batch_size]))
            nxt, claimed = res[0], res[1]
            entries = [_entry_flat(i, f) for i, f in claimed if f]
            if entries:
                self.stats.reclaimed += len(entries)
                METRICS.inc("events.pusher.reclaimed", len(entries))
                log_event(log, logging.INFO, "events.pusher.reclaimed", partition=p,
                          count=len(entries))
                await self._process(p, entries)
            nxt_s = nxt.decode() if isinstance(nxt, bytes) else str(nxt)
            if nxt_s == "0-0":
                return
            start = nxt_s

    async def _read_loop(self, p: int) -> None:
        stream = self.keys.stream(p)
        parked = self._parked[p]
        while not self._stopping.is_set():
            await self._renew_lease(p)
            await self._yield_surplus(p)
            block_ms = 500
            if parked:  # wake up for the next parked call's retry
                wait = min(pk.retry_at for pk in parked.values()) - self._clock()
                block_ms = max(1, min(500, int(wait * 1000)))
            entries: list[Entry] = []
            if sum(len(pk.entries) for pk in parked.values()) < MAX_PARKED:
                entries = await self._read_fenced(p)
                last = self._last_id[p]
                if not entries and last is not None:
                    # wait for a new entry without taking it (a plain XREAD changes
                    # nothing), then read it under the fence
                    got: Any = await self.redis.xread({stream: last}, count=1,
                                                      block=block_ms)
                    if got:
                        entries = await self._read_fenced(p)
            else:
                await asyncio.sleep(block_ms / 1000)
            if not entries and not self._due(p):
                if not parked and await self.redis.xlen(stream) == 0:
                    self._idle[p].set()
                continue
            await self._process(p, entries)

    async def _read_fenced(self, p: int) -> list[Entry]:
        """New entries of partition ``p`` read into our name under the fence; when none,
        remembers the stream's last id to wait after."""
        res: Any = self._check(p, await self._read(
            keys=[self.keys.stream(p), self.keys.fence(p)],
            args=[GROUP, self.consumer, self.fence[p], self.config.batch_size]))
        if isinstance(res, list):
            self._last_id[p] = None
            return [_entry_flat(i, f) for i, f in res if f]
        self._last_id[p] = res.decode() if isinstance(res, bytes) else str(res)
        return []

    def _due(self, p: int) -> bool:
        now = self._clock()
        return any(pk.retry_at <= now for pk in self._parked[p].values())

    async def _process(self, p: int, entries: list[Entry]) -> None:
        """Deliver ``entries`` (in stream order) with the parked calls that are due.  An
        entry of a call that is parked and not due joins it (order kept)."""
        parked = self._parked[p]
        fresh: list[Entry] = []
        for e in entries:
            pk = parked.get(e.call_id)
            if pk is not None:
                pk.entries.append(e)
            else:
                fresh.append(e)
        now = self._clock()
        due = {c: parked.pop(c) for c in [c for c, pk in parked.items() if pk.retry_at <= now]}
        work = [e for pk in due.values() for e in pk.entries] + fresh
        if not work:
            return
        if self.config.batch_max > 1:
            await self._process_batched(p, work, due)
        else:
            await self._process_single(p, work, due)

    def _park(self, p: int, call: str, entries: list[Entry], attempts: int,
              first_failure: float, ooo_since: float, reason: str, seq: int | None) -> None:
        """Set ``call`` aside until its next retry (out_of_order within the window)."""
        cfg = self.config
        now = self._clock()
        self._parked[p][call] = Parked(
            entries, attempts, first_failure, ooo_since,
            now + backoff_delay(attempts, cfg.backoff_base, cfg.backoff_max))
        METRICS.inc("events.pusher.parked")
        self._log_retry(call, seq, attempts, reason)

    async def _out_of_order_expired(self, call: str, e: Entry, attempts: int,
                                    since: float) -> None:
        METRICS.inc("events.pusher.out_of_order_dead_lettered")
        log_event(log, logging.ERROR, "events.pusher.out_of_order_dead_letter", call_id=call,
                  seq=e.seq, event_id=e.event_id, attempts=attempts,
                  out_of_order_for_s=round(self._clock() - since, 3),
                  detail="the ticket backend lacks an earlier event of this call; its later "
                  "events follow into the dead letters. Repair the ticket, then "
                  "'ivr events replay --call' / 工单系统缺少该通话的先前事件，已转入死信")

    async def _blocked(self) -> set[str]:
        raw = await self.redis.smembers(self.keys.blocked)
        return {b.decode() if isinstance(b, bytes) else str(b) for b in raw}

    async def _process_batched(self, p: int, entries: list[Entry],
                               carry: dict[str, Parked]) -> None:
        """Batch mode: the partition batch goes out as ``POST {ticket_url}/batch``
        requests holding the next event of every call (the head of each call); the
        backend answers per event.  Acknowledged heads are replaced by the call's next
        event in the next round; a call whose event was not applied keeps it for the
        next round (after backoff) — except after ``out_of_order``: that call is parked
        (:meth:`_park`) and the others go on.  ``carry``: the retry state of the parked
        calls that are due again."""
        remaining: dict[str, list[Entry]] = {}
        for e in entries:
            remaining.setdefault(e.call_id, []).append(e)
        blocked = await self._blocked()
        for call in [c for c in remaining if c in blocked]:
            for e in remaining.pop(call):
                await self._dead_letter(p, e, BLOCKED_REASON, 0)
        attempts: dict[str, int] = {c: pk.attempts for c, pk in carry.items()}
        # call -> when its head event first failed / was first answered out_of_order
        first_failure: dict[str, float] = {c: pk.first_failure for c, pk in carry.items()}
        ooo_since: dict[str, float] = {c: pk.ooo_since for c, pk in carry.items()}
        acked: list[str] = []
        cfg = self.config
        while remaining:
            # call -> (reason, retryable, out_of_order)
            failed: dict[str, tuple[str, bool, bool]] = {}
            retry_after = 0.0
            # Strict order: at most ``per_call_in_flight`` events of a call per round, so
            # with the default 1, seq n+1 is only sent once seq n was acknowledged.
            k = cfg.per_call_in_flight
            flat = [e for items in remaining.values() for e in items[:k]]
            for start in range(0, len(flat), cfg.batch_max):
                chunk = flat[start:start + cfg.batch_max]
                self.stats.attempts += 1
                try:
                    results = await self._post_batch(p, chunk)
                except DeliveryError as exc:
                    for e in chunk:
                        failed.setdefault(e.call_id, (str(exc), exc.retryable,
                                                      _is_out_of_order(exc)))
                    retry_after = max(retry_after, exc.retry_after or 0.0)
                    continue
                now = time.time()
                for e, (outcome, detail) in zip(chunk, results, strict=True):
                    if e.call_id in failed:
                        continue
                    if outcome in ("applied", "duplicate"):
                        acked.append(e.entry_id)
                        remaining[e.call_id].remove(e)
                        attempts.pop(e.call_id, None)  # the next event starts afresh
                        first_failure.pop(e.call_id, None)
                        ooo_since.pop(e.call_id, None)
                        self.stats.delivered += 1
                        if len(self.stats.latencies) < LATENCY_SAMPLES:
                            self.stats.latencies.append(now - e.ts)
                        if self._on_delivered is not None:
                            self._on_delivered(e)
                    else:
                        ooo = outcome == "out_of_order"
                        failed[e.call_id] = (f"{outcome}: {detail}", ooo, ooo)
            for call in [c for c, items in remaining.items() if not items]:
                del remaining[call]
            if acked:
                METRICS.inc("events.pusher.delivered", len(acked))
                await self._ack_entries(p, acked)
                acked = []
            if not failed:
                continue
            await self._count_failures(len(failed))
            now = self._clock()
            retrying = False  # a call waits here (not parked): the round backs off
            for call, (reason, retryable, ooo) in failed.items():
                n = attempts[call] = attempts.get(call, 0) + 1
                since = first_failure.setdefault(call, now)
                ooo_start = ooo_since.setdefault(call, now) if ooo else None
                expired = ooo_start is not None and now - ooo_start >= cfg.out_of_order_window
                if retryable and now - since < cfg.retry_budget and not expired:
                    if ooo_start is not None:
                        head = remaining[call][0]
                        self._park(p, call, remaining.pop(call), n, since, ooo_start,
                                   reason, head.seq)
                        del attempts[call], first_failure[call], ooo_since[call]
                    else:
                        self._log_retry(call, None, n, reason)
                        retrying = True
                    continue
                items = remaining.pop(call, [])
                if expired and ooo_start is not None and items:
                    reason = out_of_order_reason(cfg.out_of_order_window, reason)
                    await self._out_of_order_expired(call, items[0], n, ooo_start)
                elif retryable:
                    reason = budget_reason(cfg.retry_budget, reason)
                for i, e in enumerate(items):
                    await self._dead_letter(p, e, reason if i == 0 else BLOCKED_REASON,
                                            n if i == 0 else 0)
                attempts.pop(call, None)
                first_failure.pop(call, None)
                ooo_since.pop(call, None)
            if remaining and retrying:
                worst = min(attempts.get(c, 1) for c in remaining)
                await self._backoff(p, worst, retry_after)

    async def _fenced_send(self, p: int, entries: list[Entry]) -> str:
        """Before a request: the test pause point, then the lease still ours (renewed if
        a third of it passed, so a pusher that slept past it finds out here and sends
        nothing).  Returns the ``X-Ivr-Fence`` header value."""
        if self.before_send is not None:
            await self.before_send(p, entries)
        await self._renew_lease(p)
        return f"{self.fence[p]}; partition={self.keys.stream(p)}"

    async def _post_batch(self, p: int, chunk: list[Entry]) -> list[tuple[str, str]]:
        session = self._session
        assert session is not None
        fence = await self._fenced_send(p, chunk)
        body = b'{"events":[' + b",".join(e.body for e in chunk) + b"]}"
        headers = signed_headers(self.config.secret_bytes, "POST", self._batch_target, body)
        headers["Content-Type"] = "application/json"
        headers[FENCE_HEADER] = fence
        status, text = await self._send(self._batch_url, headers, body)
        try:
            results = json.loads(text)["results"]
            out = [(str(r["result"]), str(r.get("detail", r.get("last_seq", ""))))
                   for r in results]
        except (ValueError, KeyError, TypeError) as exc:
            raise DeliveryError(f"bad batch answer (HTTP {status}): {exc!r}") from exc
        if len(out) != len(chunk):
            raise DeliveryError(f"batch answer has {len(out)} results for {len(chunk)} events")
        return out

    async def _send(self, url: URL, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        """One POST: (status, text) of a 2xx answer, else DeliveryError saying whether
        it may pass (retryable) and whether the backend is down.  Feeds the outage
        monitor."""
        session = self._session
        assert session is not None
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                status = resp.status
                text = await resp.text()
                retry_after = _retry_after(resp)
        except (TimeoutError, aiohttp.ClientError, OSError, UnicodeDecodeError) as exc:
            err = DeliveryError(f"request failed: {type(exc).__name__}: {exc}")
            await self._backend_failed(str(err))
            raise err from exc
        if 200 <= status < 300:
            await self._backend_answered()
            return status, text
        retryable, down = retryable_status(status, text)
        err = DeliveryError(f"HTTP {status}: {text[:200]}", status=status,
                            retryable=retryable, backend_down=down, retry_after=retry_after)
        if down:
            await self._backend_failed(str(err))
        else:
            await self._backend_answered()
        raise err

    async def _process_single(self, p: int, entries: list[Entry],
                              carry: dict[str, Parked]) -> None:
        by_call: dict[str, list[Entry]] = {}
        for e in entries:
            by_call.setdefault(e.call_id, []).append(e)
        blocked = await self._blocked()
        acked: list[str] = []
        sem = asyncio.Semaphore(self.config.concurrency)

        async def run(call: str, items: list[Entry]) -> None:
            async with sem:
                state = carry.get(call)  # the head's retry state, if it was parked
                for i, e in enumerate(items):
                    if call in blocked:
                        await self._dead_letter(p, e, BLOCKED_REASON, 0)
                        continue
                    result = await self._deliver(p, e, state)
                    state = None
                    if isinstance(result, Parked):  # out_of_order: the call waits aside
                        self._park(p, call, items[i:], result.attempts,
                                   result.first_failure, result.ooo_since,
                                   "out_of_order", e.seq)
                        return
                    ok, reason, attempts = result
                    if ok:
                        acked.append(e.entry_id)
                        continue
                    blocked.add(call)
                    await self._dead_letter(p, e, reason, attempts)

        try:
            async with asyncio.TaskGroup() as tg:  # one failing cancels the others
                for c, items in by_call.items():
                    tg.create_task(run(c, items))
        except ExceptionGroup as eg:
            raise eg.exceptions[0] from None
        if acked:
            await self._ack_entries(p, acked)

    async def _dead_letter(self, p: int, e: Entry, reason: str, attempts: int) -> None:
        pairs: list[str] = []
        for k in ENTRY_FIELDS:
            pairs += [k, e.fields.get(k, "")]
        while True:
            try:
                self._check(p, await self._dead(
                    keys=[self.keys.stream(p), self.keys.stats, self.keys.dead,
                          self.keys.blocked, self.keys.fence(p)],
                    args=[GROUP, e.entry_id, e.call_id, reason, attempts, self.fence[p],
                          *pairs]))
                break
            except REDIS_ERRORS as exc:
                log_event(log, logging.WARNING, "events.pusher.redis_error", error=repr(exc))
                await asyncio.sleep(0.2)
        self.stats.dead_lettered += 1
        METRICS.inc("events.pusher.dead_lettered")
        log_event(log, logging.ERROR, "events.pusher.dead_letter", call_id=e.call_id,
                  seq=e.seq, event_id=e.event_id, reason=reason, attempts=attempts)

    async def _deliver(self, p: int, e: Entry,
                       carry: Parked | None = None) -> tuple[bool, str, int] | Parked:
        """(delivered, last failure reason, attempts) — retries with backoff while the
        failures may pass and the retry budget lasts; after ``out_of_order`` within the
        window, the retry state to park the call with (``entries`` empty).  ``carry``:
        the state the event was parked with."""
        attempt = carry.attempts if carry else 0
        cfg = self.config
        first_failure: float | None = carry.first_failure if carry else None
        ooo_since: float | None = carry.ooo_since if carry else None
        while True:
            attempt += 1
            self.stats.attempts += 1
            try:
                await self._post(p, e)
            except DeliveryError as exc:
                reason = str(exc)
                await self._count_failures(1)
                now = self._clock()
                if first_failure is None:
                    first_failure = now
                if not exc.retryable:
                    return False, reason, attempt
                if now - first_failure >= cfg.retry_budget:
                    return False, budget_reason(cfg.retry_budget, reason), attempt
                if _is_out_of_order(exc):
                    if ooo_since is None:
                        ooo_since = now
                    if now - ooo_since >= cfg.out_of_order_window:
                        await self._out_of_order_expired(e.call_id, e, attempt, ooo_since)
                        return (False, out_of_order_reason(cfg.out_of_order_window, reason),
                                attempt)
                    return Parked([], attempt, first_failure, ooo_since, 0.0)
                self._log_retry(e.call_id, e.seq, attempt, reason)
                await self._backoff(p, attempt, exc.retry_after or 0.0)
                continue
            self.stats.delivered += 1
            if len(self.stats.latencies) < LATENCY_SAMPLES:
                self.stats.latencies.append(time.time() - e.ts)
            METRICS.inc("events.pusher.delivered")
            if self._on_delivered is not None:
                self._on_delivered(e)
            return True, "", attempt

    async def _post(self, p: int, e: Entry) -> None:
        fence = await self._fenced_send(p, [e])
        headers = signed_headers(self.config.secret_bytes, "POST", self._events_target, e.body)
        headers[IDEMPOTENCY_HEADER] = e.event_id
        headers[FENCE_HEADER] = fence
        headers["Content-Type"] = "application/json"
        await self._send(self._events_url, headers, e.body)

    # -- failures, back-off, outage ------------------------------------------------------

    async def _count_failures(self, n: int) -> None:
        self.stats.failures += n
        METRICS.inc("events.pusher.failures", n)
        try:
            await self.redis.hincrby(self.keys.stats, "retries", n)
        except REDIS_ERRORS:
            pass

    def _log_retry(self, call: str, seq: int | None, attempt: int, reason: str) -> None:
        # During an outage the outage lines say it all: no line per call.
        if not self.outage.active and (attempt in (1, 3) or attempt % 10 == 0):
            log_event(log, logging.WARNING, "events.pusher.retry", call_id=call, seq=seq,
                      attempt=attempt, error=reason)

    async def _backoff(self, p: int, attempt: int, retry_after: float = 0.0) -> None:
        """Sleep the back-off of ``attempt`` (at least ``retry_after``, at most
        ``backoff_max``), renewing the partition lease meanwhile."""
        cfg = self.config
        delay = max(backoff_delay(attempt, cfg.backoff_base, cfg.backoff_max),
                    min(retry_after, cfg.backoff_max))
        step = max(self.config.lease_ms / 3000, 0.01)
        while True:
            await self._renew_lease(p)
            if delay <= 0:
                return
            await asyncio.sleep(min(delay, step))
            delay -= step

    async def _backend_failed(self, error: str) -> None:
        if self.outage.failed(error):
            METRICS.inc("events.pusher.outages")
            METRICS.set_gauge("events.pusher.outage", 1)
            log_event(log, logging.ERROR, "events.pusher.outage_started",
                      consumer=self.consumer, failing_for_s=round(self.outage.failing_for(), 3),
                      failed_requests=self.outage.failures, error=error[:300])
            await self._write_outage()
        elif self.outage.active and self._clock() - self._outage_written >= OUTAGE_REFRESH_S:
            await self._write_outage()

    async def _backend_answered(self) -> None:
        failures, error = self.outage.failures, self.outage.last_error
        duration = self.outage.succeeded()
        if duration is None:
            return
        METRICS.set_gauge("events.pusher.outage", 0)
        log_event(log, logging.ERROR, "events.pusher.outage_ended", consumer=self.consumer,
                  duration_s=round(duration, 3), failed_requests=failures,
                  last_error=error[:300])
        try:
            await self.redis.hdel(self.keys.outage, self.consumer)
        except REDIS_ERRORS:
            pass

    async def _write_outage(self) -> None:
        o = self.outage
        record = {"since": round(o.failing_since_wall, 3),
                  "declared": round(o.started_at, 3), "failures": o.failures,
                  "error": o.last_error[:300], "updated": round(time.time(), 3)}
        self._outage_written = self._clock()
        try:
            await self.redis.hset(self.keys.outage, self.consumer, json.dumps(record))
        except REDIS_ERRORS:
            pass
