"""The recordings worker: from the call events the builder makes to archived recordings
and a ``recording.ready`` event per recording.

    worker = RecordingWorker(config, policy=lambda: policy, emit=outbox_write)
    pipeline.add_listener(worker.on_call_events)   # sees every call event built
    async with worker: ...                          # processes due jobs until closed

Flow (see docs/recordings.md):

1. The builder's ``recording.ready`` (a recorded channel hung up: its file is closed)
   is remembered in Redis under the call (``<prefix>:open``).
2. The call's ``call.ended`` turns them into one durable job (``<prefix>:jobs`` +
   ``<prefix>:due``, score = when it is due), with the seq of ``call.ended``.
3. The worker claims a due job (its score moves a lease ahead: a worker that dies
   mid-job leaves it due again after the lease, so a restart resumes it), archives each
   recording (:func:`ivr.recordings.audio.process`, in a thread), writes the
   ``recording.ready`` events (``stage: archived``, seq ``last_seq + 1 …``) to the
   outbox, then removes the job and the raw files.  A failed attempt is due again after
   an exponential back-off; after ``max_attempts`` the job is parked in
   ``<prefix>:dead`` (``ivr recordings process --retry-dead``).  Raw files are deleted
   only after every archive of the job is verified and its events are stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ivr.config import Settings
from ivr.events.model import CallEvent, Source, event_id
from ivr.jobs import LeasedJobs
from ivr.log import event as log_event
from ivr.metrics import METRICS
from ivr.recordings.audio import Archive, process, raw_files
from ivr.recordings.errors import RecordingError
from ivr.recordings.policy import RecordingPolicy
from ivr.recordings.state import CallFacts, Job, RawRecording
from ivr.recordings.store import archive_path, purge

log = logging.getLogger("ivr.recordings")


@dataclass(frozen=True, slots=True)
class RecordingsConfig:
    dir: Path = Path("recordings")  # archive root ([recordings] dir)
    retention_days: int = 180  # [recordings] retention_days
    prefix: str = "ivr:events:recordings"  # Redis keys ([events] stream_prefix + :recordings)
    max_attempts: int = 8
    backoff_base_s: float = 5.0  # 5 s, 10 s, 20 s … ≤ backoff_max_s
    backoff_max_s: float = 900.0
    lease_s: float = 600.0  # a claimed job is due again after this (a dead worker)
    delete_raw: bool = True  # after the archive is verified and its event stored
    poll_s: float = 1.0
    purge_every_s: float | None = 86400.0  # the worker purges at start and then this often

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RecordingsConfig:
        """Raises ConfigError (naming the key and the file) when ``[recordings] dir`` is
        not set."""
        settings.require("recordings_dir")
        assert settings.recordings_dir is not None
        overrides.setdefault("prefix", f"{settings.events.stream_prefix}:recordings")
        return cls(dir=settings.recordings_dir,
                   retention_days=settings.recordings_retention_days, **overrides)

    def backoff(self, attempts: int) -> float:
        return float(min(self.backoff_base_s * 2 ** max(attempts - 1, 0), self.backoff_max_s))


@dataclass(frozen=True, slots=True)
class Keys:
    open: str
    jobs: str
    due: str
    dead: str

    @classmethod
    def of(cls, prefix: str) -> Keys:
        return cls(f"{prefix}:open", f"{prefix}:jobs", f"{prefix}:due", f"{prefix}:dead")


@dataclass(frozen=True, slots=True)
class QueueStatus:
    open_calls: int
    jobs: int
    due_now: int
    dead: int
    dead_jobs: tuple[Job, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {"open_calls": self.open_calls, "jobs": self.jobs, "due_now": self.due_now,
                "dead": self.dead,
                "dead_jobs": [{"call_id": j.call_id, "attempts": j.attempts,
                               "last_error": j.last_error,
                               "files": [r.file for r in j.recordings]}
                              for j in self.dead_jobs]}


class JobQueue:
    """The durable part: calls' raw recordings and post-processing jobs in Redis."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.keys = Keys.of(prefix)
        # claims with a lease (ivr/jobs.py, shared with the callbacks' jobs)
        self._leased = LeasedJobs(redis, self.keys.jobs, self.keys.due, f"{prefix}:versions")

    async def remember(self, call_id: str, rec: RawRecording) -> None:
        raw = await self.redis.hget(self.keys.open, call_id)
        items: list[dict[str, Any]] = [] if raw is None else _json_list(raw)
        if any(i["file"] == rec.file for i in items):
            return
        items.append(rec.to_json())
        await self.redis.hset(self.keys.open, call_id, _dumps(items))

    async def close_call(self, ended: CallEvent, now: float) -> Job | None:
        """The call ended: its remembered recordings become a job due now."""
        raw = await self.redis.hget(self.keys.open, ended.call_id)
        if raw is None:
            return None
        job = Job(call_id=ended.call_id, last_seq=ended.seq, ended_at=ended.ts,
                  facts=CallFacts.of(ended),
                  recordings=tuple(RawRecording.from_json(i) for i in _json_list(raw)))
        await self.add(job, due=now, forget_open=True)
        return job

    async def add(self, job: Job, due: float, forget_open: bool = False) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.jobs, job.call_id, job.dumps())
            pipe.zadd(self.keys.due, {job.call_id: due})
            if forget_open:
                pipe.hdel(self.keys.open, job.call_id)
            await pipe.execute()

    async def claim(self, now: float, lease_s: float) -> Job | None:
        got = await self._leased.claim(now, lease_s)
        return None if got is None else Job.loads(got[1])

    async def done(self, job: Job) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.due, job.call_id)
            pipe.hdel(self.keys.jobs, job.call_id)
            await pipe.execute()

    async def park(self, job: Job) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.due, job.call_id)
            pipe.hdel(self.keys.jobs, job.call_id)
            pipe.hset(self.keys.dead, job.call_id, job.dumps())
            await pipe.execute()

    async def retry_dead(self, now: float, call_id: str | None = None) -> int:
        rows: dict[Any, Any] = await self.redis.hgetall(self.keys.dead)
        n = 0
        for key, text in rows.items():
            cid = key.decode() if isinstance(key, bytes) else str(key)
            if call_id is not None and cid != call_id:
                continue
            job = Job.loads(text)
            fresh = Job(job.call_id, job.last_seq, job.ended_at, job.facts, job.recordings,
                        attempts=0, last_error=job.last_error, history=job.history)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self.keys.dead, cid)
                pipe.hset(self.keys.jobs, cid, fresh.dumps())
                pipe.zadd(self.keys.due, {cid: now})
                await pipe.execute()
            n += 1
        return n

    async def status(self, now: float) -> QueueStatus:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hlen(self.keys.open)
            pipe.hlen(self.keys.jobs)
            pipe.zcount(self.keys.due, "-inf", now)
            pipe.hgetall(self.keys.dead)
            open_calls, jobs, due_now, dead = await pipe.execute()
        dead_jobs = tuple(Job.loads(t) for t in dead.values())
        return QueueStatus(int(open_calls), int(jobs), int(due_now), len(dead_jobs), dead_jobs)


def _json_list(raw: str | bytes) -> list[dict[str, Any]]:
    obj = json.loads(raw)
    return [dict(i) for i in obj] if isinstance(obj, list) else []


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


Emit = Callable[[list[CallEvent]], Awaitable[None]]


class RecordingWorker:
    """Turns ended calls' recordings into archives and ``recording.ready`` events."""

    def __init__(self, config: RecordingsConfig, redis: aioredis.Redis, *,
                 policy: Callable[[], RecordingPolicy], emit: Emit,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.queue = JobQueue(redis, config.prefix)
        self._policy = policy
        self._emit = emit
        self._clock = clock
        self._intake: asyncio.Queue[CallEvent] = asyncio.Queue()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._waiters: dict[str, list[asyncio.Future[list[CallEvent]]]] = {}
        self.archived = 0
        self.failed_attempts = 0
        self.purged = 0
        self._next_purge = 0.0

    async def __aenter__(self) -> RecordingWorker:
        self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # -- input -----------------------------------------------------------------------
    def on_call_events(self, events: Sequence[CallEvent]) -> None:
        """A pipeline listener (sync, never raises): keeps what concerns recordings."""
        for ev in events:
            if ev.type == "call.ended" or (ev.type == "recording.ready"
                                            and "stage" not in ev.data and ev.data.get("file")):
                self._intake.put_nowait(ev)
                self._wakeup.set()

    async def take(self, ev: CallEvent) -> Job | None:
        """Store what ``ev`` says (the durable step of :meth:`on_call_events`)."""
        if ev.type == "recording.ready":
            await self.queue.remember(ev.call_id, RawRecording(
                file=str(ev.data["file"]),
                channel=None if ev.data.get("channel") is None else str(ev.data["channel"]),
                uniqueid=ev.source.uniqueid))
            return None
        job = await self.queue.close_call(ev, self._clock())
        if job is not None:
            log_event(log, logging.INFO, "recordings.job_queued", call_id=job.call_id,
                      recordings=len(job.recordings))
        return job

    def wait_for(self, call_id: str) -> asyncio.Future[list[CallEvent]]:
        """Resolves with the call's ``recording.ready`` events once they are stored."""
        fut: asyncio.Future[list[CallEvent]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(call_id, []).append(fut)
        return fut

    # -- processing ------------------------------------------------------------------
    async def run_due(self) -> int:
        """Process every job due now (claimed one by one); returns how many succeeded."""
        ok = 0
        while not self._stopping:
            now = self._clock()
            job = await self.queue.claim(now, self.config.lease_s)
            if job is None:
                break
            ok += await self._attempt(job)
        return ok

    async def _attempt(self, job: Job) -> int:
        try:
            archives = await asyncio.to_thread(self._archive_all, job)
            events = self._events(job, archives)
            await self._emit(events)
        except Exception as exc:  # noqa: BLE001 - any failure is a failed attempt, retried;
            # the worker goes on with the other jobs (a closed outbox, a pydub surprise)
            await self._failed(job, exc)
            return 0
        await self.queue.done(job)
        if self.config.delete_raw:
            for rec in job.recordings:
                for p in raw_files(Path(rec.file)):
                    p.unlink(missing_ok=True)
        self.archived += len(archives)
        METRICS.inc("recordings.archived", len(archives))
        for ev in events:
            log_event(log, logging.INFO, "recordings.ready", call_id=job.call_id, seq=ev.seq,
                      location=ev.data["location"], duration_s=ev.data["duration_s"],
                      sha256=ev.data["sha256"], attempts=job.attempts + 1)
        for fut in self._waiters.pop(job.call_id, []):
            if not fut.done():
                fut.set_result(events)
        return 1

    async def _failed(self, job: Job, exc: BaseException) -> None:
        self.failed_attempts += 1
        METRICS.inc("recordings.failed_attempts")
        attempts = job.attempts + 1
        why = str(exc) if isinstance(exc, RecordingError) else f"{type(exc).__name__}: {exc}"
        failed = Job(job.call_id, job.last_seq, job.ended_at, job.facts, job.recordings,
                     attempts=attempts, last_error=why,
                     history=(*job.history, why)[-10:])
        if attempts >= self.config.max_attempts:
            await self.queue.park(failed)
            log_event(log, logging.ERROR, "recordings.job_dead", call_id=job.call_id,
                      attempts=attempts, error=why,
                      action="raw files kept; `ivr recordings process --retry-dead`")
            return
        delay = self.config.backoff(attempts)
        await self.queue.add(failed, due=self._clock() + delay)
        log_event(log, logging.WARNING, "recordings.attempt_failed", call_id=job.call_id,
                  attempts=attempts, retry_in_s=delay, error=why)

    def _archive_all(self, job: Job) -> list[tuple[RawRecording, Archive]]:
        rule = self._policy().rule_for(job.facts.routing.entry or None, job.facts.routing.queue)
        out = []
        for rec in job.recordings:
            raw = Path(rec.file)
            dest = archive_path(self.config.dir, job.call_id, job.facts.call_started_at,
                                raw.stem, rule.format)
            out.append((rec, process(raw, dest, rule)))
        return out

    def _events(self, job: Job, archives: list[tuple[RawRecording, Archive]]) -> list[CallEvent]:
        now = self._clock()
        events = []
        for i, (rec, arc) in enumerate(archives):
            seq = job.last_seq + 1 + i
            f = job.facts
            events.append(CallEvent(
                id=event_id(job.call_id, seq, "recording.ready"), type="recording.ready",
                call_id=job.call_id, seq=seq, ts=now, call_started_at=f.call_started_at,
                dialled=f.dialled, caller=f.caller, language=f.language, routing=f.routing,
                source=Source("ami", "MixMonitor", rec.uniqueid),
                data={"stage": "archived", "file": rec.file, "channel": rec.channel,
                      "location": str(arc.path.relative_to(self.config.dir)),
                      "duration_s": arc.duration_s, "sha256": arc.sha256,
                      "format": arc.format, "channels": arc.channels, "bytes": arc.bytes}))
        return events

    # -- the loop --------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="recordings-worker")

    async def _run(self) -> None:
        while not self._stopping:
            try:
                while not self._intake.empty():
                    await self.take(self._intake.get_nowait())
                if not self._stopping:
                    await self.run_due()
                await self._purge_if_due()
            except RedisError as exc:
                log_event(log, logging.ERROR, "recordings.redis_failed", error=repr(exc))
            except Exception as exc:  # noqa: BLE001 - the worker must outlive a bug
                log_event(log, logging.ERROR, "recordings.worker_failed", error=repr(exc))
            if self._stopping or not self._intake.empty():
                continue
            self._wakeup.clear()
            try:
                async with asyncio.timeout(self.config.poll_s):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    async def _purge_if_due(self) -> None:
        every = self.config.purge_every_s
        now = self._clock()
        if every is None or self._stopping or now < self._next_purge:
            return
        self._next_purge = now + every
        try:
            result = await asyncio.to_thread(purge, self.config.dir, self.config.retention_days,
                                             now, actor="ivr serve (daily)")
        except (OSError, RecordingError) as exc:
            log_event(log, logging.ERROR, "recordings.purge_failed", dir=str(self.config.dir),
                      error=str(exc))
            return
        self.purged += result.files
        if result.files:
            log_event(log, logging.INFO, "recordings.purge_done", files=result.files,
                      bytes=result.bytes, days=list(result.days))

    async def close(self) -> None:
        """Stop after the job in progress (a thread cannot be cancelled; its archive is
        finished and stored); the events taken in are stored as jobs first.  Jobs stay
        durable in Redis for the next start."""
        if self._task is None:
            return
        task, self._task = self._task, None
        self._stopping = True
        self._wakeup.set()
        await asyncio.gather(task, return_exceptions=True)
        while not self._intake.empty():  # the calls that ended last: queue their jobs
            try:
                await self.take(self._intake.get_nowait())
            except RedisError as exc:
                log_event(log, logging.ERROR, "recordings.redis_failed", error=repr(exc))
                break
