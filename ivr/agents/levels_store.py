"""Rebuild a day's service-level figures from the durable levels stream in Redis.

The outbox copies every event the figures read (``ivr.events.levels``) to
``{prefix}:levels`` in the same script that stores it for delivery; the pusher never
deletes from it (entries older than ``LEVELS_RETENTION_DAYS`` are trimmed).  So the
figures read here are the same before and after a restart of the bridge or of this
command, and whatever the pusher has delivered.

Bounded memory: the stream is read in chunks of ``CHUNK`` entries; what is kept is the
aggregator's (buckets, entries of calls not ended, one integer per call of the day).
The stream's entry ids are the write times, so a day is read from a little before its
start (clock differences) to some hours after its end (events written late while Redis
was unreachable): entries outside those bounds are not read, and only queue entries
that began within the day are counted.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis

from ivr.agents.levels import HOTLINE_TZ, LevelsAggregator, day_bounds
from ivr.events.keys import Keys
from ivr.events.levels import LevelRecord
from ivr.log import event as log_event

log = logging.getLogger("ivr.agents.levels")

CHUNK = 1000
BEFORE_S = 300.0  # entries written up to this long before the day began are read
AFTER_S = 6 * 3600.0  # and up to this long after it ended


def _stream_id(epoch: float) -> str:
    return f"{max(int(epoch * 1000), 0)}-0"


async def read_levels(r: aioredis.Redis, keys: Keys, day: date, *,
                      tz: ZoneInfo = HOTLINE_TZ, chunk: int = CHUNK,
                      before_s: float = BEFORE_S, after_s: float = AFTER_S) -> LevelsAggregator:
    """The figures of ``day`` (in ``tz``) folded from ``keys.levels``."""
    start, end = day_bounds(day, tz)
    return await read_window(r, keys, start, end, tz=tz, chunk=chunk, before_s=before_s,
                             after_s=after_s)


async def read_window(r: aioredis.Redis, keys: Keys, start: float, end: float, *,
                      tz: ZoneInfo = HOTLINE_TZ, chunk: int = CHUNK,
                      before_s: float = BEFORE_S, after_s: float = 0.0) -> LevelsAggregator:
    """The figures of the queue entries that began in ``[start, end)`` (epoch seconds;
    e.g. the last 24 hours for a wallboard), folded from ``keys.levels``."""
    agg = LevelsAggregator(tz=tz, window=(start, end))
    low, high = _stream_id(start - before_s), _stream_id(end + after_s)
    skipped = 0
    while True:
        rows: Any = await r.xrange(keys.levels, min=low, max=high, count=chunk)
        for _, fields in rows:
            body = fields.get(b"l") if b"l" in fields else fields.get("l")
            try:
                agg.fold(LevelRecord.loads(body or ""))
            except ValueError:
                skipped += 1
        if len(rows) < chunk:
            break
        last = rows[-1][0]
        low = "(" + (last.decode() if isinstance(last, bytes) else str(last))
    if skipped:
        log_event(log, logging.WARNING, "agents.levels.unreadable_entries",
                  stream=keys.levels, start=start, end=end, skipped=skipped)
    return agg
