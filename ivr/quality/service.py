"""Quality review (质检): keeps a record of every ended call (a pipeline listener, and the
recordings worker's archived ``recording.ready``), draws the day's sample
(:mod:`ivr.quality.sampling`) — daily for the day before, or on request — and lets
reviewers score a sampled call on the form and agents appeal.  Each score and appeal is a
call event (``quality.scored`` / ``quality.appealed``: source ``service`` ``quality``,
seq continuing after the call's last event) written to the outbox for the ticket backend.

Who sees what: a reviewer (role supervisor or admin, named in ``[quality.reviewers]``)
only reviews of the queues they review; an agent only its own scored reviews.  Every
input is checked before anything is stored or emitted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from ivr.events.model import CallEvent, DataValue, Routing, Source, event_id
from ivr.log import event as log_event
from ivr.metrics import METRICS
from ivr.quality.errors import (
    NotOwnCall,
    NotReviewer,
    OffFormScore,
    OutsideReviewedQueues,
    RecordingUnavailable,
    ReviewConflict,
    UnknownReview,
)
from ivr.quality.policy import QualityPolicy
from ivr.quality.sampling import sample
from ivr.quality.state import Review, add_recording, day_of, record_of
from ivr.quality.store import QualityStore
from ivr.supervision.state import Actor

log = logging.getLogger("ivr.quality")

REVIEWER_ROLES = frozenset({"supervisor", "admin"})
MAX_BUFFERED_CALLS = 50_000
MAX_COMMENT = 1000
Emit = Callable[[list[CallEvent]], Awaitable[None]]


class QualityService:
    def __init__(self, store: QualityStore, policy: Callable[[], QualityPolicy], *,
                 emit: Emit | None = None, recordings_dir: Path | None = None,
                 clock: Callable[[], float] = time.time, check_s: float = 600.0) -> None:
        self.store = store
        self._policy = policy
        self._emit = emit
        self.recordings_dir = recordings_dir
        self.clock = clock
        self.check_s = check_s
        self._calls: OrderedDict[str, list[CallEvent]] = OrderedDict()
        self._intake: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._daily: asyncio.Task[None] | None = None
        self.records_written = 0
        self._stored = asyncio.Event()  # set (and replaced) after every record written

    @property
    def policy(self) -> QualityPolicy:
        return self._policy()

    # -- intake ------------------------------------------------------------------------

    def on_call_events(self, events: list[CallEvent]) -> None:
        """A pipeline listener (and the recordings worker's archived events): buffers each
        call's events until ``call.ended``, then its record is written."""
        for e in events:
            if e.type == "recording.ready" and e.data.get("stage") == "archived":
                self._intake.put_nowait(("archived", e))
                continue
            if e.type.startswith("quality."):
                continue
            buf = self._calls.get(e.call_id)
            if buf is None:
                buf = self._calls[e.call_id] = []
                while len(self._calls) > MAX_BUFFERED_CALLS:
                    self._calls.popitem(last=False)
                    METRICS.inc("quality.calls_dropped")
            buf.append(e)
            if e.type == "call.ended":
                self._intake.put_nowait(("ended", self._calls.pop(e.call_id)))

    async def _write(self) -> None:
        while True:
            kind, item = await self._intake.get()
            try:
                if kind == "ended":
                    assert isinstance(item, list)
                    await self.store.put_record(record_of(item, self.policy.police_numbers))
                    self.records_written += 1
                else:
                    assert isinstance(item, CallEvent)
                    rec = await self.store.record(item.call_id)
                    if rec is not None:
                        add_recording(rec, item)
                        await self.store.put_record(rec)
            except Exception as exc:  # noqa: BLE001 - one call's record, logged; go on
                METRICS.inc("quality.write_errors")
                log_event(log, logging.ERROR, "quality.write_failed", kind=kind,
                          error=repr(exc))
            finally:
                self._intake.task_done()
                self._stored.set()
                self._stored = asyncio.Event()

    async def wait_recorded(self, call_id: str) -> None:
        """Until the call's record holds an archived recording (it can be sampled)."""
        while True:
            stored = self._stored
            rec = await self.store.record(call_id)
            if rec is not None and rec.recordings:
                return
            await stored.wait()

    async def flush(self) -> None:
        """Until every event heard so far is in Redis."""
        await self._intake.join()

    async def start(self) -> None:
        self._writer = asyncio.create_task(self._write(), name="quality-writer")
        if self.check_s > 0:
            self._daily = asyncio.create_task(self._every_day(), name="quality-daily")

    async def close(self) -> None:
        for task in (self._daily, self._writer):
            if task is not None:
                if task is self._writer:
                    try:
                        async with asyncio.timeout(5):
                            await self.flush()
                    except TimeoutError:
                        pass
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _every_day(self) -> None:
        while True:
            yesterday = day_of(self.clock() - 86400)
            try:
                if not await self.store.is_sampled(yesterday):
                    await self.sample_day(yesterday)
            except Exception as exc:  # noqa: BLE001 - tried again at the next check
                log_event(log, logging.ERROR, "quality.daily_failed", day=yesterday,
                          error=repr(exc))
            await asyncio.sleep(self.check_s)

    # -- sampling ----------------------------------------------------------------------

    async def sample_day(self, day: str) -> list[Review]:
        """Draw ``day``'s sample (idempotent: calls already sampled keep their review)."""
        records = await self.store.records_of(day)
        chosen = sample(records, self.policy)
        by_id = {r.call_id: r for r in records}
        out = []
        for call_id, reasons in sorted(chosen.items()):
            rv = await self.store.review(call_id)
            if rv is None:
                rv = Review.of(by_id[call_id], reasons)
                await self.store.put_review(rv)
                METRICS.inc("quality.sampled")
            out.append(rv)
        await self.store.mark_sampled(day)
        log_event(log, logging.INFO, "quality.sampled", day=day, calls=len(records),
                  sampled=len(out))
        return out

    # -- reviewers ---------------------------------------------------------------------

    def check_reviewer(self, actor: Actor) -> None:
        if actor.role not in REVIEWER_ROLES or actor.name not in self.policy.reviewers:
            raise NotReviewer(f"{actor.name!r} ({actor.role}) is not a quality reviewer in the "
                              "staff policy ([quality.reviewers]) / 人员策略中没有质检员 "
                              f"{actor.name!r}")

    def _may_review(self, actor: Actor, rv: Review) -> None:
        self.check_reviewer(actor)
        if not self.policy.reviews(actor.name, rv.queue):
            raise OutsideReviewedQueues(
                f"call {rv.call_id!r} is in queue {rv.queue!r}, which {actor.name!r} does not "
                f"review / 通话所在队列 {rv.queue!r} 不在质检员 {actor.name!r} 的范围")

    async def _review(self, call_id: str) -> Review:
        rv = await self.store.review(call_id)
        if rv is None:
            raise UnknownReview(f"call {call_id!r} is not in a quality sample / 通话 "
                                f"{call_id!r} 未被抽检")
        return rv

    async def reviews(self, actor: Actor, day: str) -> list[Review]:
        self.check_reviewer(actor)
        return [rv for rv in await self.store.reviews_of(day)
                if self.policy.reviews(actor.name, rv.queue)]

    async def review(self, actor: Actor, call_id: str) -> Review:
        rv = await self._review(call_id)
        self._may_review(actor, rv)
        return rv

    def check_scores(self, scores: dict[str, object]) -> dict[str, int]:
        form = self.policy.form
        keys = [i.key for i in form]
        unknown = sorted(set(scores) - set(keys))
        missing = [k for k in keys if k not in scores]
        if unknown or missing:
            raise OffFormScore(f"scores must name exactly the form's items ({', '.join(keys)});"
                               f" unknown: {unknown}, missing: {missing} / 评分项与评分表不符")
        out: dict[str, int] = {}
        for item in form:
            v = scores[item.key]
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= item.max:
                raise OffFormScore(f"{item.key} ({item.en}): {v!r} is off the form: an integer "
                                   f"0..{item.max} / {item.zh}：{v!r} 超出评分范围 0-{item.max}")
            out[item.key] = v
        return out

    async def score(self, actor: Actor, call_id: str, scores: dict[str, object],
                    comment: str = "") -> Review:
        rv = await self._review(call_id)
        self._may_review(actor, rv)
        checked = self.check_scores(scores)
        if rv.status == "scored":
            raise ReviewConflict(f"call {call_id!r} is already scored by {rv.reviewer!r}; "
                                 "an appeal reopens it / 该通话已评分，申诉后方可重新评分")
        if len(comment) > MAX_COMMENT:
            raise OffFormScore(f"comment over {MAX_COMMENT} characters / 评语过长")
        total = sum(checked.values())
        if rv.status == "appealed" and rv.appeal is not None:
            rv.appeal = {**rv.appeal, "resolved_by": actor.name, "resolved_at": self.clock()}
        if rv.total is not None:
            rv.history.append({"scores": rv.scores, "total": rv.total, "reviewer": rv.reviewer,
                               "at": rv.scored_at})
        data: dict[str, DataValue] = {"review": call_id, "reviewer": actor.name,
                                      "total": total, "form": self.policy.form_id,
                                      "comment": comment[:500],
                                      **{f"score_{k}": v for k, v in checked.items()}}
        await self._event(rv, "quality.scored", data)
        rv.status, rv.scores, rv.total, rv.reviewer, rv.comment = (
            "scored", checked, total, actor.name, comment)
        rv.form_id, rv.scored_at = self.policy.form_id, self.clock()
        await self.store.put_review(rv)
        METRICS.inc("quality.scored")
        return rv

    # -- agents ------------------------------------------------------------------------

    async def my_scores(self, interface: str | None) -> list[Review]:
        if not interface:
            return []
        return sorted((rv for rv in await self.store.reviews_of_agent(interface)
                       if rv.status != "pending"), key=lambda r: r.started_at)

    async def appeal(self, interface: str | None, call_id: str, reason: str) -> Review:
        rv = await self._review(call_id)
        if not interface or rv.agent_interface != interface:
            raise NotOwnCall(f"call {call_id!r} is not this agent's ({interface}) / 该通话不是"
                             "本坐席的")
        if rv.status != "scored":
            raise ReviewConflict(f"call {call_id!r} is {rv.status}: only a scored review can "
                                 f"be appealed, once / 该评分状态为 {rv.status}，不可申诉")
        if rv.scored_at is not None and self.clock() - rv.scored_at > \
                self.policy.appeal_days * 86400:
            raise ReviewConflict(f"the appeal period ({self.policy.appeal_days} days) is over / "
                                 "已超过申诉期限")
        await self._event(rv, "quality.appealed",
                          {"review": call_id, "agent": rv.agent, "reason": reason[:500]})
        rv.status = "appealed"
        rv.appeal = {"reason": reason, "at": self.clock()}
        await self.store.put_review(rv)
        return rv

    # -- recordings --------------------------------------------------------------------

    async def recording_path(self, actor: Actor, call_id: str, index: int = 0) -> Path:
        rv = await self.review(actor, call_id)
        if self.recordings_dir is None or not 0 <= index < len(rv.recordings):
            raise RecordingUnavailable(f"call {call_id!r} has no recording {index} here / "
                                       "该录音不存在")
        root = self.recordings_dir.resolve()
        path = (root / str(rv.recordings[index].get("location") or "")).resolve()
        if root not in path.parents or not path.is_file():
            raise RecordingUnavailable(f"the recording of call {call_id!r} is not in the "
                                       "archive (purged?) / 录音文件不在归档中")
        return path

    # -- events ------------------------------------------------------------------------

    async def _event(self, rv: Review, type_: str, data: dict[str, DataValue]) -> None:
        h = rv.head
        if self._emit is None:
            log_event(log, logging.WARNING, "quality.event_not_sent", call=rv.call_id,
                      type=type_, why="no outbox")
            return
        seq = await self.store.next_seq(rv.call_id, int(h["last_seq"]))
        await self._emit([CallEvent(
            id=event_id(rv.call_id, seq, type_), type=type_, call_id=rv.call_id, seq=seq,
            ts=self.clock(), call_started_at=float(h["started_at"]), dialled=str(h["dialled"]),
            caller=h["caller"], language=h["language"], routing=Routing.from_json(h["routing"]),
            source=Source("service", "quality", ""), data=data)])


QUALITY = web.AppKey("ivr.quality", QualityService)
