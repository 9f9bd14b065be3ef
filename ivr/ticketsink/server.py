"""Reference ticket backend (``ivr ticket-sink``): the HTTP contract the real one follows.

- Every request but ``/health`` is signed (scheme v2, :mod:`ivr.events.signing`: method,
  path with query, timestamp, nonce, body hash), the IVR's ticket-status lookup too (it
  tells whether a phone number has tickets); a bad, old or replayed signature is 401
  before anything else is read.
- ``POST /v1/events`` one call event (JSON, schema call-event.v1), headers
  ``X-Ivr-Timestamp``, ``X-Ivr-Nonce``, ``X-Ivr-Signature``, ``Idempotency-Key`` (= event
  id).  200 ``{"result": "applied"|"duplicate", "ticket": id, "last_seq": n}``;
  401 bad/old/replayed signature; 400 invalid event; 409 seq out of order (retry later).
- ``POST /v1/events/batch`` ``{"events": [...]}`` signed as a whole; events applied in
  body order; 200 ``{"results": [{"id", "result": applied|duplicate|out_of_order|
  conflict|invalid, "last_seq"|"detail"}]}`` (one per event, same order).
- ``GET /tickets``, ``GET /tickets/{id}`` (ticket id ``T-<call id>`` or the call id),
  signed like a POST with an empty body.
- ``GET /api/v1/tickets/status?caller=…[&exclude_call=…]`` (the IVR's lookup), signed
  the same way.
- Malformed input of any kind is answered 4xx with a JSON ``{"error", "detail"}``; a
  JSON body nested deeper than ``MAX_JSON_DEPTH`` is 400.
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
import math
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from ivr.events.errors import EventValidationError, SignatureError
from ivr.events.schema import validate_event
from ivr.events.signing import (
    DEFAULT_MAX_NONCES,
    IDEMPOTENCY_HEADER,
    ReplayGuard,
    verify,
)
from ivr.log import event as log_event
from ivr.metrics import METRICS
from ivr.privacy import mask_number
from ivr.ticketsink.tickets import Outcome, TicketStore

log = logging.getLogger("ivr.ticketsink.server")

MAX_BODY = 8 * 1024 * 1024
MAX_BATCH = 1000
MAX_JSON_DEPTH = 32  # a call event is 3 levels deep; a batch adds 2


class BadInput(ValueError):
    """A request body the sink cannot take (answered 400)."""


def parse_json(body: bytes) -> Any:
    """``json.loads`` that refuses what a ticket backend must not choke on: nesting deeper
    than ``MAX_JSON_DEPTH`` (the C decoder would raise RecursionError), NaN/Infinity,
    bytes that are not UTF-8.  Raises :class:`BadInput` naming the problem."""
    try:
        obj = json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise BadInput(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except UnicodeDecodeError as exc:
        raise BadInput(f"body is not UTF-8: {exc.reason}") from None
    except ValueError as exc:
        raise BadInput(f"not JSON: {exc}") from None
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise BadInput(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _error(status: int, error: str, detail: str = "",
           headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": error}
    if detail:
        body["detail"] = detail
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
    """Every refusal as JSON (aiohttp's own 404/405/413 too); an unexpected exception is
    logged and answered with a JSON 500 (a bug: malformed input has a 4xx of its own)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason.lower(), exc.text or "")
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:  # noqa: BLE001 - answer, log, and keep serving
        METRICS.inc("sink.internal_errors")
        log.exception("sink.internal_error",
                      extra={"fields": {"path": request.path[:200], "error": repr(exc)}})
        return _error(500, "internal error")


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
        max_nonces: int = DEFAULT_MAX_NONCES,
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
        self.replays = ReplayGuard(max_age, max_nonces)
        self.store = TicketStore()
        self.requests = 0
        self.auth_failures = 0
        self.replays_refused = 0
        self.faults_injected = 0
        # highest X-Ivr-Fence token seen per partition (recorded, not enforced)
        self.fences: dict[str, int] = {}
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
        app = web.Application(client_max_size=MAX_BODY, middlewares=[json_errors])
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

    def _check(self, request: web.Request, body: bytes) -> web.Response | None:
        """None when the request is signed (v2) and not a replay; else the refusal."""
        try:
            ts, nonce = verify(self.secret, request.method, request.raw_path,
                               request.headers, body, max_age=self.max_age)
        except SignatureError as exc:
            return self._unauthorized(exc)
        verdict = self.replays.check_and_remember(ts, nonce)
        if verdict == "replayed":
            self.replays_refused += 1
            METRICS.inc("sink.replays_refused")
            log_event(log, logging.WARNING, "sink.replay_refused", path=request.path[:200],
                      peer=request.remote)
            return self._unauthorized(SignatureError(
                "replayed request: this nonce was already used / 重放的请求"))
        if verdict == "full":
            METRICS.inc("sink.replay_cache_full")
            return _error(503, "busy", "too many signed requests within the clock window; "
                          "retry / 请求过多，请稍后重试", headers={"Retry-After": "1"})
        return None

    def _unauthorized(self, exc: SignatureError) -> web.Response:
        self.auth_failures += 1
        METRICS.inc("sink.auth_failures")
        return _error(401, "unauthorized", str(exc))

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
        refused = self._check(request, body)
        if refused is not None:
            return refused
        self._note_fence(request.headers.get("X-Ivr-Fence", ""))
        if f.error_rate and random.random() < f.error_rate:
            self.faults_injected += 1
            return web.json_response({"error": "injected failure"}, status=500)
        return body

    def _note_fence(self, raw: str) -> None:
        """``X-Ivr-Fence: <token>; partition=<stream>``: keep the highest token per
        partition.  Not enforced here: a stale pusher's request that slipped past its
        own fence check is at worst a duplicate the store answers ``duplicate``."""
        token, _, rest = raw.partition(";")
        part = rest.strip().removeprefix("partition=")
        if token.strip().isdigit() and part and len(self.fences) < 10_000:
            self.fences[part] = max(self.fences.get(part, 0), int(token))

    async def _post_event(self, request: web.Request) -> web.Response:
        body = await self._admit(request)
        if isinstance(body, web.Response):
            return body
        f = self.faults
        try:
            obj = parse_json(body)
            self._validate(obj)
        except (ValueError, EventValidationError) as exc:
            METRICS.inc("sink.invalid")
            return _error(400, "invalid event", str(exc))
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
            batch = parse_json(body)
            if not isinstance(batch, dict) or "events" not in batch:
                raise BadInput("expected an object with 'events'")
            events = batch["events"]
            if not isinstance(events, list) or len(events) > MAX_BATCH:
                raise BadInput(f"'events' must be a list of at most {MAX_BATCH}")
        except BadInput as exc:
            return _error(400, "invalid batch", str(exc))
        results: list[dict[str, Any]] = []
        applied = 0
        for obj in events:
            try:
                self._validate(obj)
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

    def _validate(self, obj: Any) -> None:
        """The schema (default), or with ``validate=False`` the fields the store reads."""
        if self.validate:
            validate_event(obj)
            return
        if not isinstance(obj, dict):
            raise EventValidationError("not a call event (expected an object)")
        for name, kind in (("id", str), ("call_id", str), ("type", str), ("ts", str)):
            if not isinstance(obj.get(name), kind):
                raise EventValidationError(f"field {name!r} must be a string")
        seq = obj.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise EventValidationError("field 'seq' must be an integer >= 1")
        for name in ("routing", "data"):
            if not isinstance(obj.get(name) or {}, dict):
                raise EventValidationError(f"field {name!r} must be an object")
        routing = obj.get("routing") or {}
        priority = routing.get("priority")
        if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool)):
            raise EventValidationError("field 'routing.priority' must be an integer")
        if not isinstance(routing.get("tags") or [], list):
            raise EventValidationError("field 'routing.tags' must be a list")

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
        refused = self._check(request, await request.read())
        if refused is not None:
            return refused
        tickets = [t.to_json() for t in self.store.tickets.values()]
        if request.query.get("events") == "0":
            for t in tickets:
                del t["events"]
        return web.json_response({"tickets": tickets, "count": len(tickets)},
                                 dumps=_dumps)

    async def _get(self, request: web.Request) -> web.Response:
        refused = self._check(request, await request.read())
        if refused is not None:
            return refused
        t = self.store.get(request.match_info["id"])
        if t is None:
            return _error(404, "no such ticket")
        return web.json_response(t.to_json(), dumps=_dumps)

    async def _caller_status(self, request: web.Request) -> web.Response:
        """Ticket-status lookup by caller number, for the IVR (工单查询).

        Every ticket of this reference backend stays in processing (处理中) once its
        call has ended: nothing here resolves requests, departments do.  Anonymous
        tickets are not found by number, by design.  ``exclude_call`` leaves out the
        ticket of the call in progress.  404 when the caller has none.  Signed like
        every request (401 otherwise): it tells whether a number has tickets."""
        refused = self._check(request, await request.read())
        if refused is not None:
            return refused
        caller = request.query.get("caller", "").strip()
        if not caller or not caller.isascii() or not caller.isdigit() or len(caller) > 20:
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
            "replays_refused": self.replays_refused,
            "faults_injected": self.faults_injected, "faults": self.faults.to_json(),
        })

    async def _faults(self, request: web.Request) -> web.Response:
        body = await request.read()
        refused = self._check(request, body)
        if refused is not None:
            return refused
        try:
            obj = parse_json(body or b"{}")
            if not isinstance(obj, dict):
                raise BadInput("expected an object")
            values: dict[str, float] = {}
            for name in ("error_rate", "latency_ms", "hang_rate", "hang_ms", "down_for"):
                if name in obj:
                    v = obj[name]
                    if not isinstance(v, int | float) or isinstance(v, bool) \
                            or not math.isfinite(v) or v < 0:
                        raise BadInput(f"{name!r} must be a number >= 0")
                    if name.endswith("_rate") and v > 1:
                        raise BadInput(f"{name!r} must be between 0 and 1")
                    values[name] = float(v)
        except BadInput as exc:
            return _error(400, "bad faults", str(exc))
        f = self.faults
        for name in ("error_rate", "latency_ms", "hang_rate", "hang_ms"):
            if name in values:
                setattr(f, name, values[name])
        down = values.get("down_for", 0.0)
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
