"""Durable jobs with a lease, in Redis: the generic part of the recordings' and the
callbacks' job queues (ivr/recordings, ivr/callbacks).

Each job is a text record in a hash (``jobs``), when it is due a score in a sorted set
(``due``), and a version in a third hash (``versions``).  :meth:`LeasedJobs.claim` takes
the first job due and moves its score a lease ahead in one script, so two processes
never claim the same job, and a process that dies holding one leaves it due again when
the lease runs out.  :meth:`LeasedJobs.replace` changes a record only if its version is
the one the caller read (compare and set): of two processes that both saw an outcome,
one applies it.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

# claim the first due job: move its score a lease ahead and return it with its version
_CLAIM_LUA = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #due == 0 then return false end
redis.call('ZADD', KEYS[1], ARGV[2], due[1])
return {due[1], redis.call('HGET', KEYS[2], due[1]), redis.call('HGET', KEYS[3], due[1])}
"""

# replace a job if its version is ARGV[2] ('' = the job must not exist); ARGV[4] = due
# score or '' (not due: removed from the due set)
_REPLACE_LUA = """
local cur = redis.call('HGET', KEYS[3], ARGV[1])
if ARGV[2] == '' then
  if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return false end
elseif cur ~= ARGV[2] then
  return false
end
local v = redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] == '' then
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
end
return v
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class LeasedJobs:
    """Job records (text) by id, due times, versions; claims with a lease."""

    def __init__(self, redis: aioredis.Redis, jobs: str, due: str, versions: str) -> None:
        self.redis = redis
        self.jobs_key, self.due_key, self.versions_key = jobs, due, versions
        self._claim = redis.register_script(_CLAIM_LUA)
        self._replace = redis.register_script(_REPLACE_LUA)

    async def claim(self, now: float, lease_s: float) -> tuple[str, str, int] | None:
        """The first job due at ``now`` — ``(id, record, version)`` — now due again only
        at ``now + lease_s``; None when nothing is due.  A due entry without a record
        (should not happen) is dropped."""
        got = await self._claim(keys=[self.due_key, self.jobs_key, self.versions_key],
                                args=[now, now + lease_s])
        if not got:
            return None
        job_id, text, version = _text(got[0]), got[1], got[2]
        if text is None:
            await self.redis.zrem(self.due_key, job_id)
            return None
        return job_id, _text(text), int(version) if version is not None else 0

    async def replace(self, job_id: str, version: int | None, record: str,
                      due: float | None) -> int | None:
        """Store ``record`` if the job's version is still ``version`` (None: only if the
        job does not exist yet); due at ``due`` (None: not due any more).  Returns the new
        version, or None when another process changed the job first."""
        got = await self._replace(
            keys=[self.jobs_key, self.due_key, self.versions_key],
            args=[job_id, "" if version is None else str(version), record,
                  "" if due is None else repr(float(due))])
        return None if got is None else int(got)

    async def get(self, job_id: str) -> tuple[str, int] | None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(self.jobs_key, job_id)
            pipe.hget(self.versions_key, job_id)
            text, version = await pipe.execute()
        if text is None:
            return None
        return _text(text), int(version) if version is not None else 0

    async def all(self) -> dict[str, str]:
        rows: dict[Any, Any] = await self.redis.hgetall(self.jobs_key)
        return {_text(k): _text(v) for k, v in rows.items()}

    async def due_at(self, job_id: str) -> float | None:
        score = await self.redis.zscore(self.due_key, job_id)
        return None if score is None else float(score)

    async def remove(self, *job_ids: str) -> None:
        if not job_ids:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.due_key, *job_ids)
            pipe.hdel(self.jobs_key, *job_ids)
            pipe.hdel(self.versions_key, *job_ids)
            await pipe.execute()
