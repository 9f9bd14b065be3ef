"""The call event sent to the ticket backend (schema ``call-event.v1``).

A :class:`CallEvent` is immutable and converts to and from the JSON object described by
``ivr/events/schema/call-event.v1.json``.  Its ``id`` is derived from the call id, the
per-call sequence number and the type (:func:`event_id`), so replaying the same AMI
stream through a fresh builder yields the same ids, and the backend can use the id as
its idempotency key.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ivr.events.errors import EventValidationError

SCHEMA_ID = "call-event.v1"

# uuid5 namespace of call-event ids (fixed forever: changing it changes every id).
EVENT_NAMESPACE = uuid.UUID("6f0d1c52-3a5e-5b8e-9d1e-12345c0ffee1")

EVENT_TYPES = frozenset(
    {
        "call.started",
        "call.ended",
        "queue.joined",
        "queue.abandoned",
        "queue.left",
        "agent.called",
        "agent.connected",
        "agent.completed",
        "transfer.blind",
        "transfer.attended",
        "transfer.requested",
        "transfer.answered",
        "transfer.completed",
        "transfer.returned",
        "transfer.failed",
        "threeway.started",
        "threeway.joined",
        "threeway.left",
        "threeway.ended",
        "threeway.requested",
        "threeway.answered",
        "threeway.failed",
        "threeway.dropped",
        "threeway.hungup",
        "threeway.agent_left",
        "threeway.muted",
        "threeway.unmuted",
        "recording.started",
        "recording.stopped",
        "recording.ready",
        "recording.muted",
        "recording.unmuted",
        "survey.scored",
        "supervision.joined",
        "supervision.mode",
        "supervision.left",
        "quality.scored",
        "quality.appealed",
        "callback.requested",
        "callback.answered",
        "callback.busy",
        "callback.cancelled",
        "callback.exhausted",
        "callback.failed",
        "callback.no_answer",
        "callback.placed",
        "callback.scheduled",
        "ivr.entered",
        "ivr.prompt",
        "ivr.choice",
        "ivr.timeout",
        "ivr.invalid",
        "ivr.language",
        "ivr.tag",
        "ivr.lookup",
        "ivr.callback",
        "ivr.exit",
        "ivr.error",
    }
)

DataValue = str | int | float | bool | None


def event_id(call_id: str, seq: int, type_: str) -> str:
    """Deterministic id of the ``seq``-th event of ``call_id``."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{call_id}/{seq}/{type_}"))


def iso_ts(epoch: float) -> str:
    """RFC 3339 UTC timestamp with milliseconds."""
    dt = datetime.fromtimestamp(epoch, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Routing:
    """The hotline's routing fields, as known when the event was built."""

    entry: str = ""  # IVR entry point (e.g. "main"); the dialled number if none was set
    queue: str | None = None
    agent: str | None = None
    department: str | None = None
    priority: int = 0
    tags: tuple[str, ...] = ()
    anonymous: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "entry": self.entry,
            "queue": self.queue,
            "agent": self.agent,
            "department": self.department,
            "priority": self.priority,
            "tags": list(self.tags),
            "anonymous": self.anonymous,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Routing:
        return cls(
            entry=str(obj.get("entry", "")),
            queue=obj.get("queue"),
            agent=obj.get("agent"),
            department=obj.get("department"),
            priority=int(obj.get("priority", 0)),
            tags=tuple(obj.get("tags", ())),
            anonymous=bool(obj.get("anonymous", False)),
        )


@dataclass(frozen=True, slots=True)
class Source:
    """Where the event came from: an AMI event, an IVR step or a slice's service acting
    on an agent's request (:class:`ivr.calls.steps.ServiceStep`)."""

    kind: str  # "ami" | "ivr" | "service"
    name: str  # AMI event name, IVR step kind or the service ("transfers" …)
    uniqueid: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "uniqueid": self.uniqueid}


@dataclass(frozen=True, slots=True)
class CallEvent:
    id: str
    type: str
    call_id: str
    seq: int
    ts: float  # when it happened (epoch seconds)
    call_started_at: float
    dialled: str
    caller: str | None
    language: str | None
    routing: Routing
    source: Source
    data: dict[str, DataValue] = field(default_factory=dict)
    server: str | None = None  # the Asterisk server's name when there are several

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise EventValidationError(f"unknown call event type {self.type!r}")
        if self.seq < 1:
            raise EventValidationError(f"event {self.id}: seq must be >= 1, got {self.seq}")

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_ID,
            "id": self.id,
            "type": self.type,
            "call_id": self.call_id,
            "seq": self.seq,
            "ts": iso_ts(self.ts),
            "ts_epoch": self.ts,
            "call_started_at": iso_ts(self.call_started_at),
            "dialled": self.dialled,
            "caller": self.caller,
            "language": self.language,
            "routing": self.routing.to_json(),
            "source": self.source.to_json(),
            "data": dict(self.data),
        } | ({} if self.server is None else {"server": self.server})

    def dumps(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> CallEvent:
        try:
            src = obj["source"]
            return cls(
                id=str(obj["id"]),
                type=str(obj["type"]),
                call_id=str(obj["call_id"]),
                seq=int(obj["seq"]),
                ts=float(obj["ts_epoch"]),
                call_started_at=_parse_iso(str(obj["call_started_at"])),
                dialled=str(obj["dialled"]),
                caller=obj.get("caller"),
                language=obj.get("language"),
                routing=Routing.from_json(obj["routing"]),
                source=Source(str(src["kind"]), str(src["name"]), str(src.get("uniqueid", ""))),
                data=dict(obj.get("data") or {}),
                server=None if obj.get("server") is None else str(obj["server"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EventValidationError(f"malformed call event: {exc!r}") from exc

    @classmethod
    def loads(cls, text: str | bytes) -> CallEvent:
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise EventValidationError(f"call event is not JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise EventValidationError("call event must be a JSON object")
        return cls.from_json(obj)


def _parse_iso(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
