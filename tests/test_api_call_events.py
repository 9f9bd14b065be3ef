"""The live call events the API keeps per call (ivr/api/call_events.py): in order, bounded,
forgotten at call.ended, numbers masked in a masked view."""

from __future__ import annotations

from ivr.api.call_events import LiveCallEvents
from ivr.events.model import CallEvent, Routing, Source


def ev(call_id: str, seq: int, type_: str, **data: object) -> CallEvent:
    return CallEvent(id=f"{call_id}-{seq}", type=type_, call_id=call_id, seq=seq, ts=float(seq),
                     call_started_at=0.0, dialled="12345", caller="13800138000",
                     language="zh", routing=Routing(), source=Source("ami", "Test"),
                     data=dict(data))  # type: ignore[arg-type]


def test_kept_in_order_masked_and_forgotten_at_the_end() -> None:
    live = LiveCallEvents()
    live.on_call_events([ev("c1", 1, "call.started", caller="13800138000"),
                         ev("c2", 1, "call.started")])
    live.on_call_events([ev("c1", 2, "transfer.requested", target="13912345678",
                            entry="market")])
    full = live.of("c1", masked=False)
    assert [(e["seq"], e["type"]) for e in full] == [(1, "call.started"),
                                                    (2, "transfer.requested")]
    assert full[1]["data"] == {"target": "13912345678", "entry": "market"}
    masked = live.of("c1", masked=True)
    assert masked[0]["data"]["caller"] != "13800138000"
    assert "5678" in masked[1]["data"]["target"] and "1391234" not in masked[1]["data"]["target"]
    assert masked[1]["data"]["entry"] == "market" and masked[0]["source"] == {
        "kind": "ami", "name": "Test"}
    live.on_call_events([ev("c1", 3, "call.ended")])
    assert live.of("c1", masked=False) == [] and len(live) == 1


def test_bounded_per_call_and_in_calls() -> None:
    live = LiveCallEvents(max_calls=2, max_events=10)
    live.on_call_events([ev("c1", n, "ivr.prompt" if n > 1 else "call.started")
                         for n in range(1, 31)])
    kept = [e["seq"] for e in live.of("c1", masked=False)]
    assert len(kept) == 10 and kept[:5] == [1, 2, 3, 4, 5] and kept[-1] == 30
    live.on_call_events([ev("c2", 1, "call.started"), ev("c3", 1, "call.started")])
    assert live.of("c1", masked=False) == [] and len(live) == 2  # the oldest went
