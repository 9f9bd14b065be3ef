"""A callback job (回拨任务) and its life, pure: no Redis, no AMI, no clock.

One job per caller number per day (Asia/Shanghai): its id is derived from the day and
the number (:func:`job_id`), so a second abandoned call or request that day finds the
same job.  States::

    scheduled ──claim──▶ placing ──answered──▶ answered            (final)
        ▲                   │ no_answer / busy / failed
        └──── back-off ◀────┘ … after `attempts` attempts ──▶ exhausted (final)
    scheduled ──cancel (the citizen reached an agent, or an operator)──▶ cancelled (final)

Every step is a call event of the job's own stream (``call_id`` = the job id, ``seq``
1, 2, 3 …), each carrying ``original_call_id``, the call that was missed, so the ticket
backend joins them.  The events a step makes are stored with the job (``pending``) in
the same write and sent after it, so a crash between the two re-sends them (same ids)
instead of losing them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from zoneinfo import ZoneInfo

from ivr.callbacks.errors import UndialableNumber
from ivr.events.model import CallEvent, DataValue, Routing, Source, event_id

HOTLINE_TZ = ZoneInfo("Asia/Shanghai")

State = Literal["scheduled", "placing", "answered", "cancelled", "exhausted"]
ACTIVE: frozenset[str] = frozenset({"scheduled", "placing"})
FINAL: frozenset[str] = frozenset({"answered", "cancelled", "exhausted"})
Outcome = Literal["answered", "no_answer", "busy", "failed"]

# a number Local/<number>@<context> can carry and a PSTN trunk can dial: digits only
NUMBER_RE = re.compile(r"\d{5,20}")

# OriginateResponse Reason (pbx.c pbx_dial_reason: the old originate reasons) → outcome
_REASONS: dict[int, Outcome] = {
    4: "answered",  # AST_CONTROL_ANSWER
    3: "no_answer",  # AST_CONTROL_RINGING: rang, not answered within Timeout (trace 10)
    1: "no_answer",  # AST_CONTROL_HANGUP
    5: "busy",  # AST_CONTROL_BUSY (cause USER_BUSY)
    8: "failed",  # AST_CONTROL_CONGESTION
    0: "failed",  # any other failure, e.g. no such extension behind Local (trace 10)
}


def outcome_of(reason: str | None) -> Outcome:
    """The outcome an ``OriginateResponse``'s ``Reason`` header means."""
    try:
        return _REASONS.get(int(reason or "0"), "failed")
    except ValueError:
        return "failed"


def check_number(number: str | None) -> str:
    """The number, if it can be called back; :class:`UndialableNumber` otherwise (a
    withheld or anonymous caller, letters, a number too short or too long)."""
    text = (number or "").strip()
    if not text or text.lower() in ("anonymous", "unknown", "restricted", "<unknown>"):
        raise UndialableNumber(text, "no caller number (withheld or anonymous) / 无主叫号码")
    if not NUMBER_RE.fullmatch(text):
        raise UndialableNumber(text, "5 to 20 digits expected, nothing else / 应为 5-20 位数字")
    return text


def day_of(ts: float, tz: ZoneInfo = HOTLINE_TZ) -> str:
    return dt.datetime.fromtimestamp(ts, tz).strftime("%Y%m%d")


def job_id(day: str, number: str) -> str:
    """The id of the one job of ``number`` on ``day`` (YYYYMMDD); the number is not
    readable from it (ids appear in logs and URLs)."""
    digest = hashlib.sha256(f"{day}/{number}".encode()).hexdigest()[:12]
    return f"cb-{day}-{digest}"


def next_open(ts: float, is_open: Callable[[float], bool], *, step_s: float = 60.0,
              horizon_s: float = 31 * 86400.0) -> float | None:
    """The first instant at or after ``ts`` when ``is_open`` (minute steps, windows are
    given to the minute); None when closed for the whole horizon."""
    if is_open(ts):
        return ts
    t = (ts // step_s + 1) * step_s
    end = ts + horizon_s
    while t <= end:
        if is_open(t):
            return t
        t += step_s
    return None


@dataclass(frozen=True, slots=True)
class Origin:
    """What the job repeats of the missed call in its events."""

    call_id: str
    dialled: str
    language: str | None
    entry: str
    started_at: float
    anonymous: bool = False  # anonymous dispatch: the ticket keeps no caller number

    def to_json(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "dialled": self.dialled, "language": self.language,
                "entry": self.entry, "started_at": self.started_at,
                "anonymous": self.anonymous}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Origin:
        return cls(str(obj["call_id"]), str(obj.get("dialled", "")), obj.get("language"),
                   str(obj.get("entry", "")), float(obj.get("started_at", 0.0)),
                   bool(obj.get("anonymous", False)))


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    number: str
    day: str
    queue: str
    reason: str  # "abandoned" | "requested" | "operator"
    origin: Origin
    created_at: float
    state: str = "scheduled"
    due_at: float = 0.0
    attempts: int = 0
    seq: int = 0  # the last seq used in the job's event stream
    placed_at: float | None = None
    dial: str = ""  # the Originate Channel of the attempt in progress
    call_ids: tuple[str, ...] = ()  # every missed call of that number that day
    callback_call_id: str = ""  # the Linkedid of the answered callback call
    last_outcome: str = ""
    history: tuple[tuple[float, str], ...] = ()
    finished_at: float | None = None
    pending: tuple[str, ...] = field(default=())  # events stored, maybe not yet sent

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def dumps(self) -> str:
        return json.dumps({
            "id": self.id, "number": self.number, "day": self.day, "queue": self.queue,
            "reason": self.reason, "origin": self.origin.to_json(),
            "created_at": self.created_at, "state": self.state, "due_at": self.due_at,
            "attempts": self.attempts, "seq": self.seq, "placed_at": self.placed_at,
            "dial": self.dial, "call_ids": list(self.call_ids),
            "callback_call_id": self.callback_call_id, "last_outcome": self.last_outcome,
            "history": [list(h) for h in self.history], "finished_at": self.finished_at,
            "pending": list(self.pending),
        }, ensure_ascii=False)

    @classmethod
    def loads(cls, text: str | bytes) -> Job:
        o = json.loads(text)
        return cls(
            id=str(o["id"]), number=str(o["number"]), day=str(o["day"]),
            queue=str(o["queue"]), reason=str(o.get("reason", "abandoned")),
            origin=Origin.from_json(o["origin"]), created_at=float(o["created_at"]),
            state=str(o.get("state", "scheduled")), due_at=float(o.get("due_at", 0.0)),
            attempts=int(o.get("attempts", 0)), seq=int(o.get("seq", 0)),
            placed_at=None if o.get("placed_at") is None else float(o["placed_at"]),
            dial=str(o.get("dial", "")), call_ids=tuple(o.get("call_ids", ())),
            callback_call_id=str(o.get("callback_call_id", "")),
            last_outcome=str(o.get("last_outcome", "")),
            history=tuple((float(t), str(w)) for t, w in o.get("history", ())),
            finished_at=None if o.get("finished_at") is None else float(o["finished_at"]),
            pending=tuple(o.get("pending", ())))

    def to_json(self, *, mask: Callable[[str], str] | None = None) -> dict[str, Any]:
        """What ``ivr callbacks list`` and the API show (``mask`` hides the number)."""
        return {"id": self.id, "number": mask(self.number) if mask else self.number,
                "day": self.day, "queue": self.queue, "reason": self.reason,
                "state": self.state, "attempts": self.attempts, "due_at": self.due_at,
                "last_outcome": self.last_outcome, "original_call_id": self.origin.call_id,
                "call_ids": list(self.call_ids), "created_at": self.created_at,
                "finished_at": self.finished_at,
                "callback_call_id": self.callback_call_id or None}

    # -- the events of the job's stream ----------------------------------------------
    def event(self, type_: str, ts: float, **data: DataValue) -> tuple[Job, CallEvent]:
        """The job with its next seq used, and the ``callback.<type_>`` event."""
        seq = self.seq + 1
        full: dict[str, DataValue] = {
            "original_call_id": self.origin.call_id, "job": self.id, "queue": self.queue,
            "reason": self.reason, "attempt": self.attempts, **data}
        ev = CallEvent(
            id=event_id(self.id, seq, f"callback.{type_}"), type=f"callback.{type_}",
            call_id=self.id, seq=seq, ts=ts, call_started_at=self.created_at,
            dialled=self.origin.dialled, caller=self.number, language=self.origin.language,
            routing=Routing(entry=self.origin.entry, queue=self.queue, tags=("callback",),
                            anonymous=self.origin.anonymous),
            source=Source("service", "callbacks"), data=full)
        return replace(self, seq=seq, pending=(*self.pending, ev.dumps())), ev

    def with_events(self, ts: float, *types: tuple[str, dict[str, DataValue]]) -> Job:
        job = self
        for type_, data in types:
            job, _ = job.event(type_, ts, **data)
        return job

    def noted(self, ts: float, what: str) -> Job:
        return replace(self, history=(*self.history, (ts, what))[-20:])
