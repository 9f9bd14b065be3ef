"""Asyncio AMI client: :class:`AMIClient`.

Not built on panoramisk 1.4's :class:`panoramisk.Manager`, neither as a subclass nor by
holding one: nothing of it is sound for this role (known-pitfalls panoramisk 1, 4–9;
docs/ami.md lists each).  Its protocol decodes each TCP read on its own (Chinese text
lost), ``dispatch`` lets a raising handler kill the connection, ``send_action`` has no
timeout, ``connect`` takes the loop with ``get_event_loop()`` and reconnects blindly, and
its constructor registers a ``FullyBooted`` callback that re-sends every unanswered
action (Originate and Redirect included).  The one harmless part, the event registry
(fnmatch patterns compiled once, handlers per pattern, ``register_event`` usable as a
decorator), is a dozen lines; it is kept here with the same semantics rather than
inherited together with that constructor (which then had to be undone).

The bytes are parsed by the sans-I/O :class:`ivr.ami.codec.AMIParser`; this module only
does I/O and bookkeeping:

* one supervisor task connects, logs in (plain or MD5 challenge), re-sends the safe
  actions that were in flight, runs the ``on_connect`` hook, and reconnects with capped,
  jittered exponential backoff whenever the connection ends;
* every action carries a unique ActionID and a timeout; replies are matched by ActionID;
* a keep-alive Ping per connection; no reply within ``ping_timeout`` → the connection is
  declared dead and aborted (a half-open TCP connection is noticed);
* event handlers never kill the connection: a raising handler is logged and counted.

Nothing loop-bound is created in the constructor (pitfall 9): futures, events and tasks
are made in :meth:`AMIClient.start`.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import itertools
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import translate
from typing import Any, Literal

from ivr.ami.backoff import Backoff
from ivr.ami.codec import (
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_LIST_BYTES,
    DEFAULT_MAX_LIST_EVENTS,
    AMIParser,
    FieldValue,
    encode_action,
)
from ivr.ami.errors import (
    AMIActionFailed,
    AMIActionNotRetried,
    AMIActionTimeout,
    AMIAuthError,
    AMIConnectionError,
    AMIError,
    AMIListTooLarge,
    AMIProtocolError,
)
from ivr.ami.messages import (
    Action,
    Banner,
    Event,
    EventList,
    Incoming,
    ProtocolIssue,
    Response,
)
from ivr.ami.safety import is_resend_safe
from ivr.errors import ConfigError
from ivr.log import event as log_event
from ivr.metrics import METRICS
from ivr.privacy import mask_number, scrub

log = logging.getLogger("ivr.ami.client")

Result = Response | EventList
EventHandler = Callable[[Event], Awaitable[None] | None]
ConnectHook = Callable[["AMIClient"], Awaitable[None] | None]
DisconnectHook = Callable[["AMIClient", BaseException], Awaitable[None] | None]

_DISPATCH_CACHE_MAX = 4096  # distinct event names remembered by the dispatch cache

# Header names whose values are phone numbers (masked in logs).
_NUMBER_FIELDS = frozenset(
    {"callerid", "calleridnum", "connectedlinenum", "exten", "destcalleridnum", "number"}
)


@dataclass(frozen=True)
class AMISettings:
    """Timing and protocol knobs (seconds).  Tests shrink them; production keeps the
    defaults.  ``ping_interval=0`` turns the keep-alive off."""

    auth: Literal["plain", "md5"] = "md5"
    events: str = "on"
    action_timeout: float = 10.0
    connect_timeout: float = 5.0
    login_timeout: float = 5.0
    ping_interval: float = 20.0
    ping_timeout: float = 5.0
    close_timeout: float = 2.0
    backoff: Backoff = field(default_factory=Backoff)
    max_frame: int = DEFAULT_MAX_FRAME
    max_list_events: int = DEFAULT_MAX_LIST_EVENTS
    max_list_bytes: int = DEFAULT_MAX_LIST_BYTES
    action_id_prefix: str | None = None

    def __post_init__(self) -> None:
        if self.auth not in ("plain", "md5"):
            raise ConfigError(f"AMI auth must be 'plain' or 'md5', got {self.auth!r} / "
                              "AMI 认证方式须为 plain 或 md5")
        for name in ("action_timeout", "connect_timeout", "login_timeout", "ping_timeout",
                     "close_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"AMI setting {name} must be > 0 / AMI 设置 {name} 须大于 0")
        if self.ping_interval < 0:
            raise ConfigError("AMI setting ping_interval must be >= 0 / ping_interval 不能为负")
        for name in ("max_frame", "max_list_events", "max_list_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"AMI setting {name} must be >= 1 / AMI 设置 {name} 须大于 0")


@dataclass(eq=False)
class _Pending:
    """An action waiting for its reply."""

    action_id: str
    name: str
    data: bytes
    future: asyncio.Future[Result]
    resend: bool
    internal: bool
    conn: _Connection | None = None  # the connection it was written to (None: not sent)


def _loggable(fields: Mapping[str, FieldValue]) -> dict[str, Any]:
    """Fields for a log line: secrets dropped, phone numbers masked."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        low = name.lower()
        if low in ("secret", "key"):
            out[name] = "***"
        elif isinstance(value, str):
            out[name] = mask_number(value) if low in _NUMBER_FIELDS else scrub(value)
        elif isinstance(value, int):
            out[name] = value
        else:
            out[name] = [scrub(str(v)) for v in value]
    return out


class _Connection(asyncio.Protocol):
    """One TCP connection: feeds bytes to an :class:`AMIParser`, hands what comes out to
    the client, and reports the end of the connection with its reason."""

    def __init__(self, client: AMIClient, parser: AMIParser) -> None:
        loop = asyncio.get_running_loop()
        self.client = client
        self.parser = parser
        self.transport: asyncio.Transport | None = None
        self.banner: asyncio.Future[Banner] = loop.create_future()
        self.closed: asyncio.Future[BaseException] = loop.create_future()
        self.reason: BaseException | None = None

    # asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        METRICS.inc("ami.bytes_received", len(data))
        try:
            items = self.parser.feed(data)
        except AMIProtocolError as exc:
            METRICS.inc("ami.protocol_error")
            log_event(log, logging.ERROR, "ami.protocol_error", error=str(exc),
                      host=self.client.host, port=self.client.port)
            self.abort(exc)
            return
        self.client._handle_all(self, items)

    def eof_received(self) -> bool:
        if self.reason is None:
            self.reason = AMIConnectionError(
                f"Asterisk at {self.client.host}:{self.client.port} closed the connection "
                "(end of stream): Asterisk went away"
            )
        self.client._handle_all(self, self.parser.feed_eof())
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        reason: BaseException
        if self.reason is not None:
            reason = self.reason
        elif exc is not None:
            reason = AMIConnectionError(f"connection to Asterisk lost: {exc!r}")
        else:
            reason = AMIConnectionError("connection to Asterisk closed")
        self.reason = reason
        if not self.banner.done():
            self.banner.set_exception(reason if isinstance(reason, AMIError)
                                      else AMIConnectionError(str(reason)))
            self.banner.exception()  # mark retrieved: nobody may be waiting any more
        if not self.closed.done():
            self.closed.set_result(reason)
        self.client._connection_lost(self, reason)

    # used by the client ---------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.transport is not None and not self.closed.done() and self.reason is None

    def write(self, data: bytes) -> None:
        if self.transport is None or not self.alive:
            raise AMIConnectionError("not connected to Asterisk")
        self.transport.write(data)

    def abort(self, reason: BaseException) -> None:
        """Drop the connection now (no graceful close: the peer may be dead)."""
        if self.reason is None:
            self.reason = reason
        if isinstance(reason, AMIProtocolError) and not self.banner.done():
            self.banner.set_exception(reason)
            self.banner.exception()  # mark retrieved; _open() still gets it raised
        if self.transport is not None:
            self.transport.abort()


class AMIClient:
    """Asyncio AMI client with reconnect.  Use as ``async with AMIClient(...) as ami:``
    or ``await ami.start()`` … ``await ami.close()``.

    ``on_connect(client)`` runs after every successful (re)connect and login — rebuild
    state there (CoreShowChannels, QueueStatus).  ``on_disconnect(client, reason)`` runs
    when a connection ends.  Both may be sync or async; an error in them is logged and
    counted, never fatal.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5038,
        *,
        username: str,
        secret: str,
        settings: AMISettings | None = None,
        on_connect: ConnectHook | None = None,
        on_disconnect: DisconnectHook | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # The event registry: fnmatch patterns in registration order, handlers per pattern.
        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        self._callbacks: dict[str, list[EventHandler]] = {}
        # Handlers per event name, built on first use from the registry and dropped
        # whenever a handler is added or removed (the hot path: one dict lookup per event
        # instead of matching every pattern).
        self._dispatch_cache: dict[str, tuple[list[str], tuple[tuple[str, Any], ...]]] = {}
        self.host = host
        self.port = port
        self.username = username
        self._secret = secret
        self.settings = settings or AMISettings()
        self.on_connect: ConnectHook | None = on_connect
        self.on_disconnect: DisconnectHook | None = on_disconnect
        self._rng = rng or random.Random()
        self._clock = clock  # how long a session lasted (Backoff.reset_after)
        prefix = self.settings.action_id_prefix
        if prefix is None:
            prefix = f"ivr-{os.getpid()}-{random.getrandbits(24):06x}-"
        self._id_prefix = prefix
        self._ids = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._conn: _Connection | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._connected_event: asyncio.Event | None = None
        self._handler_tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.banner: Banner | None = None
        self.connects = 0  # successful logins so far

    # -- public API ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while logged in on a live connection."""
        return self._conn is not None and self._conn.alive

    async def start(self) -> None:
        """Start the connection supervisor and wait for the first login.

        Connection failures and protocol errors are retried with backoff (wrap the call
        in ``asyncio.timeout`` to bound the wait); a refused login on the first connection
        raises :class:`AMIAuthError` and stops the client."""
        if self._supervisor is not None:
            raise AMIConnectionError("AMI client already started")
        if self._closing:
            raise AMIConnectionError("AMI client is closed")
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._connected_event = asyncio.Event()
        self._supervisor = loop.create_task(self._run(), name=f"ami-{self.host}:{self.port}")
        try:
            await asyncio.shield(self._ready)
        except BaseException:
            await self.close()
            raise

    async def wait_connected(self) -> None:
        """Wait until the client is logged in (after a reconnect, for example)."""
        if self._connected_event is None:
            raise AMIConnectionError("AMI client not started")
        await self._connected_event.wait()

    def on_event(self, pattern: str, handler: EventHandler | None = None) -> Any:
        """Call ``handler(event)`` for every event whose name matches the fnmatch
        ``pattern`` (``"Queue*"``, ``"*"``).  Sync handlers run in order as events are
        parsed; async ones are scheduled as tasks.  Usable as a decorator."""
        if handler is None:
            return lambda h: self.on_event(pattern, h)
        self.register_event(pattern, handler)
        return handler

    def register_event(self, pattern: str, callback: Any = None) -> Any:
        """Add ``callback`` for events matching the fnmatch ``pattern`` and return it
        (panoramisk's name and decorator form; :meth:`on_event` is the same)."""
        if callback is None:
            return lambda cb: self.register_event(pattern, cb)
        self._dispatch_cache.clear()
        callbacks = self._callbacks.get(pattern)
        if callbacks is None:
            callbacks = self._callbacks[pattern] = []
            self._patterns.append((pattern, re.compile(translate(pattern))))
        callbacks.append(callback)
        return callback

    def off_event(self, pattern: str, handler: EventHandler) -> None:
        """Remove a handler added with :meth:`on_event`."""
        self._dispatch_cache.clear()
        callbacks = self._callbacks.get(pattern, [])
        if handler in callbacks:
            callbacks.remove(handler)
        if not callbacks:
            self._callbacks.pop(pattern, None)
            self._patterns[:] = [(p, r) for p, r in self._patterns if p != pattern]

    async def send_action(
        self,
        action: str,
        fields: Mapping[str, FieldValue] | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - per-action timeout is the API
        check: bool = False,
    ) -> Result:
        """Send ``action`` and return its reply: a :class:`Response`, or an
        :class:`EventList` (response + events + ``…Complete``) for list actions.

        ``Response: Error`` is returned (``result.success`` is false) unless ``check``
        is true, then :class:`AMIActionFailed` is raised.  Raises
        :class:`AMIActionTimeout` if Asterisk does not answer within ``timeout``
        (default ``settings.action_timeout``); :class:`AMIActionNotRetried` if the
        connection dropped while an action that must not run twice was in flight;
        :class:`AMIConnectionError` if not connected.  Actions that are safe to repeat
        (see :mod:`ivr.ami.safety`) wait for a reconnect within their timeout and are
        re-sent; the others fail at once when there is no connection."""
        fields = fields or {}
        if self._ready is None or self._closing:
            raise AMIConnectionError(f"{action}: AMI client not started or closed")
        timeout = self.settings.action_timeout if timeout is None else timeout
        resend = is_resend_safe(action, fields)
        conn = self._conn if self.connected else None
        if conn is None and not resend:
            raise AMIConnectionError(
                f"{action}: not connected to Asterisk at {self.host}:{self.port}"
            )
        pending = self._new_pending(action, fields, resend=resend, internal=False)
        if conn is not None:
            try:
                self._write(conn, pending, fields)
            except AMIConnectionError:
                if not resend:
                    del self._pending[pending.action_id]
                    raise
                pending.conn = None  # sent after the next login
        result = await self._wait(pending, timeout)
        if check and isinstance(result, Response) and not result.success:
            raise AMIActionFailed(action, result)
        if check and isinstance(result, EventList) and not result.response.success:
            raise AMIActionFailed(action, result.response)
        return result

    async def close(self) -> None:
        """Log off, stop reconnecting, fail pending actions and stop handler tasks."""
        if self._closing:
            return
        self._closing = True
        conn = self._conn
        if conn is not None and conn.alive:
            try:
                pending = self._new_pending("Logoff", {}, resend=False, internal=True)
                self._write(conn, pending, {})
                await self._wait(pending, self.settings.close_timeout)
            except AMIError:
                pass
            if conn.alive:
                conn.abort(AMIConnectionError("AMI client closed"))
        sup = self._supervisor
        if sup is not None and not sup.done():
            sup.cancel()
            await asyncio.gather(sup, return_exceptions=True)
        closing = AMIConnectionError("AMI client closed")
        for p in list(self._pending.values()):
            if not p.future.done():
                p.future.set_exception(closing)
        self._pending.clear()
        tasks = list(self._handler_tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(closing)
            self._ready.exception()  # retrieved: start() is the only waiter
        log_event(log, logging.INFO, "ami.closed", host=self.host, port=self.port)

    async def __aenter__(self) -> AMIClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- dispatch ---------------------------------------------------------------------

    def dispatch(self, event: Any) -> list[str]:
        """Call the handlers of every pattern matching ``event.name``; a raising handler
        is logged and counted and does not stop the others."""
        name = event.name if isinstance(event, Event) else str(event.get("Event", ""))
        return self._dispatch(event, name)

    def _handlers(self, name: str) -> tuple[list[str], tuple[tuple[str, Any], ...]]:
        """Matching patterns and their (pattern, handler) pairs for event ``name``."""
        entry = self._dispatch_cache.get(name)
        if entry is None:
            matched = [p for p, regexp in self._patterns if regexp.match(name) is not None]
            pairs = tuple((p, h) for p in matched for h in self._callbacks.get(p, ()))
            if len(self._dispatch_cache) >= _DISPATCH_CACHE_MAX:  # odd names: stay bounded
                self._dispatch_cache.clear()
            entry = self._dispatch_cache[name] = (matched, pairs)
        return entry

    def _dispatch(self, event: Any, name: str) -> list[str]:
        matched, pairs = self._handlers(name)
        for pattern, handler in pairs:
            self._call_handler(handler, event, pattern)
        return list(matched)

    # -- internals: actions ------------------------------------------------------------

    def _new_pending(
        self, action: str, fields: Mapping[str, FieldValue], *, resend: bool, internal: bool
    ) -> _Pending:
        action_id = f"{self._id_prefix}{next(self._ids)}"
        data = encode_action(action, fields, action_id)  # AMIEncodeError before anything
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        pending = _Pending(action_id, action, data, future, resend, internal)
        self._pending[action_id] = pending
        return pending

    def _write(self, conn: _Connection, pending: _Pending, fields: Mapping[str, FieldValue]
               ) -> None:
        pending.conn = conn
        conn.write(pending.data)
        METRICS.inc("ami.action.sent")
        if log.isEnabledFor(logging.DEBUG):
            log_event(log, logging.DEBUG, "ami.action.sent", action=pending.name,
                      action_id=pending.action_id, fields=_loggable(fields))

    async def _wait(self, pending: _Pending, limit: float) -> Result:
        timeout = limit
        try:
            return await asyncio.wait_for(pending.future, timeout)
        except TimeoutError as exc:
            if pending.future.done() and not pending.future.cancelled():
                raise  # the future itself failed with a timeout-type error
            sent = pending.conn is not None and pending.conn.alive
            if pending.conn is not None:  # a list still coming is not held for nobody
                pending.conn.parser.abandon(pending.action_id)
            METRICS.inc("ami.action.timeout")
            log_event(log, logging.WARNING, "ami.action.timeout", action=pending.name,
                      action_id=pending.action_id, timeout=timeout, connected=sent)
            if sent:
                raise AMIActionTimeout(
                    f"{pending.name} (ActionID {pending.action_id}): no reply from Asterisk "
                    f"within {timeout:g}s"
                ) from exc
            raise AMIConnectionError(
                f"{pending.name} (ActionID {pending.action_id}): connection to Asterisk "
                f"lost and not back within {timeout:g}s"
            ) from exc
        finally:
            self._pending.pop(pending.action_id, None)

    async def _request(
        self, conn: _Connection, action: str, fields: Mapping[str, FieldValue], limit: float
    ) -> Result:
        """An action of the client itself (Challenge, Login, keep-alive Ping) on ``conn``:
        failed, never re-sent, if that connection ends."""
        pending = self._new_pending(action, fields, resend=False, internal=True)
        try:
            self._write(conn, pending, fields)
        except AMIConnectionError:
            del self._pending[pending.action_id]
            raise
        return await self._wait(pending, limit)

    # -- internals: incoming -----------------------------------------------------------

    def _handle_all(self, conn: _Connection, items: list[Incoming]) -> None:
        """What one read produced, in order (events counted once per read)."""
        events = 0
        for item in items:
            if type(item) is Event:
                events += 1
            self._handle(conn, item)
        if events:
            METRICS.inc("ami.event", events)

    def _handle(self, conn: _Connection, item: Incoming) -> None:
        """One parsed item; never raises (a bug here must not kill the connection)."""
        try:
            if isinstance(item, Event):
                self._on_event(conn, item)
            elif isinstance(item, Response | EventList):
                self._on_reply(item)
            elif isinstance(item, Banner):
                self.banner = item
                if not conn.banner.done():
                    conn.banner.set_result(item)
            elif isinstance(item, ProtocolIssue):
                METRICS.inc("ami.protocol_issue")
                log_event(log, logging.WARNING, "ami.protocol_issue", reason=item.reason,
                          raw=scrub(item.raw[:200]), host=self.host, port=self.port)
            elif isinstance(item, Action):
                METRICS.inc("ami.protocol_issue")
                log_event(log, logging.WARNING, "ami.protocol_issue",
                          reason="Asterisk sent an Action frame", raw=item.name)
        except Exception:  # pragma: no cover - defensive: keep reading
            METRICS.inc("ami.client.internal_error")
            log.exception("ami.client.internal_error", extra={"fields": {"item": repr(item)}})

    def _on_reply(self, item: Result) -> None:
        action_id = item.action_id
        if isinstance(item, EventList) and item.overflow is not None:
            self._list_overflow(item)
            return
        if isinstance(item, EventList) and item.complete is None:
            # Cut by the end of the connection: not a result; the lost-connection rules
            # decide what happens to the action.
            METRICS.inc("ami.eventlist.incomplete")
            log_event(log, logging.WARNING, "ami.eventlist.incomplete",
                      action_id=action_id, events=len(item.events))
            return
        pending = self._pending.get(action_id) if action_id is not None else None
        if pending is None or pending.future.done():
            METRICS.inc("ami.response.unmatched")
            log_event(log, logging.INFO, "ami.response.unmatched", action_id=action_id)
            return
        del self._pending[pending.action_id]
        pending.future.set_result(item)

    def _list_overflow(self, item: EventList) -> None:
        """The parser gave up a list result over its caps: fail its action now."""
        action_id = item.action_id
        pending = self._pending.get(action_id) if action_id is not None else None
        name = pending.name if pending is not None else "list action"
        METRICS.inc("ami.eventlist.too_large")
        log_event(log, logging.ERROR, "ami.eventlist.too_large", action=name,
                  action_id=action_id, reason=item.overflow, host=self.host, port=self.port)
        if pending is None or pending.future.done():
            return
        del self._pending[pending.action_id]
        pending.future.set_exception(AMIListTooLarge(
            f"{name} (ActionID {action_id}): the list result from Asterisk at "
            f"{self.host}:{self.port} grew over the cap ({item.overflow}) before its "
            "EventList: Complete; it is dropped and the rest of it discarded "
            "(max_list_events / max_list_bytes) / 列表结果超过上限，已丢弃"))

    def _on_event(self, conn: _Connection, event: Event) -> None:
        name = event.name
        self._dispatch(event, name)
        if len(name) == 8 and name.lower() == "shutdown":
            log_event(log, logging.WARNING, "ami.shutdown", host=self.host, port=self.port,
                      shutdown=event.get("Shutdown"), restart=event.get("Restart"))
            conn.abort(AMIConnectionError(
                f"Asterisk at {self.host}:{self.port} is shutting down (Shutdown event)"
            ))

    def _call_handler(self, handler: EventHandler, event: Event, pattern: str) -> None:
        try:
            ret = handler(event)
        except Exception as exc:
            self._handler_failed(handler, event, pattern, exc)
            return
        if ret is not None and inspect.isawaitable(ret):
            task = asyncio.ensure_future(ret)
            self._handler_tasks.add(task)

            def done(t: asyncio.Future[Any]) -> None:
                self._handler_tasks.discard(t)
                if not t.cancelled() and t.exception() is not None:
                    exc = t.exception()
                    assert exc is not None
                    self._handler_failed(handler, event, pattern, exc)

            task.add_done_callback(done)

    def _handler_failed(
        self, handler: object, event: Event, pattern: str, exc: BaseException
    ) -> None:
        METRICS.inc("ami.handler_error")
        log.error(
            "ami.handler_error",
            exc_info=(type(exc), exc, exc.__traceback__),
            extra={"fields": {"event": event.name, "pattern": pattern,
                              "handler": getattr(handler, "__qualname__", repr(handler))}},
        )

    # -- internals: connection life ---------------------------------------------------

    def _connection_lost(self, conn: _Connection, reason: BaseException) -> None:
        if self._conn is conn:
            self._conn = None
            if self._connected_event is not None:
                self._connected_event.clear()
        for p in list(self._pending.values()):
            if p.conn is not conn or p.future.done():
                continue
            if p.internal:
                del self._pending[p.action_id]
                p.future.set_exception(AMIConnectionError(
                    f"{p.name}: connection lost before the reply ({reason})"))
            elif p.resend and not self._closing:
                p.conn = None  # re-sent after the next login
                METRICS.inc("ami.action.requeued")
            else:
                del self._pending[p.action_id]
                METRICS.inc("ami.action.not_retried")
                log_event(log, logging.WARNING, "ami.action.not_retried", action=p.name,
                          action_id=p.action_id, reason=str(reason))
                p.future.set_exception(AMIActionNotRetried(
                    f"{p.name} (ActionID {p.action_id}) was in flight when the connection "
                    f"to Asterisk was lost ({reason}); it may or may not have run, so it is "
                    "not re-sent: check the live state / 连接中断，操作可能已执行，未重发"))

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        settings = self.settings
        parser = AMIParser(max_frame=settings.max_frame,
                           max_list_events=settings.max_list_events,
                           max_list_bytes=settings.max_list_bytes)
        limit = settings.connect_timeout
        try:
            async with asyncio.timeout(limit):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, parser), self.host, self.port
                )
        except TimeoutError:
            raise AMIConnectionError(
                f"no TCP connection to Asterisk at {self.host}:{self.port} within {limit:g}s "
                "(host down or a firewall dropping packets) / 连接 AMI 超时") from None
        try:
            async with asyncio.timeout(limit):
                banner = await conn.banner
        except TimeoutError:
            error = AMIConnectionError(
                f"connected to {self.host}:{self.port} but no AMI banner came within "
                f"{limit:g}s (not Asterisk's manager port, or Asterisk is hung) / "
                "已连接但未收到 AMI 欢迎行")
            conn.abort(error)
            raise error from None
        except BaseException:
            conn.abort(AMIConnectionError("no banner"))
            raise
        try:
            await self._login(conn)
        except BaseException as exc:
            conn.abort(exc if isinstance(exc, AMIError) else AMIConnectionError(str(exc)))
            raise
        log_event(log, logging.INFO, "ami.connected", host=self.host, port=self.port,
                  banner=banner.text, user=self.username, auth=self.settings.auth)
        return conn

    async def _login(self, conn: _Connection) -> None:
        timeout = self.settings.login_timeout
        fields: dict[str, FieldValue] = {"Username": self.username}
        if self.settings.auth == "md5":
            reply = await self._request(conn, "Challenge", {"AuthType": "md5"}, timeout)
            challenge = reply.response.get("Challenge") if isinstance(reply, EventList) \
                else reply.get("Challenge")
            if not (isinstance(reply, Response) and reply.success and challenge):
                msg = reply.response.message if isinstance(reply, EventList) else reply.message
                raise AMIAuthError(
                    f"AMI MD5 challenge refused by {self.host}:{self.port}: {msg or 'no reply'}"
                    " / AMI MD5 认证挑战被拒绝"
                )
            key = hashlib.md5((challenge + self._secret).encode("utf-8")).hexdigest()
            fields.update({"AuthType": "md5", "Key": key})
        else:
            fields["Secret"] = self._secret
        fields["Events"] = self.settings.events
        reply = await self._request(conn, "Login", fields, timeout)
        if not (isinstance(reply, Response) and reply.success):
            msg = reply.response.message if isinstance(reply, EventList) else reply.message
            METRICS.inc("ami.login_failed")
            raise AMIAuthError(
                f"AMI login refused for user {self.username!r} at {self.host}:{self.port}: "
                f"{msg or 'no message'} / AMI 登录被拒绝（用户名或密码错误）"
            )

    async def _run(self) -> None:
        assert self._ready is not None and self._connected_event is not None
        attempt = 0
        while not self._closing:
            try:
                conn = await self._open()
            except asyncio.CancelledError:
                raise
            except AMIAuthError as exc:
                log_event(log, logging.ERROR, "ami.login_failed", host=self.host,
                          port=self.port, user=self.username, error=str(exc))
                if not self._ready.done():
                    self._ready.set_exception(exc)
                    return
                await self._backoff(attempt, exc)
                attempt += 1
                continue
            except (OSError, AMIError, TimeoutError) as exc:
                await self._backoff(attempt, exc)
                attempt += 1
                continue
            except Exception as exc:  # a bug must not stop the reconnect loop
                METRICS.inc("ami.client.internal_error")
                log.exception("ami.client.internal_error",
                              extra={"fields": {"host": self.host, "port": self.port}})
                await self._backoff(attempt, exc)
                attempt += 1
                continue
            up_since = self._clock()
            self._conn = conn
            self.connects += 1
            METRICS.inc("ami.connected")
            self._resend_waiting(conn)
            self._connected_event.set()
            loop = asyncio.get_running_loop()
            tasks = [loop.create_task(self._after_login())]
            if self.settings.ping_interval > 0:
                tasks.append(loop.create_task(self._keepalive(conn)))
            try:
                reason = await conn.closed
            finally:
                # The on_connect hook is cancelled if the connection ends while it runs;
                # it runs again, from the start, after the next login.
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                if not conn.closed.done():
                    conn.abort(AMIConnectionError("AMI client stopped"))
            lasted = self._clock() - up_since
            METRICS.inc("ami.disconnected")
            log_event(log, logging.WARNING, "ami.disconnected", host=self.host,
                      port=self.port, reason=str(reason), lasted=round(lasted, 3))
            if self.on_disconnect is not None:
                await self._run_hook("on_disconnect", self.on_disconnect, self, reason)
            # back off on sessions that do not last: a server that takes the login and
            # closes must not get a login (+ on_connect's actions) every `initial` s
            attempt = self.settings.backoff.next_attempt(attempt, lasted)
            if not self._closing:
                await self._backoff(attempt, reason)
                attempt += 1

    async def _after_login(self) -> None:
        """Run the on_connect hook; the first time, then let start() return."""
        if self.on_connect is not None:
            await self._run_hook("on_connect", self.on_connect, self)
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    async def _backoff(self, attempt: int, exc: BaseException) -> None:
        delay = self.settings.backoff.delay(attempt, self._rng)
        METRICS.inc("ami.reconnect_wait")
        log_event(log, logging.WARNING, "ami.reconnect_wait", host=self.host, port=self.port,
                  error=f"{type(exc).__name__}: {exc or repr(exc)}", attempt=attempt + 1,
                  delay=round(delay, 3))
        await asyncio.sleep(delay)

    def _resend_waiting(self, conn: _Connection) -> None:
        for p in list(self._pending.values()):
            if p.conn is None and not p.future.done():
                p.conn = conn
                conn.write(p.data)
                METRICS.inc("ami.action.resent")
                log_event(log, logging.INFO, "ami.action.resent", action=p.name,
                          action_id=p.action_id)

    async def _keepalive(self, conn: _Connection) -> None:
        interval = self.settings.ping_interval
        while conn.alive:
            await asyncio.sleep(interval)
            try:
                await self._request(conn, "Ping", {}, self.settings.ping_timeout)
            except AMIActionTimeout:
                METRICS.inc("ami.keepalive.dead")
                log_event(log, logging.ERROR, "ami.keepalive.dead", host=self.host,
                          port=self.port, timeout=self.settings.ping_timeout)
                conn.abort(AMIConnectionError(
                    f"no reply to Ping within {self.settings.ping_timeout:g}s: connection to "
                    f"{self.host}:{self.port} declared dead"))
                return
            except AMIConnectionError:
                return

    async def _run_hook(self, name: str, hook: Callable[..., Any], *args: Any) -> None:
        try:
            ret = hook(*args)
            if inspect.isawaitable(ret):
                await ret
        except asyncio.CancelledError:
            raise
        except Exception:
            METRICS.inc(f"ami.{name}_error")
            log.exception(f"ami.{name}_error",
                          extra={"fields": {"host": self.host, "port": self.port}})
