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
from ivr.events.signing import (
    IDEMPOTENCY_HEADER,
    ReplayGuard,
    request_target,
    sign,
    signed_headers,
    verify,
)
from ivr.sim.synth_calls import load_trace
from ivr.ticketsink.client import SinkClient
from ivr.ticketsink.server import TicketSink

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
    headers = signed_headers(secret, "POST", request_target(url), body, now=ts)
    headers[IDEMPOTENCY_HEADER] = ev.id
    async with session.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.json()


def signed(method: str, url: str, body: bytes = b"", secret: bytes = SECRET,
           **kw: Any) -> dict[str, str]:
    return signed_headers(secret, method, request_target(url), body, **kw)


def test_signing_roundtrip_and_rejections() -> None:
    body = b'{"a":1}'
    h = signed_headers(SECRET, "POST", "/v1/events", body, now=1000.0)
    assert h["X-Ivr-Signature"].startswith("v2=")
    assert verify(SECRET, "POST", "/v1/events", h, body, now=1001.0) == (
        1000, h["X-Ivr-Nonce"])
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, "POST", "/v1/events", h, body + b" ", now=1001.0)
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, "GET", "/v1/events", h, body, now=1001.0)
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, "POST", "/v1/events?x=1", h, body, now=1001.0)
    with pytest.raises(SignatureError, match="more than"):
        verify(SECRET, "POST", "/v1/events", h, body, now=2000.0)
    with pytest.raises(SignatureError, match="missing"):
        verify(SECRET, "POST", "/v1/events", {}, body)
    with pytest.raises(SignatureError, match="v1 is not accepted"):
        verify(SECRET, "POST", "/v1/events", dict(h, **{"X-Ivr-Signature": "v1=00"}), body)
    for bad in ("9" * 5000, "1e9", " 1_000", "١٠٠٠", "-1000"):
        with pytest.raises(SignatureError, match="Unix seconds"):
            verify(SECRET, "POST", "/v1/events", dict(h, **{"X-Ivr-Timestamp": bad}), body)
    with pytest.raises(SignatureError, match="64 hex"):
        verify(SECRET, "POST", "/v1/events", dict(h, **{"X-Ivr-Signature": "v2=é" * 30}), body)
    assert sign(SECRET, "GET", "/", 1, "n" * 16, b"x") != sign(b"o", "GET", "/", 1, "n" * 16,
                                                                b"x")


def test_replay_guard_remembers_within_the_window_and_is_bounded() -> None:
    g = ReplayGuard(max_age=300, max_nonces=2)
    assert g.check_and_remember(1000, "a" * 16, now=1000) == "ok"
    assert g.check_and_remember(1000, "a" * 16, now=1200) == "replayed"
    assert g.check_and_remember(1000, "b" * 16, now=1200) == "ok"
    assert g.check_and_remember(1000, "c" * 16, now=1200) == "full"  # bounded: refuse
    # after ts + max_age the timestamp check refuses the request: the nonce can go
    assert g.check_and_remember(1400, "c" * 16, now=1400) == "ok" and len(g) == 1


async def test_apply_in_order_idempotent_and_409(
    traces: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ivr.ticketsink.server")
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
        async with s.post(url, data=bad, headers=signed("POST", url, bad)) as resp:
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
            async with s.post(url, data=body, headers=signed("POST", url, body)) as resp:
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
                          headers=signed("POST", url, b'{"events": 1}')) as resp:
            assert resp.status == 400
        async with s.post(url, data=b'{"events": []}') as resp:
            assert resp.status == 401
        t = sink.store.get(events[0].call_id)
        assert t is not None and [e["seq"] for e in t.events] == [1, 2, 3, 4]


async def test_caller_status_lookup_feeds_the_ivr(traces: Path) -> None:
    """The IVR's ticket-status lookup (HttpTicketLookup, signed with the [tickets] secret)
    against the sink's endpoint."""
    from ivr.flow.ticket_lookup import HttpTicketLookup

    async with TicketSink(SECRET) as sink, aiohttp.ClientSession() as session:
        lookup = HttpTicketLookup(sink.url + "/api/v1/tickets/status", timeout=2.0,
                                  secret=SECRET)
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
        assert sink.auth_failures == 0
        bad = sink.url + "/api/v1/tickets/status?caller=x;1"
        async with session.get(bad, headers=signed("GET", bad)) as resp:
            assert resp.status == 400


async def test_caller_status_lookup_requires_a_signature(traces: Path) -> None:
    """Whether a phone number has tickets is not for anyone who can reach the backend:
    the status lookup is refused (401 JSON) unsigned, signed with another secret, for
    another query, or replayed; the IVR's lookup client then says ``unavailable``."""
    from ivr.flow.ticket_lookup import HttpTicketLookup

    async with TicketSink(SECRET) as sink, aiohttp.ClientSession() as session:
        for ev in trace_events(traces, "02"):
            assert (await post(session, sink.events_url, ev))[0] == 200
        url = sink.url + "/api/v1/tickets/status?caller=13800138000"
        async with session.get(url) as resp:  # unsigned: no answer about the number
            assert resp.status == 401
            body = await resp.json()
            assert body["error"] == "unauthorized" and "missing" in body["detail"]
            assert "tickets" not in body and "open" not in body
        async with session.get(url, headers=signed("GET", url, secret=b"other")) as resp:
            assert resp.status == 401
        other = sink.url + "/api/v1/tickets/status?caller=13900000000"
        async with session.get(url, headers=signed("GET", other)) as resp:
            assert resp.status == 401  # signed for another number
        headers = signed("GET", url)
        async with session.get(url, headers=headers) as resp:
            assert resp.status == 200 and (await resp.json())["open"] == 1
        async with session.get(url, headers=headers) as resp:
            assert resp.status == 401  # the same request again: a replay
        assert sink.auth_failures == 4
        for secret in (None, b"other"):
            lookup = HttpTicketLookup(sink.url + "/api/v1/tickets/status", timeout=2.0,
                                      secret=secret)
            try:
                assert await lookup.status("13800138000") == "unavailable"
            finally:
                await lookup.close()
        assert sink.auth_failures == 6


# -- attacks on the reference backend, over real HTTP (issue 14 item 9) -----------------

async def raw_request(sink: TicketSink, method: str, target: str, headers: dict[str, str],
                      body: bytes = b"", raw_headers: bytes = b"") -> tuple[int, Any]:
    """One request written byte for byte (what a client library would refuse to send):
    the status and the JSON answer."""
    import asyncio

    reader, writer = await asyncio.open_connection(sink.host, sink.port)
    try:
        head = f"{method} {target} HTTP/1.1\r\nHost: {sink.host}\r\nConnection: close\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head += f"Content-Length: {len(body)}\r\n"
        writer.write(head.encode("utf-8") + raw_headers + b"\r\n" + body)
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = data.partition(b"\r\n")
    status = int(status_line.split()[1])
    _, _, payload = rest.partition(b"\r\n\r\n")
    return status, json.loads(payload)


async def test_malformed_signature_headers_are_401_never_500(traces: Path) -> None:
    ev = trace_events(traces, "07")[0]
    body = ev.dumps().encode()
    async with TicketSink(SECRET) as sink:
        good = signed("POST", sink.events_url, body)
        # a timestamp int() takes but float arithmetic cannot (was 500: OverflowError),
        # and one beyond int()'s digit limit
        for ts in ("9" * 400, "9" * 5000, "1" + "0" * 30):
            status, answer = await raw_request(sink, "POST", "/v1/events",
                                               dict(good, **{"X-Ivr-Timestamp": ts}), body)
            assert status == 401 and answer["error"] == "unauthorized", (ts[:10], answer)
        # a non-ASCII signature header (was 500: compare_digest TypeError)
        for sig in ("v2=" + "é" * 64, "v1=" + "é" * 64, "v2=" + "中" * 64):
            hdrs = {k: v for k, v in good.items() if k != "X-Ivr-Signature"}
            status, answer = await raw_request(
                sink, "POST", "/v1/events", hdrs, body,
                raw_headers=b"X-Ivr-Signature: " + sig.encode("utf-8") + b"\r\n")
            assert status == 401 and answer["error"] == "unauthorized"
        # raw Latin-1 bytes that are not UTF-8 in the header
        hdrs = {k: v for k, v in good.items() if k != "X-Ivr-Signature"}
        status, answer = await raw_request(sink, "POST", "/v1/events", hdrs, body,
                                           raw_headers=b"X-Ivr-Signature: v2=\xff\xfe\r\n")
        assert status in (400, 401) and "error" in answer
        assert sink.store.applied == 0


async def test_replayed_get_cannot_read_a_ticket_again(traces: Path) -> None:
    events = trace_events(traces, "02")
    async with TicketSink(SECRET) as sink, aiohttp.ClientSession() as s:
        for ev in events:
            assert (await post(s, sink.events_url, ev))[0] == 200
        call = events[0].call_id
        target = f"/tickets/T-{call}"
        captured = signed("GET", sink.url + target)
        status, ticket = await raw_request(sink, "GET", target, captured)
        assert status == 200 and ticket["caller"] == "13800138000"
        # the same signed request again, within the clock window: refused
        status, answer = await raw_request(sink, "GET", target, captured)
        assert status == 401 and "replayed" in answer["detail"]
        assert "13800138000" not in json.dumps(answer)
        # the captured headers on another path (another ticket, the list, a query)
        other = signed("GET", sink.url + "/tickets/T-nothing")
        for path in (f"/tickets/{call}", "/tickets", "/tickets?events=0"):
            status, answer = await raw_request(sink, "GET", path, other)
            assert status == 401 and "does not match" in answer["detail"], path
        # a signed GET of the list does not work for the list with its query changed
        lst = signed("GET", sink.url + "/tickets?events=0")
        status, _ = await raw_request(sink, "GET", "/tickets?events=1", lst)
        assert status == 401
        # method swapped: a signed GET does not make a POST
        g = signed("GET", sink.events_url)
        status, _ = await raw_request(sink, "POST", "/v1/events", g, b"")
        assert status == 401
        assert sink.replays_refused == 1


async def test_replayed_post_and_tampered_body_are_refused(traces: Path) -> None:
    events = trace_events(traces, "07")
    async with TicketSink(SECRET) as sink:
        body = events[0].dumps().encode()
        captured = signed("POST", sink.events_url, body)
        captured[IDEMPOTENCY_HEADER] = events[0].id
        status, answer = await raw_request(sink, "POST", "/v1/events", captured, body)
        assert status == 200 and answer["result"] == "applied"
        status, answer = await raw_request(sink, "POST", "/v1/events", captured, body)
        assert status == 401 and "replayed" in answer["detail"]
        # tampered body (same length, another seq) with fresh headers of the original
        body2 = events[1].dumps().encode()
        h = signed("POST", sink.events_url, body2)
        tampered = body2.replace(b'"seq":2', b'"seq":3')
        assert tampered != body2
        status, answer = await raw_request(sink, "POST", "/v1/events", h, tampered)
        assert status == 401 and "does not match" in answer["detail"]
        # path swapped: signed for /v1/events, sent to the batch endpoint
        batch = json.dumps({"events": [events[1].to_json()]}).encode()
        h = signed("POST", sink.events_url, batch)
        status, answer = await raw_request(sink, "POST", "/v1/events/batch", h, batch)
        assert status == 401 and "does not match" in answer["detail"]
        # a replayed batch
        h = signed("POST", sink.events_url + "/batch", batch)
        assert (await raw_request(sink, "POST", "/v1/events/batch", h, batch))[0] == 200
        status, answer = await raw_request(sink, "POST", "/v1/events/batch", h, batch)
        assert status == 401 and "replayed" in answer["detail"]
        assert sink.store.applied == 2


async def test_deep_and_malformed_json_is_400_never_500() -> None:
    async with TicketSink(SECRET) as sink:
        cases: list[tuple[str, bytes]] = [
            ("/v1/events", b"[" * 100_000),
            ("/v1/events", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
            ("/v1/events", b"[" * 40 + b"]" * 40),  # parses; deeper than the limit
            ("/v1/events/batch", b'{"events":' + b"[" * 100_000),
            ("/v1/events/batch", b'{"events":[' + b"[" * 50 + b"]" * 50 + b"]}"),
            ("/v1/events", b'{"seq": NaN}'),
            ("/v1/events", b"\xff\xfe not utf-8"),
            ("/v1/events/batch", b"[]"),
            ("/admin/faults", b"[" * 100_000),
            ("/admin/faults", b'{"error_rate": "x"}'),
            ("/admin/faults", b'{"latency_ms": 1e999}'),
            ("/admin/faults", b'{"error_rate": 2}'),
        ]
        async with aiohttp.ClientSession() as s:
            for path, body in cases:
                url = sink.url + path
                async with s.post(url, data=body, headers=signed("POST", url, body)) as resp:
                    answer = await resp.json()
                    assert resp.status == 400, (path, body[:30], resp.status, answer)
                    assert answer["error"] and answer.get("detail"), answer
            # aiohttp's own refusals are JSON too
            async with s.get(sink.url + "/nope") as resp:
                assert resp.status == 404 and (await resp.json())["error"]
            async with s.delete(sink.events_url) as resp:
                assert resp.status == 405 and (await resp.json())["error"]
        assert sink.faults.error_rate == 0.0 and sink.store.applied == 0
    # the sink without schema validation checks the fields it reads
    async with TicketSink(SECRET, validate=False) as sink, aiohttp.ClientSession() as s:
        for obj in ({"id": "x", "call_id": "c", "type": "t", "ts": "0"},
                    {"id": "x", "call_id": "c", "type": "t", "ts": "0", "seq": "1"},
                    {"id": 1, "call_id": "c", "type": "t", "ts": "0", "seq": 1},
                    {"id": "x", "call_id": "c", "type": "t", "ts": "0", "seq": 1,
                     "routing": {"priority": "high"}}):
            body = json.dumps(obj).encode()
            url = sink.events_url
            async with s.post(url, data=body, headers=signed("POST", url, body)) as resp:
                assert resp.status == 400, obj
