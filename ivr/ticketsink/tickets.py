"""Tickets built from call events, idempotently and in order (pure, no I/O).

One ticket per call id.  :meth:`TicketStore.apply` appends an event when its ``seq`` is
the next one of the call, acknowledges a known id as a duplicate without applying it
again, and rejects a gap (``out_of_order``) or a different event at an already used
``seq`` (``conflict``).  When an event says ``routing.anonymous`` the ticket drops the
caller number and never stores it again (anonymous dispatch).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

PRIVATE_DATA_KEYS = frozenset({"number", "caller"})


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"
    CONFLICT = "conflict"


@dataclass(slots=True)
class Ticket:
    ticket_id: str
    call_id: str
    created_at: str
    caller: str | None = None
    anonymous: bool = False
    dialled: str = ""
    entry: str = ""
    language: str | None = None
    queue: str | None = None
    agent: str | None = None
    department: str | None = None
    priority: int = 0
    tags: list[str] = field(default_factory=list)
    status: str = "open"
    server: str | None = None  # the Asterisk server the call was on (several servers)
    updated_at: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)

    @property
    def last_seq(self) -> int:
        return len(self.events)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.ticket_id,
            "call_id": self.call_id,
            "status": self.status,
            "server": self.server,
            "caller": None if self.anonymous else self.caller,
            "anonymous": self.anonymous,
            "dialled": self.dialled,
            "entry": self.entry,
            "language": self.language,
            "queue": self.queue,
            "agent": self.agent,
            "department": self.department,
            "priority": self.priority,
            "tags": list(self.tags),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "last_seq": self.last_seq,
            "events": list(self.events),
        }


def ticket_id_for(call_id: str) -> str:
    return "T-" + call_id


class TicketStore:
    def __init__(self) -> None:
        self.tickets: dict[str, Ticket] = {}
        self.applied = 0
        self.duplicates = 0
        self.rejected = 0
        # how many times each event id reached the store (applied or not)
        self.deliveries: Counter[str] = Counter()

    def get(self, ident: str) -> Ticket | None:
        t = self.tickets.get(ident)
        if t is None and ident.startswith("T-"):
            t = self.tickets.get(ident[2:])
        return t

    def apply(self, ev: dict[str, Any]) -> tuple[Outcome, int]:
        """Apply one validated event object; returns the outcome and the ticket's
        last seq afterwards."""
        call_id = str(ev["call_id"])
        seq = int(ev["seq"])
        eid = str(ev["id"])
        self.deliveries[eid] += 1
        t = self.tickets.get(call_id)
        if t is not None and eid in t.ids:
            self.duplicates += 1
            return Outcome.DUPLICATE, t.last_seq
        last = t.last_seq if t is not None else 0
        if seq != last + 1:
            self.rejected += 1
            return (Outcome.CONFLICT if seq <= last else Outcome.OUT_OF_ORDER), last
        if t is None:
            t = Ticket(ticket_id_for(call_id), call_id, created_at=str(ev["ts"]))
            self.tickets[call_id] = t
        routing = ev.get("routing") or {}
        if routing.get("anonymous"):
            t.anonymous = True
            t.caller = None
        elif not t.anonymous and ev.get("caller"):
            t.caller = str(ev["caller"])
        t.server = ev.get("server") or t.server
        t.dialled = str(ev.get("dialled") or t.dialled)
        t.entry = str(routing.get("entry") or t.entry)
        t.language = ev.get("language") or t.language
        t.queue = routing.get("queue") or t.queue
        t.agent = routing.get("agent") or t.agent
        t.department = routing.get("department") or t.department
        t.priority = int(routing.get("priority") or 0)
        t.tags = list(routing.get("tags") or [])
        t.updated_at = str(ev["ts"])
        if ev["type"] == "call.ended":
            t.status = "closed"
        data = dict(ev.get("data") or {})
        if t.anonymous:
            for key in PRIVATE_DATA_KEYS:
                data.pop(key, None)
            for old in t.events:
                for key in PRIVATE_DATA_KEYS:
                    old["data"].pop(key, None)
        t.events.append({"id": eid, "seq": seq, "type": ev["type"], "ts": ev["ts"],
                         "data": data})
        t.ids.add(eid)
        self.applied += 1
        return Outcome.APPLIED, t.last_seq

    def snapshot(self) -> dict[str, Any]:
        return {"tickets": [t.to_json() for t in self.tickets.values()]}

    def load(self, snap: dict[str, Any]) -> None:
        for obj in snap.get("tickets", []):
            t = Ticket(
                ticket_id=obj["id"], call_id=obj["call_id"], created_at=obj["created_at"],
                caller=obj.get("caller"), anonymous=bool(obj.get("anonymous")),
                dialled=obj.get("dialled", ""), entry=obj.get("entry", ""),
                language=obj.get("language"), queue=obj.get("queue"), agent=obj.get("agent"),
                department=obj.get("department"), priority=int(obj.get("priority", 0)),
                tags=list(obj.get("tags", [])), status=obj.get("status", "open"),
                server=obj.get("server"),
                updated_at=obj.get("updated_at", ""), events=list(obj.get("events", [])),
            )
            t.ids = {e["id"] for e in t.events}
            self.tickets[t.call_id] = t

