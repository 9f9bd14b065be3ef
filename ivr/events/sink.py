"""Reference ticket backend (``ivr ticket-sink``): the HTTP contract the real one follows.

- ``POST /v1/events`` one call event (JSON, schema call-event.v1), headers
  ``X-Ivr-Timestamp``, ``X-Ivr-Signature``, ``Idempotency-Key`` (= event id).
  200 ``{"result": "applied"|"duplicate", "ticket": id, "last_seq": n}``;
  401 bad/old signature; 400 invalid event; 409 seq out of order (retry later).
- ``POST /v1/events/batch`` ``{"events": [...]}`` signed as a whole; events applied in
  body order; 200 ``{"results": [{"id", "result": applied|duplicate|out_of_order|
  conflict|invalid, "last_seq"|"detail"}]}`` (one per event, same order).
- ``GET /tickets``, ``GET /tickets/{id}`` (ticket id ``T-<call id>`` or the call id),
  signed like a POST with an empty body.
- ``GET /health`` (no auth): status and counters.
- ``POST /admin/faults`` (signed): ``error_rate``, ``latency_ms``, ``hang_rate``,
  ``hang_ms``, ``down_for`` — fault injection for tests and drills.

Storage is in memory, or a JSON snapshot file (``store_path``) written atomically; a
request is acknowledged only after the snapshot holding its effect is on disk (group
commit), so an acknowledged event survives a crash of the sink.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from ivr.events.errors import EventValidationError, SignatureError
from ivr.events.schema import validate_event
from ivr.events.signing import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify,
)
from ivr.events.tickets import Outcome, TicketStore
from ivr.log import event as log_event
from ivr.metrics import METRICS
from ivr.privacy import mask_number

log = logging.getLogger("ivr.events.sink")

MAX_BODY = 8 * 1024 * 1024
MAX_BATCH = 1000


@dataclass(slots=True)
class Faults:
    error_rate: float = 0.0  # fraction of event POSTs answered 500 (not applied)
    latency_ms: float = 0.0  # delay before handling each event POST
    hang_rate: float = 0.0  # fraction applied, then answered only after hang_ms
    hang_ms: float = 0.0
    down_until: float = 0.0  # monotonic time until which the sink refuses connections

    def to_json(self) -> dict[str, Any]:
        return {"error_rate": self.error_rate, "latency_ms": self.latency_ms,
                "hang_rate": self.hang_rate, "hang_ms": self.hang_ms,
                "down_for": max(0.0, self.down_until - time.monotonic())}


class TicketSink:
    """``async with TicketSink(secret) as sink: sink.url …``"""

    def __init__(
        self,
        secret: bytes,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        store_path: str | Path | None = None,
        faults: Faults | None = None,
        validate: bool = True,
        max_age: float = 300.0,
    ) -> None:
        if not secret:
            raise ValueError("the ticket sink needs a secret (IVR_TICKET_SECRET)")
        self.secret = secret
        self.host = host
        self.port = port
        self.store_path = Path(store_path) if store_path else None
        self.faults = faults or Faults()
        self.validate = validate
        self.max_age = max_age
        self.store = TicketStore()
        self.requests = 0
        self.auth_failures = 0
        self.faults_injected = 0
        self._gen = 0
        self._flushed = 0
        self._flush_lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._up_task: asyncio.Task[None] | None = None
        self.up = asyncio.Event()  # listening
        self.down = asyncio.Event()  # refusing connections (fault)
        if self.store_path is not None and self.store_path.exists():
            self.store.load(json.loads(self.store_path.read_text("utf-8")))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def events_url(self) -> str:
        return self.url + "/v1/events"

    async def __aenter__(self) -> TicketSink:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/v1/events", self._post_event)
        app.router.add_post("/v1/events/batch", self._post_batch)
        app.router.add_get("/tickets", self._list)
        app.router.add_get("/tickets/{id}", self._get)
        app.router.add_get("/health", self._health)
        app.router.add_get("/api/v1/tickets/status", self._caller_status)
        app.router.add_post("/admin/faults", self._faults)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        await self._bind()

    async def _bind(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await self._site.start()
        server = self._site._server
        if self.port == 0 and server is not None:
            sockets = getattr(server, "sockets", None) or []
            self.port = int(sockets[0].getsockname()[1])
        self.down.clear()
        self.up.set()

    async def close(self) -> None:
        if self._up_task is not None:
            self._up_task.cancel()
            try:
                await self._up_task
            except asyncio.CancelledError:
                pass
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._commit()

    async def go_down(self, seconds: float) -> None:
        """Refuse connections for ``seconds`` (listening socket closed), then come back."""
        self.faults.down_until = time.monotonic() + seconds
        if self._site is not None:
            await self._site.stop()
            self._site = None
        self.up.clear()
        self.down.set()
        if self._up_task is not None:
            self._up_task.cancel()
        self._up_task = asyncio.create_task(self._come_back(seconds))

    async def _come_back(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.faults.down_until = 0.0
        while self._site is None:
            try:
                await self._bind()
            except OSError:
                await asyncio.sleep(0.05)
        log_event(log, logging.INFO, "sink.up", url=self.url)

    async def wait_for(self, predicate: Callable[[TicketStore], bool]) -> None:
        """Until ``predicate(store)`` is true, re-checked on each change (wrap it in
        ``asyncio.timeout``)."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self.store))

    # -- handlers ------------------------------------------------------------------

    def _check(self, request: web.Request, body: bytes) -> None:
        verify(self.secret, request.headers.get(TIMESTAMP_HEADER),
               request.headers.get(SIGNATURE_HEADER), body, max_age=self.max_age)

    def _unauthorized(self, exc: SignatureError) -> web.Response:
        self.auth_failures += 1
        METRICS.inc("sink.auth_failures")
        return web.json_response({"error": "unauthorized", "detail": str(exc)}, status=401)

    async def _admit(self, request: web.Request) -> bytes | web.Response:
        """What every POST goes through first: injected faults (down, latency, errors),
        reading the body, the signature.  The body, or the response that refuses it."""
        self.requests += 1
        f = self.faults
        if f.down_until and time.monotonic() < f.down_until:
            self.faults_injected += 1
            return web.json_response({"error": "down"}, status=503,
                                     headers={"Connection": "close"})
        if f.latency_ms:
            await asyncio.sleep(f.latency_ms / 1000)
        try:
            body = await request.read()
        except ConnectionResetError:
            METRICS.inc("sink.client_gone")  # the pusher died mid-request: it will retry
            return web.Response(status=400)
        try:
            self._check(request, body)
        except SignatureError as exc:
            return self._unauthorized(exc)
        if f.error_rate and random.random() < f.error_rate:
            self.faults_injected += 1
            return web.json_response({"error": "injected failure"}, status=500)
        return body

    async def _post_event(self, request: web.Request) -> web.Response:
        body = await self._admit(request)
        if isinstance(body, web.Response):
            return body
        f = self.faults
        try:
            obj = json.loads(body)
            if self.validate:
                validate_event(obj)
            elif not isinstance(obj, dict) or "call_id" not in obj:
                raise EventValidationError("not a call event")
        except (ValueError, EventValidationError) as exc:
            METRICS.inc("sink.invalid")
            return web.json_response({"error": "invalid event", "detail": str(exc)},
                                     status=400)
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None and key != obj["id"]:
            return web.json_response(
                {"error": "invalid event", "detail": "Idempotency-Key differs from event id"},
                status=400)
        outcome, last = self.store.apply(obj)
        ticket = "T-" + str(obj["call_id"])
        if outcome in (Outcome.OUT_OF_ORDER, Outcome.CONFLICT):
            METRICS.inc("sink.rejected_order")
            log_event(log, logging.INFO, "sink.out_of_order", call_id=obj["call_id"],
                      seq=obj["seq"], last_seq=last)
            return web.json_response({"error": outcome.value, "ticket": ticket,
                                      "last_seq": last}, status=409)
        if outcome is Outcome.APPLIED:
            self._gen += 1
            if obj.get("type") == "call.started":
                caller = None if (obj.get("routing") or {}).get("anonymous") else obj.get(
                    "caller")
                log_event(log, logging.DEBUG, "sink.ticket_opened", ticket=ticket,
                          caller=mask_number(caller))
            async with self._changed:
                self._changed.notify_all()
            await self._commit()
        if f.hang_rate and random.random() < f.hang_rate:
            self.faults_injected += 1
            await asyncio.sleep(f.hang_ms / 1000)
        return web.json_response({"result": outcome.value, "ticket": ticket, "last_seq": last})

    async def _post_batch(self, request: web.Request) -> web.Response:
        """Events in body order; one result per event; 200 unless the whole request is
        refused (signature, fault, not a batch)."""
        body = await self._admit(request)
        if isinstance(body, web.Response):
            return body
        f = self.faults
        try:
            batch = json.loads(body)
            events = batch["events"]
            if not isinstance(events, list) or len(events) > MAX_BATCH:
                raise ValueError(f"'events' must be a list of at most {MAX_BATCH}")
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": "invalid batch", "detail": str(exc)},
                                     status=400)
        results: list[dict[str, Any]] = []
        applied = 0
        for obj in events:
            try:
                if self.validate:
                    validate_event(obj)
                elif not isinstance(obj, dict) or "call_id" not in obj:
                    raise EventValidationError("not a call event")
            except EventValidationError as exc:
                METRICS.inc("sink.invalid")
                ident = obj.get("id") if isinstance(obj, dict) else None
                results.append({"id": ident, "result": "invalid", "detail": str(exc)})
                continue
            outcome, last = self.store.apply(obj)
            if outcome is Outcome.APPLIED:
                applied += 1
            elif outcome is not Outcome.DUPLICATE:
                METRICS.inc("sink.rejected_order")
            results.append({"id": obj["id"], "result": outcome.value, "last_seq": last})
        if applied:
            self._gen += 1
            async with self._changed:
                self._changed.notify_all()
            await self._commit()
        if f.hang_rate and random.random() < f.hang_rate:
            self.faults_injected += 1
            await asyncio.sleep(f.hang_ms / 1000)
        return web.json_response({"results": results})

    async def _commit(self) -> None:
        """Write the snapshot if anything changed since the last write (group commit)."""
        if self.store_path is None:
            return
        target = self._gen
        async with self._flush_lock:
            if self._flushed >= target:
                return
            gen = self._gen
            text = json.dumps(self.store.snapshot(), ensure_ascii=False)
            await asyncio.to_thread(_write_atomic, self.store_path, text)
            self._flushed = gen

    async def _list(self, request: web.Request) -> web.Response:
        try:
            self._check(request, b"")
        except SignatureError as exc:
            return self._unauthorized(exc)
        tickets = [t.to_json() for t in self.store.tickets.values()]
        if request.query.get("events") == "0":
            for t in tickets:
                del t["events"]
        return web.json_response({"tickets": tickets, "count": len(tickets)},
                                 dumps=_dumps)

    async def _get(self, request: web.Request) -> web.Response:
        try:
            self._check(request, b"")
        except SignatureError as exc:
            return self._unauthorized(exc)
        t = self.store.get(request.match_info["id"])
        if t is None:
            return web.json_response({"error": "no such ticket"}, status=404)
        return web.json_response(t.to_json(), dumps=_dumps)

    async def _caller_status(self, request: web.Request) -> web.Response:
        """Ticket-status lookup by caller number, for the IVR (工单查询).

        Every ticket of this reference backend stays in processing (处理中) once its
        call has ended: nothing here resolves requests, departments do.  Anonymous
        tickets are not found by number, by design.  ``exclude_call`` leaves out the
        ticket of the call in progress.  404 when the caller has none."""
        caller = request.query.get("caller", "").strip()
        if not caller or not caller.isdigit() or len(caller) > 20:
            return web.json_response(
                {"error": "query parameter 'caller' must be a phone number / 需要来电号码"},
                status=400,
            )
        # the call asking (the IVR) already has its own ticket: not a previous request
        exclude = request.query.get("exclude_call", "")
        found = [t for t in self.store.tickets.values()
                 if t.caller == caller and t.call_id != exclude]
        if not found:
            return web.json_response({"open": 0, "tickets": []}, status=404)
        tickets = [
            {"id": t.ticket_id, "status": "processing", "created_at": t.created_at,
             "call_status": t.status}
            for t in found
        ]
        return web.json_response({"open": len(tickets), "tickets": tickets}, dumps=_dumps)

    async def _health(self, request: web.Request) -> web.Response:
        s = self.store
        return web.json_response({
            "status": "ok", "tickets": len(s.tickets), "applied": s.applied,
            "duplicates": s.duplicates, "rejected_out_of_order": s.rejected,
            "requests": self.requests, "auth_failures": self.auth_failures,
            "faults_injected": self.faults_injected, "faults": self.faults.to_json(),
        })

    async def _faults(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            self._check(request, body)
        except SignatureError as exc:
            return self._unauthorized(exc)
        try:
            obj = json.loads(body or b"{}")
            if not isinstance(obj, dict):
                raise ValueError("expected an object")
            f = self.faults
            for name in ("error_rate", "latency_ms", "hang_rate", "hang_ms"):
                if name in obj:
                    setattr(f, name, float(obj[name]))
            down = float(obj.get("down_for", 0))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": f"bad faults: {exc}"}, status=400)
        if down > 0:
            # Answer first, then close the listening socket.
            asyncio.get_running_loop().call_soon(
                lambda: asyncio.ensure_future(self.go_down(down)))
        log_event(log, logging.WARNING, "sink.faults", **self.faults.to_json())
        return web.json_response(self.faults.to_json())


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
