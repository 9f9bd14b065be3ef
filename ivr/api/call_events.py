"""The call events of each live call, for ``GET /api/calls/{call_id}`` ("one call with its
events"): a pipeline listener keeps, in memory and bounded, the events the builder made
for every call in progress, in seq order, and forgets a call at its ``call.ended`` (the
ticket backend and quality review keep ended calls).

Views are compact (seq, type, when, where from, data); in a masked view every phone-looking
number in the data is masked (:func:`ivr.privacy.scrub`), as in the call list.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ivr.events.model import CallEvent
from ivr.metrics import METRICS
from ivr.privacy import scrub

MAX_CALLS = 20_000  # calls kept (the oldest go first: a call without call.ended)
MAX_EVENTS = 500  # events kept per call (the first ones and the latest: see add)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    return value


class LiveCallEvents:
    def __init__(self, max_calls: int = MAX_CALLS, max_events: int = MAX_EVENTS) -> None:
        self.max_calls = max_calls
        self.max_events = max_events
        self._calls: OrderedDict[str, list[CallEvent]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._calls)

    def on_call_events(self, events: list[CallEvent]) -> None:
        """A pipeline listener (quick, never raises on an event's content)."""
        for e in events:
            if e.type == "call.ended":
                self._calls.pop(e.call_id, None)
                continue
            buf = self._calls.get(e.call_id)
            if buf is None:
                if e.type != "call.started" and e.seq > 1 and not e.data.get("adopted"):
                    # a call this process joined late (a restart, a takeover): keep what
                    # comes from now on
                    METRICS.inc("api.call_events.joined_late")
                buf = self._calls[e.call_id] = []
                while len(self._calls) > self.max_calls:
                    self._calls.popitem(last=False)
                    METRICS.inc("api.call_events.calls_dropped")
            buf.append(e)
            if len(buf) > self.max_events:  # keep how it began, drop from the middle
                del buf[self.max_events // 2]

    def of(self, call_id: str, *, masked: bool) -> list[dict[str, Any]]:
        out = []
        for e in self._calls.get(call_id, ()):
            data = _masked(e.data) if masked else dict(e.data)
            out.append({"seq": e.seq, "type": e.type, "ts": e.ts,
                        "source": {"kind": e.source.kind, "name": e.source.name},
                        "data": data})
        return out
