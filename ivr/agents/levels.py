"""Service-level figures per queue, per 15-minute interval and per day (pure, no I/O).

:class:`LevelsAggregator` folds call events (``call-event.v1``, :class:`CallEvent`) into
interval buckets; the figures are computed from the stored events (``ivr/agents/
levels_store.py`` reads them back from Redis), so they are the same after a restart.
Definitions (docs/agents.md, "Service levels"):

* A **queue entry** is one call in one queue: the first ``queue.joined`` of a call in a
  queue opens it; the same call joining the same queue again (re-queued after a no
  answer) is the same entry; a call that joins two queues is an entry of each.
* **offered** = entries, in the interval (Asia/Shanghai) where the entry began.
  Every outcome of an entry is counted in that same interval (the interval of arrival),
  so an interval's answered + abandoned never exceed its offered.
* **answered** = entries with an ``agent.connected`` of that queue (Asterisk's
  ``HoldTime`` is the wait); **answered_15s** those with a wait ≤ 15 s.
* **abandoned** = entries with a ``queue.abandoned`` (caller hung up while waiting) and
  no answer, wait ≥ 5 s; **abandoned_short** the same with a wait < 5 s (counted apart,
  not in ``abandoned``, and left out of the answer rates' base).
* **answer_rate** = answered / (offered − abandoned_short); **answer_rate_15s** =
  answered_15s / (offered − abandoned_short); 0 when the base is 0.
* **average / longest wait** over answered and abandoned (short included) entries.
* ``callback.*`` events are counted per type in the interval they happened, for the
  queue of their routing (``callbacks``: e.g. ``requested``, ``placed``, ``answered``;
  ``callbacks_placed`` / ``callbacks_reached`` are ``placed`` / ``answered``, the
  attempts the callbacks service placed and the citizens it reached); a callback's own call that
  joins a queue is an entry there like any other call.
* Idempotent: an event of a call whose ``seq`` is not above the last folded one of that
  call (a replayed or duplicated write; the id is ``uuid5(call, seq, type)``) is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ivr.events.levels import LevelRecord, is_level_type
from ivr.events.model import CallEvent

HOTLINE_TZ = ZoneInfo("Asia/Shanghai")
INTERVAL_S = 15 * 60
ANSWER_TARGET_S = 15
SHORT_ABANDON_S = 5

def interval_start(ts: float, tz: ZoneInfo = HOTLINE_TZ) -> datetime:
    """Start of the 15-minute interval holding ``ts``, in the hotline's time zone."""
    local = datetime.fromtimestamp(ts, tz)
    return local.replace(minute=local.minute - local.minute % 15, second=0, microsecond=0)


def day_bounds(day: date, tz: ZoneInfo = HOTLINE_TZ) -> tuple[float, float]:
    """Epoch seconds of ``day``'s start and the next day's start in ``tz``."""
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    return start.timestamp(), (start + timedelta(days=1)).timestamp()


@dataclass(slots=True)
class Figures:
    offered: int = 0
    answered: int = 0
    answered_15s: int = 0
    abandoned: int = 0
    abandoned_short: int = 0
    wait_total_s: float = 0.0
    wait_count: int = 0
    longest_wait_s: float = 0.0
    callbacks: dict[str, int] = field(default_factory=dict)

    def add(self, other: Figures) -> None:
        self.offered += other.offered
        self.answered += other.answered
        self.answered_15s += other.answered_15s
        self.abandoned += other.abandoned
        self.abandoned_short += other.abandoned_short
        self.wait_total_s += other.wait_total_s
        self.wait_count += other.wait_count
        self.longest_wait_s = max(self.longest_wait_s, other.longest_wait_s)
        for k, n in other.callbacks.items():
            self.callbacks[k] = self.callbacks.get(k, 0) + n

    def _waited(self, wait: float) -> None:
        self.wait_total_s += wait
        self.wait_count += 1
        self.longest_wait_s = max(self.longest_wait_s, wait)

    @property
    def base(self) -> int:
        return self.offered - self.abandoned_short

    @property
    def average_wait_s(self) -> float:
        return round(self.wait_total_s / self.wait_count, 2) if self.wait_count else 0.0

    @property
    def answer_rate(self) -> float:
        return round(self.answered / self.base, 4) if self.base > 0 else 0.0

    @property
    def answer_rate_15s(self) -> float:
        return round(self.answered_15s / self.base, 4) if self.base > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "offered": self.offered, "answered": self.answered,
            "answered_15s": self.answered_15s, "abandoned": self.abandoned,
            "abandoned_short": self.abandoned_short,
            "average_wait_s": self.average_wait_s,
            "longest_wait_s": round(self.longest_wait_s, 1),
            "answer_rate": self.answer_rate, "answer_rate_15s": self.answer_rate_15s,
            "callbacks": dict(sorted(self.callbacks.items())),
            # missed-call callbacks (ivr/callbacks): attempts placed, citizens reached
            "callbacks_placed": self.callbacks.get("placed", 0),
            "callbacks_reached": self.callbacks.get("answered", 0),
        }


@dataclass(slots=True)
class _Entry:
    bucket: Figures
    answered: bool = False
    abandoned: bool = False


class LevelsAggregator:
    """Fold call events (each call's in seq order, calls interleaved) with :meth:`fold`;
    read :meth:`intervals` / :meth:`day` any time.  Memory: the buckets, the entries of
    calls not ended yet, and one integer (last seq) per call seen."""

    def __init__(self, *, tz: ZoneInfo = HOTLINE_TZ, target_s: float = ANSWER_TARGET_S,
                 short_abandon_s: float = SHORT_ABANDON_S,
                 window: tuple[float, float] | None = None) -> None:
        self.tz = tz
        self.target_s = target_s
        self.short_abandon_s = short_abandon_s
        # only entries that began in [start, end) are counted (a day read from a stream
        # that also holds the neighbouring days' calls)
        self.window = window
        self.buckets: dict[tuple[str, datetime], Figures] = {}
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._open: dict[str, list[str]] = {}  # call id -> queues with an entry
        self._last_seq: dict[str, int] = {}
        self.folded = 0
        self.duplicates = 0
        # queue entries counted, by the Asterisk server the call was on ("" = the only
        # one): several servers' figures add up, and each server's share is known
        self.offered_by_server: dict[str, int] = {}

    def _bucket(self, queue: str, ts: float) -> Figures:
        key = (queue, interval_start(ts, self.tz))
        b = self.buckets.get(key)
        if b is None:
            b = self.buckets[key] = Figures()
        return b

    def fold_all(self, events: Iterable[CallEvent | LevelRecord]) -> None:
        for ev in events:
            self.fold(ev)

    def fold(self, event: CallEvent | LevelRecord) -> bool:
        """Count ``event``; False when it was a duplicate or changes no figure."""
        if isinstance(event, CallEvent):
            if not is_level_type(event.type):
                return False
            event = LevelRecord.of(event)
        return self._fold(event)

    def _fold(self, ev: LevelRecord) -> bool:
        last = self._last_seq.get(ev.call_id, 0)
        if ev.seq <= last:
            self.duplicates += 1
            return False
        self._last_seq[ev.call_id] = ev.seq
        self.folded += 1
        t = ev.type
        if t == "call.ended":
            for queue in self._open.pop(ev.call_id, ()):
                self._entries.pop((ev.call_id, queue), None)
            return False
        if t.startswith("callback."):
            if self.window is not None and not self.window[0] <= ev.ts < self.window[1]:
                return False
            b = self._bucket(ev.queue, ev.ts)
            kind = t.removeprefix("callback.")
            b.callbacks[kind] = b.callbacks.get(kind, 0) + 1
            return True
        queue = ev.queue
        if not queue:
            return False
        key = (ev.call_id, queue)
        entry = self._entries.get(key)
        if t == "queue.joined":
            if entry is not None:
                return False
            if self.window is not None and not self.window[0] <= ev.ts < self.window[1]:
                # began outside the window: remembered so its outcome is not counted
                self._entries[key] = _Entry(Figures(), answered=True, abandoned=True)
            else:
                b = self._bucket(queue, ev.ts)
                b.offered += 1
                self._entries[key] = _Entry(b)
                self.offered_by_server[ev.server] = self.offered_by_server.get(ev.server, 0) + 1
            self._open.setdefault(ev.call_id, []).append(queue)
            return True
        if entry is None or entry.answered or entry.abandoned:
            return False
        wait = ev.wait_s
        if t == "agent.connected":
            entry.answered = True
            entry.bucket.answered += 1
            if wait <= self.target_s:
                entry.bucket.answered_15s += 1
        elif t == "queue.abandoned":
            entry.abandoned = True
            if wait < self.short_abandon_s:
                entry.bucket.abandoned_short += 1
            else:
                entry.bucket.abandoned += 1
        else:
            return False
        entry.bucket._waited(wait)
        return True

    # -- reading ----------------------------------------------------------------------

    def queues(self) -> list[str]:
        return sorted({q for q, _ in self.buckets})

    def intervals(self, queue: str | None = None) -> list[tuple[str, datetime, Figures]]:
        """Every non-empty bucket, by queue then interval start."""
        return sorted(((q, s, f) for (q, s), f in self.buckets.items()
                       if queue is None or q == queue), key=lambda r: (r[0], r[1]))

    def interval(self, queue: str | None, ts: float) -> Figures:
        """The figures of the interval holding ``ts`` (all queues when ``queue`` is
        None)."""
        start = interval_start(ts, self.tz)
        out = Figures()
        for (q, s), f in self.buckets.items():
            if s == start and (queue is None or q == queue):
                out.add(f)
        return out

    def day(self, queue: str | None, day: date) -> Figures:
        """The figures of ``day`` (hotline time zone); all queues when ``queue`` is None
        (a call offered to two queues counts in each)."""
        out = Figures()
        for (q, s), f in self.buckets.items():
            if s.date() == day and (queue is None or q == queue):
                out.add(f)
        return out

    def report(self, day: date, now: float | None = None) -> dict[str, Any]:
        """Plain data: per queue the day, its 15-minute intervals and (``now`` given) the
        current interval."""
        queues = []
        for q in self.queues():
            entry: dict[str, Any] = {"queue": q, "day": self.day(q, day).to_json()}
            if now is not None:
                entry["current_interval"] = {
                    "start": interval_start(now, self.tz).isoformat(),
                    **self.interval(q, now).to_json()}
            entry["intervals"] = [{"start": s.isoformat(), **f.to_json()}
                                  for _, s, f in self.intervals(q) if s.date() == day]
            queues.append(entry)
        return {"day": day.isoformat(), "time_zone": str(self.tz),
                "answer_target_s": self.target_s, "short_abandon_s": self.short_abandon_s,
                "total": self.day(None, day).to_json(), "queues": queues}
