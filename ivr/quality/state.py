"""What quality review keeps of a call and of its review (pure: no I/O).

:func:`record_of` turns a call's events (as the pipeline built them, ``call.started`` …
``call.ended``) into a :class:`CallRecord`: who, which queue and agent, tags, the
satisfaction score, whether 110 joined (three-way) or was the transfer target, the
recording(s) once archived (:func:`add_recording`) and a compact timeline of every event
(IVR, queue wait, agent, three-way legs, transfers, mutes, supervision) for the reviewer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from ivr.agents.levels import HOTLINE_TZ
from ivr.events.model import CallEvent
from ivr.privacy import mask_number

NUMBER_KEYS = frozenset({"number", "caller", "target"})


def day_of(ts: float) -> str:
    """The call's day at the hotline (Asia/Shanghai), ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(ts, HOTLINE_TZ).strftime("%Y-%m-%d")


def compact(e: CallEvent, keep: frozenset[str] = frozenset()) -> dict[str, Any]:
    """One timeline entry; phone numbers masked (except ``keep``: 110 …)."""
    data = {k: (mask_number(v) if k in NUMBER_KEYS and isinstance(v, str) and v not in keep
                else v) for k, v in e.data.items()}
    return {"seq": e.seq, "type": e.type, "ts": e.ts, "source": e.source.name, "data": data}


@dataclass(slots=True)
class CallRecord:
    call_id: str
    day: str
    started_at: float
    dialled: str
    caller: str | None
    language: str | None
    routing: dict[str, Any]
    queue: str | None
    agent: str | None  # MemberName
    agent_interface: str | None  # the queue member's interface (an agent token's)
    tags: list[str]
    survey_score: int | None
    police: bool  # 110 (a police number) joined a three-way or was transferred to
    last_seq: int
    ended_at: float
    recordings: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> CallRecord:
        return cls(**obj)


def record_of(events: list[CallEvent], police_numbers: frozenset[str]) -> CallRecord:
    """The record of an ended call from its events (the last one ``call.ended``)."""
    last = events[-1]
    agent_if: str | None = None
    tags: list[str] = list(last.routing.tags)
    score: int | None = None
    police = False
    for e in events:
        d = e.data
        if e.type == "agent.connected" and isinstance(d.get("interface"), str):
            agent_if = str(d["interface"])
        elif e.type == "survey.scored" and isinstance(d.get("score"), int):
            score = int(d["score"])  # type: ignore[arg-type]
        elif e.type == "ivr.tag" and isinstance(d.get("value"), str) and d["value"]:
            if d["value"] not in tags:
                tags.append(str(d["value"]))
        if ((e.type.startswith("threeway.") or e.type.startswith("transfer."))
                and str(d.get("number") or "") in police_numbers):
            police = True
    return CallRecord(
        call_id=last.call_id, day=day_of(last.call_started_at),
        started_at=last.call_started_at, dialled=last.dialled, caller=last.caller,
        language=last.language, routing=last.routing.to_json(), queue=last.routing.queue,
        agent=last.routing.agent, agent_interface=agent_if, tags=tags, survey_score=score,
        police=police, last_seq=max(e.seq for e in events), ended_at=last.ts,
        timeline=[compact(e, police_numbers) for e in events])


def add_recording(rec: CallRecord, e: CallEvent) -> None:
    """An archived ``recording.ready`` (docs/recordings.md) of the call."""
    d = e.data
    if any(r.get("location") == d.get("location") for r in rec.recordings):
        return
    rec.recordings.append({k: d.get(k) for k in ("location", "duration_s", "format",
                                                 "channels", "sha256", "bytes")})
    rec.last_seq = max(rec.last_seq, e.seq)
    rec.timeline.append(compact(e))


REVIEW_STATUSES = ("pending", "scored", "appealed")


@dataclass(slots=True)
class Review:
    call_id: str
    day: str
    reasons: list[str]
    queue: str | None
    agent: str | None
    agent_interface: str | None
    started_at: float
    caller: str | None  # masked
    survey_score: int | None
    tags: list[str]
    recordings: list[dict[str, Any]]
    timeline: list[dict[str, Any]]
    status: str = "pending"
    scores: dict[str, int] = field(default_factory=dict)
    total: int | None = None
    form_id: str | None = None
    reviewer: str | None = None
    comment: str = ""
    scored_at: float | None = None
    appeal: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # earlier scores
    # what its quality.* call events repeat of the call (caller in clear: never shown)
    head: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def view(self) -> dict[str, Any]:
        """As the API shows it (no ``head``)."""
        out = self.to_json()
        del out["head"]
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Review:
        return cls(**obj)

    def summary(self) -> dict[str, Any]:
        """As the API lists it (no ``head``, no timeline)."""
        out = self.view()
        del out["timeline"]
        return out

    @classmethod
    def of(cls, rec: CallRecord, reasons: list[str]) -> Review:
        return cls(call_id=rec.call_id, day=rec.day, reasons=reasons, queue=rec.queue,
                   agent=rec.agent, agent_interface=rec.agent_interface,
                   started_at=rec.started_at,
                   caller=mask_number(rec.caller) if rec.caller else None,
                   survey_score=rec.survey_score, tags=list(rec.tags),
                   recordings=list(rec.recordings), timeline=list(rec.timeline),
                   head={"started_at": rec.started_at, "dialled": rec.dialled,
                         "caller": rec.caller, "language": rec.language,
                         "routing": rec.routing, "last_seq": rec.last_seq})
