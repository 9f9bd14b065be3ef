"""What the slice keeps between steps: the recordings of a call in progress, and the
post-processing job of a call that ended (JSON in Redis, so a restart resumes it)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ivr.events.model import CallEvent, Routing


@dataclass(frozen=True, slots=True)
class RawRecording:
    """One MixMonitor file of a call (from the builder's ``recording.ready``)."""

    file: str
    channel: str | None = None
    uniqueid: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RawRecording:
        return cls(file=str(obj["file"]), channel=obj.get("channel"),
                   uniqueid=str(obj.get("uniqueid", "")))


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What a ``recording.ready`` event repeats of its call (from ``call.ended``)."""

    call_started_at: float
    dialled: str
    caller: str | None
    language: str | None
    routing: Routing

    @classmethod
    def of(cls, ev: CallEvent) -> CallFacts:
        return cls(ev.call_started_at, ev.dialled, ev.caller, ev.language, ev.routing)

    def to_json(self) -> dict[str, Any]:
        return {"call_started_at": self.call_started_at, "dialled": self.dialled,
                "caller": self.caller, "language": self.language,
                "routing": self.routing.to_json()}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> CallFacts:
        return cls(float(obj["call_started_at"]), str(obj["dialled"]), obj.get("caller"),
                   obj.get("language"), Routing.from_json(obj["routing"]))


@dataclass(frozen=True, slots=True)
class Job:
    """Post-processing of every recording of one ended call.

    ``last_seq`` is the seq of the call's ``call.ended``: the call's ``recording.ready``
    events are numbered ``last_seq + 1 …`` in the order of ``recordings``."""

    call_id: str
    last_seq: int
    ended_at: float
    facts: CallFacts
    recordings: tuple[RawRecording, ...]
    attempts: int = 0
    last_error: str = ""
    history: tuple[str, ...] = field(default=())

    def dumps(self) -> str:
        return json.dumps({
            "call_id": self.call_id, "last_seq": self.last_seq, "ended_at": self.ended_at,
            "facts": self.facts.to_json(),
            "recordings": [r.to_json() for r in self.recordings],
            "attempts": self.attempts, "last_error": self.last_error,
            "history": list(self.history),
        }, ensure_ascii=False)

    @classmethod
    def loads(cls, text: str | bytes) -> Job:
        obj = json.loads(text)
        return cls(call_id=str(obj["call_id"]), last_seq=int(obj["last_seq"]),
                   ended_at=float(obj["ended_at"]), facts=CallFacts.from_json(obj["facts"]),
                   recordings=tuple(RawRecording.from_json(r) for r in obj["recordings"]),
                   attempts=int(obj.get("attempts", 0)),
                   last_error=str(obj.get("last_error", "")),
                   history=tuple(obj.get("history", ())))
