"""Quality review's Redis keys (I/O only), under ``[events] stream_prefix + ":quality"``:

    call:<id>       the ended call's record (JSON: routing, recordings, timeline), kept
                    RECORD_DAYS (sampling reads yesterday's)
    day:<YYYY-MM-DD>  the ids of that day's ended calls (same lifetime)
    review:<id>     a sampled call's review (JSON), kept REVIEW_DAYS
    reviews:<day>   the day's reviewed call ids;  agent:<interface>  an agent's
    sampled:<day>   set once the day's sample is drawn
    seq:<id>        the call's last event seq (quality.* events continue after it)
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from ivr.quality.state import CallRecord, Review

RECORD_DAYS = 3
REVIEW_DAYS = 400
_DAY_S = 86400

_NEXT_SEQ = """
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])
return redis.call('INCR', KEYS[1])
"""


class QualityStore:
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = f"{prefix}:quality"
        self._next_seq = redis.register_script(_NEXT_SEQ)

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def put_record(self, rec: CallRecord) -> None:
        ttl = RECORD_DAYS * _DAY_S
        async with self.redis.pipeline(transaction=True) as p:
            p.set(self._k("call", rec.call_id), json.dumps(rec.to_json(), ensure_ascii=False),
                  ex=ttl)
            p.sadd(self._k("day", rec.day), rec.call_id)
            p.expire(self._k("day", rec.day), ttl)
            await p.execute()

    async def record(self, call_id: str) -> CallRecord | None:
        raw = await self.redis.get(self._k("call", call_id))
        return None if raw is None else CallRecord.from_json(json.loads(raw))

    async def records_of(self, day: str) -> list[CallRecord]:
        ids = sorted(x.decode() if isinstance(x, bytes) else str(x)
                     for x in await self.redis.smembers(self._k("day", day)))
        out = []
        for i in range(0, len(ids), 500):
            raws: list[Any] = await self.redis.mget([self._k("call", c) for c in ids[i:i + 500]])
            out += [CallRecord.from_json(json.loads(r)) for r in raws if r is not None]
        return out

    async def put_review(self, rv: Review) -> None:
        ttl = REVIEW_DAYS * _DAY_S
        async with self.redis.pipeline(transaction=True) as p:
            p.set(self._k("review", rv.call_id), json.dumps(rv.to_json(), ensure_ascii=False),
                  ex=ttl)
            p.sadd(self._k("reviews", rv.day), rv.call_id)
            p.expire(self._k("reviews", rv.day), ttl)
            if rv.agent_interface:
                p.sadd(self._k("agent", rv.agent_interface), rv.call_id)
                p.expire(self._k("agent", rv.agent_interface), ttl)
            await p.execute()

    async def review(self, call_id: str) -> Review | None:
        raw = await self.redis.get(self._k("review", call_id))
        return None if raw is None else Review.from_json(json.loads(raw))

    async def _reviews(self, key: str) -> list[Review]:
        ids = sorted(x.decode() if isinstance(x, bytes) else str(x)
                     for x in await self.redis.smembers(key))
        out = []
        for i in range(0, len(ids), 500):
            raws: list[Any] = await self.redis.mget(
                [self._k("review", c) for c in ids[i:i + 500]])
            out += [Review.from_json(json.loads(r)) for r in raws if r is not None]
        return out

    async def reviews_of(self, day: str) -> list[Review]:
        return await self._reviews(self._k("reviews", day))

    async def reviews_of_agent(self, interface: str) -> list[Review]:
        return await self._reviews(self._k("agent", interface))

    async def mark_sampled(self, day: str) -> bool:
        """True the first time (the day's sample is drawn once)."""
        return bool(await self.redis.set(self._k("sampled", day), "1", nx=True,
                                         ex=REVIEW_DAYS * _DAY_S))

    async def is_sampled(self, day: str) -> bool:
        return bool(await self.redis.exists(self._k("sampled", day)))

    async def next_seq(self, call_id: str, last_seq: int) -> int:
        return int(await self._next_seq(keys=[self._k("seq", call_id)],
                                        args=[last_seq, REVIEW_DAYS * _DAY_S]))
