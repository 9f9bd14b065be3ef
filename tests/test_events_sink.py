"""The reference ticket backend over real HTTP: signatures, idempotency, order, privacy,
faults, file storage; plus signing and configuration."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ivr.calls.steps import IvrStep
from ivr.events.builder import CallEventBuilder
from ivr.events.errors import EventsError, SignatureError
from ivr.events.model import CallEvent
from ivr.events.signing import IDEMPOTENCY_HEADER, sign, signed_headers, verify
from ivr.events.sink import TicketSink
from ivr.events.sink_client import SinkClient
from ivr.sim.synth_calls import load_trace

SECRET = b"test-secret-\xe7\x83\xad\xe7\xba\xbf"


def trace_events(traces: Path, scenario: str) -> list[CallEvent]:
    b = CallEventBuilder()
    out: list[CallEvent] = []
    for ev in load_trace(next(traces.glob(f"{scenario}*")) / "ami.server.raw"):
        out.extend(b.feed_ami(ev))
    return out


async def post(session: aiohttp.ClientSession, url: str, ev: CallEvent,
               secret: bytes = SECRET, ts: float | None = None) -> tuple[int, Any]:
    body = ev.dumps().encode()
    headers = signed_headers(secret, body, now=ts)
    headers[IDEMPOTENCY_HEADER] = ev.id
    async with session.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.json()


def test_signing_roundtrip_and_rejections() -> None:
    body = b'{"a":1}'
    h = signed_headers(SECRET, body, now=1000.0)
    verify(SECRET, h["X-Ivr-Timestamp"], h["X-Ivr-Signature"], body, now=1001.0)
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, h["X-Ivr-Timestamp"], h["X-Ivr-Signature"], body + b" ", now=1001.0)
    with pytest.raises(SignatureError, match="more than"):
        verify(SECRET, h["X-Ivr-Timestamp"], h["X-Ivr-Signature"], body, now=2000.0)
    with pytest.raises(SignatureError, match="missing"):
        verify(SECRET, None, None, body)
    assert sign(SECRET, 1, b"x") != sign(b"other", 1, b"x")


async def test_apply_in_order_idempotent_and_409(
    traces: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ivr.events.sink")
    events = trace_events(traces, "02")
    async with TicketSink(SECRET) as sink, aiohttp.ClientSession() as s:
        url = sink.events_url
        # seq 2 before seq 1: rejected so the pusher retries later
        status, body = await post(s, url, events[1])
        assert status == 409 and body["error"] == "out_of_order" and body["last_seq"] == 0
        for ev in events:
            status, body = await post(s, url, ev)
            assert (status, body["result"]) == (200, "applied")
        status, body = await post(s, url, events[3])  # replayed: acknowledged, not applied
        assert (status, body["result"]) == (200, "duplicate")
        # bad signature, wrong secret, old timestamp: 401
        assert (await post(s, url, events[0], secret=b"wrong"))[0] == 401
        assert (await post(s, url, events[0], ts=time.time() - 3600))[0] == 401
        async with s.post(url, data=events[0].dumps()) as resp:
            assert resp.status == 401
        # invalid event (signed): 400
        bad = json.dumps(dict(events[0].to_json(), seq=-1)).encode()
        async with s.post(url, data=bad, headers=signed_headers(SECRET, bad)) as resp:
            assert resp.status == 400
            assert "seq" in (await resp.json())["detail"]
        async with SinkClient(sink.url, SECRET) as client:
            tickets = await client.tickets()
            assert len(tickets) == 1
            t = tickets[0]
            assert t["id"] == "T-1795883958.1" and t["status"] == "closed"
            assert [e["seq"] for e in t["events"]] == list(range(1, len(events) + 1))
            assert [e["type"] for e in t["events"]] == [e.type for e in events]
            assert t["caller"] == "13800138000" and t["queue"] == "hotline"
            assert t["agent"] == "Agent 1001" and t["tags"] == []  # CALLER_TAG: not ours
            assert (await client.ticket("1795883958.1"))["id"] == t["id"]
            with pytest.raises(EventsError, match="404"):
                await client.ticket("nope")
            health = await client.health()
            assert health["applied"] == len(events) and health["duplicates"] == 1
            assert health["auth_failures"] == 3
        async with SinkClient(sink.url, b"wrong") as client:
            with pytest.raises(EventsError, match="401"):
                await client.tickets()
    opened = [r for r in caplog.records if r.getMessage() == "sink.ticket_opened"]
    assert [r.fields["caller"] for r in opened] == ["138****8000"]  # type: ignore[attr-defined]
    assert "13800138000" not in caplog.text


async def test_anonymous_dispatch_hides_the_caller(tmp_path: Path) -> None:
    b = CallEventBuilder()
    from ivr.ami.messages import Event

    evs = b.feed_ami(Event({"Event": "Newchannel", "Channel": "SIP/a-1", "Uniqueid": "3.1",
                            "Linkedid": "3.1", "CallerIDNum": "13912345678",
                            "Context": "from-pstn", "Exten": "12345"}))
    evs += b.feed_step(IvrStep("3.1", "3.1", "callback", "12345", "cb", {"number": "13912345678"}))
    evs += b.feed_step(IvrStep("3.1", "3.1", "tag", "12345", "anon",
                               {"name": "anonymous", "value": "yes"}))
    store = tmp_path / "tickets.json"
    async with TicketSink(SECRET, store_path=store) as sink, aiohttp.ClientSession() as s:
        for ev in evs:
            assert (await post(s, sink.events_url, ev))[0] == 200
        async with SinkClient(sink.url, SECRET) as client:
            t = await client.ticket("T-3.1")
    assert t["anonymous"] is True and t["caller"] is None
    assert "13912345678" not in json.dumps(t)
    assert "13912345678" not in store.read_text("utf-8")


async def test_file_store_survives_restart(traces: Path, tmp_path: Path) -> None:
    events = trace_events(traces, "07")
    store = tmp_path / "tickets.json"
    async with TicketSink(SECRET, store_path=store) as sink, aiohttp.ClientSession() as s:
        for ev in events[:3]:
            assert (await post(s, sink.events_url, ev))[0] == 200
    async with TicketSink(SECRET, store_path=store) as sink, aiohttp.ClientSession() as s:
        assert (await post(s, sink.events_url, events[2]))[1]["result"] == "duplicate"
        for ev in events[3:]:
            assert (await post(s, sink.events_url, ev))[1]["result"] == "applied"
        t = sink.store.get("T-" + events[0].call_id)
        assert t is not None and [e["seq"] for e in t.events] == [1, 2, 3, 4, 5, 6]


async def test_fault_injection_via_admin_endpoint(traces: Path) -> None:
    ev = trace_events(traces, "07")[0]
    async with TicketSink(SECRET) as sink, aiohttp.ClientSession() as s, \
            SinkClient(sink.url, SECRET) as client:
        await client.set_faults(error_rate=1.0)
        assert (await post(s, sink.events_url, ev))[0] == 500
        assert sink.store.applied == 0
        await client.set_faults(error_rate=0.0, down_for=0.3)
        await sink.down.wait()
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as fresh:
                await post(fresh, sink.events_url, ev)
        # the sink comes back by itself on the same port
        await sink.up.wait()
        async with aiohttp.ClientSession() as fresh:
            status, _ = await post(fresh, sink.events_url, ev)
        assert status == 200 and sink.store.applied == 1
        assert (await client.health())["faults_injected"] >= 1


async def test_batch_endpoint_applies_in_order_with_per_event_results(traces: Path) -> None:
    events = trace_events(traces, "07")
    async with TicketSink(SECRET) as sink, aiohttp.ClientSession() as s:
        url = sink.events_url + "/batch"

        async def batch(objs: list[Any]) -> tuple[int, Any]:
            body = json.dumps({"events": objs}).encode()
            async with s.post(url, data=body, headers=signed_headers(SECRET, body)) as resp:
                return resp.status, await resp.json()

        bad = dict(events[3].to_json(), routing="nope")
        status, body = await batch([e.to_json() for e in events[:2]] + [events[3].to_json()])
        assert status == 200
        assert [r["result"] for r in body["results"]] == ["applied", "applied", "out_of_order"]
        status, body = await batch([events[1].to_json(), events[2].to_json(), bad,
                                    events[3].to_json()])
        assert [r["result"] for r in body["results"]] == [
            "duplicate", "applied", "invalid", "applied"]
        assert "routing" in body["results"][2]["detail"]
        async with s.post(url, data=b'{"events": 1}',
                          headers=signed_headers(SECRET, b'{"events": 1}')) as resp:
            assert resp.status == 400
        async with s.post(url, data=b'{"events": []}') as resp:
            assert resp.status == 401
        t = sink.store.get(events[0].call_id)
        assert t is not None and [e["seq"] for e in t.events] == [1, 2, 3, 4]


async def test_caller_status_lookup_feeds_the_ivr(traces: Path) -> None:
    """The IVR's ticket-status lookup (HttpTicketLookup) against the sink's endpoint."""
    from ivr.dialplan.runtime_ticket import HttpTicketLookup

    async with TicketSink(SECRET) as sink, aiohttp.ClientSession() as session:
        lookup = HttpTicketLookup(sink.url + "/api/v1/tickets/status", timeout=2.0)
        try:
            assert await lookup.status("13800138000") == "none"
            for ev in trace_events(traces, "02"):
                status, _ = await post(session, sink.events_url, ev)
                assert status == 200
            assert await lookup.status("13800138000") == "found"
            assert await lookup.status("13900000000") == "none"
            # the call asking (the IVR of that very call) does not count its own ticket
            call_id = trace_events(traces, "02")[0].call_id
            assert await lookup.status("13800138000", exclude_call=call_id) == "none"
            assert await lookup.status("13800138000", exclude_call="1.2") == "found"
        finally:
            await lookup.close()
        async with session.get(sink.url + "/api/v1/tickets/status?caller=x;1") as resp:
            assert resp.status == 400
