"""The state of one call in progress, as the bridge keeps it, and its checkpoint.

What the call-event builder (:mod:`ivr.events.builder`) knows of a call: who called,
what they dialled, the routing decided so far (entry, queue, agent, department,
priority, tags, anonymity), its channels and agent legs, recordings and conferences, and
where its call events stand (``seq``, ``started``, ``last_ts``).  :meth:`CallState.
checkpoint` is everything needed to continue the call in another process (JSON, stored
with the call's events), :meth:`CallState.from_checkpoint` reads it back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

CHECKPOINT_VERSION = 1

TRUE_WORDS = frozenset({"1", "yes", "true", "on", "y"})

ROUTING_KEYS = frozenset({"entry", "queue", "agent", "department", "priority", "anonymous",
                          "tags", "tag", "language"})
"""The routing facts :meth:`CallState.set_routing` takes (the values of
:data:`ivr.calls.variables.ROUTING_VARS` and ``TAG_ROUTING``, and ``agent``)."""


@dataclass(slots=True)
class CallState:
    call_id: str
    started_at: float
    dialled: str
    first_uniqueid: str
    caller: str | None = None
    language: str | None = None
    language_explicit: bool = False
    entry: str = ""
    queue: str | None = None
    agent: str | None = None
    department: str | None = None
    priority: int = 0
    tags: list[str] = field(default_factory=list)
    anonymous: bool = False
    seq: int = 0
    started: bool = False
    last_ts: float = 0.0
    channels: set[str] = field(default_factory=set)
    agent_channels: set[str] = field(default_factory=set)
    recording_files: dict[str, str] = field(default_factory=dict)  # uniqueid -> file
    recordings: set[str] = field(default_factory=set)  # uniqueids with a MixMonitor
    conferences: set[str] = field(default_factory=set)  # conferences this call owns

    def set_routing(self, key: str, value: str) -> None:
        """One routing fact, whichever way it came: a routing variable (``VarSet``, a
        ``CoreShowChannel``'s ``ChanVariable``), an IVR step (entry, language, a ``set``
        step's tag, the queue it exits to) or app_queue (the queue joined, the agent
        connected).  ``key`` is one of :data:`ROUTING_KEYS` (others are ignored); an
        unusable value (a negative or non-numeric priority, an empty tag) changes
        nothing."""
        if key == "entry":
            self.entry = value
        elif key == "queue":
            self.queue = value or None
        elif key == "agent":
            self.agent = value or None
        elif key == "department":
            self.department = value or None
        elif key == "priority":
            prio = int_or_none(value)
            if prio is not None and prio >= 0:
                self.priority = prio
        elif key == "anonymous":
            self.anonymous = value.strip().lower() in TRUE_WORDS
        elif key == "tags":
            for tag in value.split(","):
                tag = tag.strip()
                if tag and tag not in self.tags:
                    self.tags.append(tag)
        elif key == "tag":
            if value and value not in self.tags:
                self.tags.append(value)
        elif key == "language":
            if value:
                self.language = value
                self.language_explicit = True

    def checkpoint(self) -> str:
        """Everything needed to continue the call in another process (JSON)."""
        return json.dumps({
            "v": CHECKPOINT_VERSION, "call_id": self.call_id, "started_at": self.started_at,
            "dialled": self.dialled, "first_uniqueid": self.first_uniqueid,
            "caller": self.caller, "language": self.language,
            "language_explicit": self.language_explicit, "entry": self.entry,
            "queue": self.queue, "agent": self.agent, "department": self.department,
            "priority": self.priority, "tags": self.tags, "anonymous": self.anonymous,
            "seq": self.seq, "started": self.started, "last_ts": self.last_ts,
            "channels": list(self.channels), "agent_channels": list(self.agent_channels),
            "recording_files": self.recording_files, "recordings": list(self.recordings),
            "conferences": list(self.conferences),
        }, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_checkpoint(cls, text: str | bytes) -> CallState:
        """The call a :meth:`checkpoint` describes; ``ValueError`` saying what is wrong."""
        try:
            obj: Any = json.loads(text)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            if obj.get("v") != CHECKPOINT_VERSION:
                raise ValueError(f"checkpoint version {obj.get('v')!r}, this bridge reads "
                                 f"{CHECKPOINT_VERSION}")
            call = cls(
                call_id=str(obj["call_id"]), started_at=float(obj["started_at"]),
                dialled=str(obj["dialled"]), first_uniqueid=str(obj["first_uniqueid"]),
                caller=_opt_str(obj["caller"]), language=_opt_str(obj["language"]),
                language_explicit=bool(obj["language_explicit"]), entry=str(obj["entry"]),
                queue=_opt_str(obj["queue"]), agent=_opt_str(obj["agent"]),
                department=_opt_str(obj["department"]), priority=int(obj["priority"]),
                tags=[str(t) for t in obj["tags"]], anonymous=bool(obj["anonymous"]),
                seq=int(obj["seq"]), started=bool(obj["started"]),
                last_ts=float(obj["last_ts"]),
                channels={str(u) for u in obj["channels"]},
                agent_channels={str(u) for u in obj["agent_channels"]},
                recording_files={str(k): str(v) for k, v in obj["recording_files"].items()},
                recordings={str(u) for u in obj["recordings"]},
                conferences={str(c) for c in obj["conferences"]},
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"bad call checkpoint: {exc!r}") from exc
        if not call.call_id or call.seq < 0:
            raise ValueError(f"bad call checkpoint: call_id {call.call_id!r}, seq {call.seq}")
        return call


def int_or_none(value: str | None) -> int | None:
    """An AMI header's integer (``Priority``, ``Position`` …); None when absent or not one."""
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)
