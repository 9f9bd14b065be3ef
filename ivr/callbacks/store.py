"""The callbacks' durable part in Redis (keys under ``[events] stream_prefix +
:callbacks``): the jobs with a lease (:class:`ivr.jobs.LeasedJobs`) and which job each
Originate in progress belongs to (by its ``Channel``, so an ``OriginateResponse`` is
matched in any bridge process, also one started after the Originate was sent)."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from ivr.callbacks.state import Job
from ivr.jobs import LeasedJobs


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class CallbackStore:
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.jobs = LeasedJobs(redis, f"{prefix}:jobs", f"{prefix}:due", f"{prefix}:versions")
        self.placing_key = f"{prefix}:placing"

    async def get(self, job_id: str) -> tuple[Job, int] | None:
        got = await self.jobs.get(job_id)
        return None if got is None else (Job.loads(got[0]), got[1])

    async def put(self, job: Job, version: int | None) -> int | None:
        """Store ``job`` if nobody changed it since ``version`` (None: a new job); due at
        ``job.due_at`` while it is active, never once it is final."""
        return await self.jobs.replace(job.id, version, job.dumps(),
                                       job.due_at if job.active else None)

    async def claim(self, now: float, lease_s: float) -> tuple[Job, int] | None:
        got = await self.jobs.claim(now, lease_s)
        return None if got is None else (Job.loads(got[1]), got[2])

    async def all(self) -> list[Job]:
        return sorted((Job.loads(t) for t in (await self.jobs.all()).values()),
                      key=lambda j: (j.created_at, j.id))

    async def set_placing(self, dial: str, job_id: str) -> None:
        await self.redis.hset(self.placing_key, dial, job_id)

    async def placing(self, dial: str) -> str | None:
        got = await self.redis.hget(self.placing_key, dial)
        return None if got is None else _text(got)

    async def clear_placing(self, dial: str, job_id: str) -> None:
        if await self.placing(dial) == job_id:
            await self.redis.hdel(self.placing_key, dial)

    async def purge(self, before: float) -> int:
        """Forget final jobs that ended before ``before`` (their day is over: the one
        job per number per day no longer needs them)."""
        old = [j.id for j in await self.all()
               if not j.active and (j.finished_at or j.created_at) < before]
        await self.jobs.remove(*old)
        return len(old)
