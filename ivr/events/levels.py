"""Which call events the service-level figures read, their compact record, and how long
the records are kept.

The outbox adds a compact record of each of these events (in the same script that
stores the event in its partition stream) to ``{prefix}:levels``, a stream the pusher
never deletes from: the figures (``ivr/agents/levels.py``) are rebuilt from it after a
restart, for any day within the retention.  A record is about 100 bytes (the full event
is 600-900): a hotline of 36 000 calls a day keeps 35 days in about 0.5 GB of Redis.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ivr.events.model import CallEvent

LEVEL_TYPES = frozenset({"queue.joined", "queue.abandoned", "agent.connected", "call.ended"})
LEVEL_PREFIXES = ("callback.",)
# records of the levels stream older than this are trimmed (XADD MINID ~)
LEVELS_RETENTION_DAYS = 35
LEVELS_RETENTION_S = LEVELS_RETENTION_DAYS * 86_400


def is_level_type(type_: str) -> bool:
    """True for the event types the service-level figures are computed from."""
    return type_ in LEVEL_TYPES or type_.startswith(LEVEL_PREFIXES)


@dataclass(frozen=True, slots=True)
class LevelRecord:
    """What the figures need of one call event."""

    call_id: str
    seq: int
    type: str
    ts: float
    queue: str  # data.queue; for callback.* the routing queue; "" when none
    wait_s: float  # data.hold_time_s (0 when absent)
    server: str = ""  # the Asterisk server the call was on ("" = the only one)

    @classmethod
    def of(cls, ev: CallEvent) -> LevelRecord:
        queue = ev.data.get("queue")
        if not queue and ev.type.startswith(LEVEL_PREFIXES):
            queue = ev.routing.queue
        return cls(ev.call_id, ev.seq, ev.type, ev.ts, str(queue or ""),
                   _num(ev.data.get("hold_time_s")), ev.server or "")

    def dumps(self) -> str:
        row: list[object] = [self.call_id, self.seq, self.type, self.ts, self.queue,
                             self.wait_s]
        if self.server:  # several Asterisk servers: which one (a 7th element)
            row.append(self.server)
        return json.dumps(row, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str | bytes) -> LevelRecord:
        """Raises ValueError for anything but a record written by :meth:`dumps`."""
        obj = json.loads(text)
        if not (isinstance(obj, list) and len(obj) in (6, 7)):
            raise ValueError("not a levels record")
        call_id, seq, type_, ts, queue, wait = obj[:6]
        server = obj[6] if len(obj) == 7 else ""
        if not isinstance(server, str):
            raise ValueError("malformed levels record")
        if not (isinstance(call_id, str) and isinstance(seq, int) and isinstance(type_, str)
                and isinstance(ts, int | float) and isinstance(queue, str)
                and isinstance(wait, int | float)):
            raise ValueError("malformed levels record")
        return cls(call_id, seq, type_, float(ts), queue, float(wait), server)


def _num(value: object) -> float:
    if isinstance(value, bool) or value is None:
        return 0.0
    if isinstance(value, int | float):
        return max(float(value), 0.0)
    try:
        return max(float(str(value)), 0.0)
    except ValueError:
        return 0.0
