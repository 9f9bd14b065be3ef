"""Hardened FastAGI server: :class:`FastAGIServer`.

Not built on panoramisk 1.4's ``fast_agi.Application``, neither as a subclass nor by
holding one: nothing of it is sound for this role (docs/agi.md, known-pitfalls
panoramisk 2, 3, 9, 10), and what is left once the broken parts are replaced — a route
dict — is not worth a ``dict`` base class whose truthiness and equality then have to be
undone:

* ``Application.__init__`` calls ``asyncio.get_event_loop()``; nothing loop-bound is
  created here.
* ``add_route`` wraps plain functions with ``asyncio.coroutine``, gone in 3.11; here any
  callable is accepted, and routes are keyed by the script path without its query string.
* ``handler`` loops on ``reader.read()`` until ``b"\\n\\n"``: on EOF it spins at 100 % CPU,
  with no size cap and no timeout, and it catches ``BaseException`` (swallowing
  cancellation).  Here the block is read with :class:`ivr.agi.codec.HeaderParser` (size
  cap, fail-fast on non-AGI bytes) under a deadline, and every session is its own task,
  so one peer never blocks another.
* ``Request.send_command`` reads one line per reply and takes Asterisk's unsolicited
  ``HANGUP`` line for a reply; :class:`ivr.agi.channel.AGIChannel` replaces it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ivr.agi.channel import (
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_DEADLINE_MARGIN,
    DEFAULT_HANGUP_GRACE,
    DEFAULT_PROMPT_SECONDS,
    AGIChannel,
)
from ivr.agi.codec import MAX_HEADER_BLOCK, AGIEnvironment, HeaderParser
from ivr.agi.errors import AGIConnectionClosed, AGIHangup, AGIHeaderError
from ivr.log import event
from ivr.metrics import METRICS
from ivr.privacy import mask_number

log = logging.getLogger(__name__)

Handler = Callable[[AGIChannel], Awaitable[None] | None]

_READ_SIZE = 4096
# Under a flood every refused or shed connection would log a line: at most this many
# lines per kind of drop per window; the next line after a window says how many were
# left out (the counters in METRICS count every one).
LOG_BURST = 20
LOG_WINDOW = 10.0


class _LogBudget:
    """How many lines of one kind may still be logged in the current window."""

    def __init__(self, burst: int = LOG_BURST, window: float = LOG_WINDOW) -> None:
        self.burst = burst
        self.window = window
        self._windows: dict[str, tuple[float, int, int]] = {}  # key -> (start, logged, left out)

    def take(self, key: str, now: float) -> int | None:
        """None: leave this line out; else log it, with this many left out before it."""
        start, logged, skipped = self._windows.get(key, (now, 0, 0))
        if now - start >= self.window:
            start, logged = now, 0
        if logged >= self.burst:
            self._windows[key] = (start, logged, skipped + 1)
            return None
        self._windows[key] = (start, logged + 1, 0)
        return skipped


class _Dropped(Exception):
    """Internal: the session is dropped before a handler runs."""

    def __init__(self, reason: str, detail: str, level: int = logging.WARNING) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.level = level


@dataclass(eq=False)
class _Slot:
    """One open connection, as the admission policy sees it."""

    peer: str  # the peer's address (no port)
    opened: float  # loop time
    transport: asyncio.WriteTransport
    channel: AGIChannel | None = None  # once the header is read
    shed: bool = False

    def stalled_since(self, now: float, stall_after: float) -> float | None:
        """When this session started owing something a real Asterisk sends at once (its
        header block, the reply to a command that does not wait for the caller), if it
        has owed it longer than ``stall_after`` s; else None."""
        if self.channel is None:
            since = self.opened
        elif self.channel.waiting is not None and not self.channel.waiting[1]:
            since = self.channel.waiting[0]
        else:
            return None
        return since if now - since > stall_after else None

    def idle_since(self) -> float:
        """Since when the peer has owed us something (else since the connection)."""
        if self.channel is not None and self.channel.waiting is not None:
            return self.channel.waiting[0]
        return self.opened


class FastAGIServer:
    """``add_route("ivr", handler)`` then ``await start(host, port)``; ``await close()``.

    ``handler(channel)`` may be ``async def`` or a plain function (returning ``None`` or
    an awaitable).  A handler ending with :class:`AGIHangup` ends quietly; any other
    exception is logged with the channel and counted, and the server keeps serving.

    Capacity (docs/agi.md "Capacity"): at most ``max_sessions`` sessions, at most
    ``max_sessions_per_peer`` from one address.  A connection over a limit first sheds a
    *stalled* session (one that has owed its header block or the reply to a command that
    does not wait for the caller for more than ``stall_after`` s — a real Asterisk sends
    both at once); over the global limit with none stalled, it sheds the longest-idle
    session of the address holding the most sessions, if that address holds more than
    the newcomer's; otherwise the newcomer is refused.
    """

    def __init__(
        self,
        *,
        header_timeout: float = 10.0,
        max_header_bytes: int = MAX_HEADER_BLOCK,
        command_timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        prompt_seconds: float = DEFAULT_PROMPT_SECONDS,
        deadline_margin: float = DEFAULT_DEADLINE_MARGIN,
        hangup_grace: float = DEFAULT_HANGUP_GRACE,
        max_sessions: int = 2000,
        max_sessions_per_peer: int = 1000,
        stall_after: float = 2.0,
        close_grace: float = 5.0,
    ) -> None:
        if max_sessions < 1 or max_sessions_per_peer < 1:
            raise ValueError(
                f"max_sessions ({max_sessions}) and max_sessions_per_peer "
                f"({max_sessions_per_peer}) must be >= 1")
        self._route: dict[str, Handler] = {}
        self.header_timeout = header_timeout
        self.max_header_bytes = max_header_bytes
        self.command_timeout = command_timeout
        self.prompt_seconds = prompt_seconds
        self.deadline_margin = deadline_margin
        self.hangup_grace = hangup_grace
        self.max_sessions = max_sessions
        self.max_sessions_per_peer = max_sessions_per_peer
        self.stall_after = stall_after
        self.close_grace = close_grace
        self._peers: dict[str, set[_Slot]] = {}  # live (admitted, not shed) sessions
        self._live = 0
        self._log_budget = _LogBudget()
        self.port: int | None = None
        self._server: asyncio.Server | None = None
        # start_server's callback task -> the task running the session in it
        self._sessions: dict[asyncio.Task[Any], asyncio.Task[None]] = {}

    def __repr__(self) -> str:
        return f"<FastAGIServer routes={list(self._route)} port={self.port}>"

    @property
    def sessions(self) -> int:
        """Sessions currently open."""
        return len(self._sessions)

    def add_route(self, path: str, handler: Handler) -> None:
        if not callable(handler):
            raise TypeError(f"AGI route handler for {path!r} is not callable: {handler!r}")
        key = _route_key(path)
        if not key:
            raise ValueError(f"empty AGI route path {path!r}")
        if key in self._route:
            raise ValueError(f"an AGI route for {key!r} already exists")
        self._route[key] = handler

    def del_route(self, path: str) -> None:
        """Remove the route for ``path`` (query string ignored, as in :meth:`add_route`)."""
        key = _route_key(path)
        if key not in self._route:
            raise ValueError(f"no AGI route for {key!r}")
        del self._route[key]

    async def start(self, host: str = "127.0.0.1", port: int = 4573) -> None:
        if self._server is not None:
            raise RuntimeError("FastAGI server already started")
        self._server = await asyncio.start_server(self.handler, host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        event(log, logging.INFO, "agi.server.listening", host=host, port=self.port)

    async def close(self, grace: float | None = None) -> None:
        """Stop accepting, wait up to ``grace`` s for sessions to end, cancel the rest."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        wait = self.close_grace if grace is None else grace
        sessions = dict(self._sessions)
        if sessions:
            _, pending = await asyncio.wait(sessions, timeout=wait)
            for outer in pending:
                sessions[outer].cancel()
            if pending:
                METRICS.inc("agi.sessions.cancelled_at_close", len(pending))
                await asyncio.wait(pending)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> FastAGIServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One FastAGI session (the ``asyncio.start_server`` callback)."""
        METRICS.inc("agi.sessions.accepted")
        host, peer = _peer(writer)
        slot = _Slot(host, asyncio.get_running_loop().time(), writer.transport)
        refused = self._admit(slot)
        if refused is not None:
            reason, detail = refused
            METRICS.inc("agi.sessions.dropped")
            METRICS.inc(f"agi.sessions.dropped.{reason}")
            self._log_drop(logging.WARNING, reason, detail, {"peer": peer})
            await _close_writer(writer)
            return
        outer = asyncio.current_task()
        inner = asyncio.create_task(self._session(reader, writer, slot, peer))
        if outer is not None:
            self._sessions[outer] = inner
        try:
            await inner
        except asyncio.CancelledError:
            if outer is None or outer.cancelling() or not inner.cancelled():
                raise  # this task itself is being cancelled: propagate
            # Only the session was cancelled (close()); it already logged that.  End the
            # callback task normally: CPython 3.11's start_server callback calls
            # task.exception() on it and would log a spurious "Exception in callback".
        finally:
            if outer is not None:
                self._sessions.pop(outer, None)
            self._release(slot)
            await _close_writer(writer)

    # -- capacity ---------------------------------------------------------------------

    def _admit(self, slot: _Slot) -> tuple[str, str] | None:
        """Make room for ``slot`` (shedding a session if the policy allows) and count it;
        or return (reason, detail) to refuse it."""
        now = slot.opened
        own = self._peers.get(slot.peer, set())
        if len(own) >= self.max_sessions_per_peer:
            victim = self._stalled(own, now)
            if victim is None:
                return ("over_peer_capacity",
                        f"{len(own)} sessions open from {slot.peer} "
                        f"(max_sessions_per_peer {self.max_sessions_per_peer}), none stalled")
            self._shed(victim, now, "peer_capacity")
        elif self._live >= self.max_sessions:
            victim = self._stalled((s for group in self._peers.values() for s in group), now)
            if victim is None:
                peer, biggest = max(self._peers.items(), key=lambda kv: len(kv[1]),
                                    default=("", set()))
                if peer != slot.peer and len(biggest) > len(own) + 1:
                    victim = min(biggest, key=_Slot.idle_since)
            if victim is None:
                return ("over_capacity",
                        f"{self._live} sessions open (max_sessions {self.max_sessions}), "
                        f"{len(own)} from {slot.peer}, none stalled, no address holds more")
            self._shed(victim, now, "capacity")
        self._peers.setdefault(slot.peer, set()).add(slot)
        self._live += 1
        return None

    def _stalled(self, slots: Iterable[_Slot], now: float) -> _Slot | None:
        best: _Slot | None = None
        best_since = now
        for s in slots:
            since = s.stalled_since(now, self.stall_after)
            if since is not None and since < best_since:
                best, best_since = s, since
        return best

    def _shed(self, victim: _Slot, now: float, why: str) -> None:
        """End ``victim`` to make room: its socket is aborted, so its session ends the
        normal way (its handler sees the connection closed)."""
        self._release(victim)
        victim.shed = True
        METRICS.inc("agi.sessions.shed")
        fields: dict[str, Any] = {"peer": victim.peer, "why": why,
                                  "idle": round(now - victim.idle_since(), 3)}
        if victim.channel is not None:
            fields.update(channel=victim.channel.env.channel,
                          caller=mask_number(victim.channel.env.callerid),
                          waiting_for_caller=bool(victim.channel.waiting
                                                  and victim.channel.waiting[1]))
        else:
            fields["phase"] = "header"
        skipped = self._log_budget.take("shed", now)
        if skipped is not None:
            event(log, logging.WARNING, "agi.session.shed", **fields,
                  **({"left_out": skipped} if skipped else {}))
        victim.transport.abort()

    def _release(self, slot: _Slot) -> None:
        if slot.shed:
            return
        group = self._peers.get(slot.peer)
        if group is None or slot not in group:
            return
        group.discard(slot)
        if not group:
            del self._peers[slot.peer]
        self._live -= 1

    def _log_drop(self, level: int, reason: str, detail: str, fields: dict[str, Any]) -> None:
        skipped = self._log_budget.take(reason, asyncio.get_running_loop().time())
        if skipped is None:
            return
        extra = {"left_out": skipped} if skipped else {}
        event(log, level, "agi.session.dropped", reason=reason, detail=detail, **fields,
              **extra)

    def peer_sessions(self, peer: str) -> int:
        """Sessions counted against address ``peer``."""
        return len(self._peers.get(peer, ()))

    # -- one session ------------------------------------------------------------------

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       slot: _Slot, peer: str) -> None:
        fields: dict[str, Any] = {"peer": peer}
        try:
            await self._serve(reader, writer, fields, slot)
        except asyncio.CancelledError:  # close() (or the loop) ended it: log, count, propagate
            METRICS.inc("agi.sessions.cancelled")
            event(log, logging.WARNING, "agi.session.cancelled", **fields)
            raise

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        fields: dict[str, Any], slot: _Slot,
    ) -> None:
        try:
            env, leftover = await self._read_header(reader)
            route = self._route.get(env.script_path)
            if route is None:
                raise _Dropped(
                    "no_route",
                    f"no AGI route for {env.script_path!r} "
                    f"(script {env.network_script!r}, channel {env.channel!r}, "
                    f"caller {mask_number(env.callerid)})",
                )
        except _Dropped as drop:
            METRICS.inc("agi.sessions.dropped")
            METRICS.inc(f"agi.sessions.dropped.{drop.reason}")
            self._log_drop(drop.level, drop.reason, drop.detail, fields)
            return
        channel = AGIChannel(
            env, reader, writer, leftover=leftover,
            default_timeout=self.command_timeout, hangup_grace=self.hangup_grace,
            prompt_seconds=self.prompt_seconds, deadline_margin=self.deadline_margin,
        )
        slot.channel = channel
        fields.update(
            script=env.script_path,
            channel=env.channel,
            uniqueid=env.uniqueid,
            caller=mask_number(env.callerid),
        )
        event(log, logging.INFO, "agi.session.start", **fields)
        if env.issues:
            METRICS.inc("agi.header.issues")
            event(log, logging.WARNING, "agi.header.issues", **fields, issues=list(env.issues))
        try:
            result = route(channel)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            fields["commands"] = channel.commands_sent
            raise
        except AGIHangup as exc:
            METRICS.inc("agi.sessions.hangup")
            event(log, logging.INFO, "agi.session.hangup", **fields,
                  commands=channel.commands_sent, closed=isinstance(exc, AGIConnectionClosed))
        except Exception as exc:  # a handler bug never kills the server (never BaseException)
            METRICS.inc("agi.sessions.failed")
            log.error(
                "agi.session.failed",
                exc_info=True,
                extra={"fields": {**fields, "error": f"{type(exc).__name__}: {exc}",
                                  "commands": channel.commands_sent}},
            )
        else:
            METRICS.inc("agi.sessions.completed")
            event(log, logging.INFO, "agi.session.end", **fields,
                  commands=channel.commands_sent, hung_up=channel.hung_up)

    async def _read_header(self, reader: asyncio.StreamReader) -> tuple[AGIEnvironment, bytes]:
        parser = HeaderParser(self.max_header_bytes)
        received = 0
        try:
            async with asyncio.timeout(self.header_timeout):
                while True:
                    data = await reader.read(_READ_SIZE)
                    if not data:
                        level = logging.INFO if received == 0 else logging.WARNING
                        try:
                            parser.feed_eof()
                        except AGIHeaderError as exc:
                            raise _Dropped("eof", str(exc), level) from None
                    received += len(data)
                    env = parser.feed(data)
                    if env is not None:
                        return env, parser.leftover
        except TimeoutError:
            raise _Dropped(
                "header_timeout",
                f"AGI header block not complete after {self.header_timeout} s "
                f"({received} bytes)",
            ) from None
        except AGIHeaderError as exc:
            raise _Dropped("bad_header", str(exc)) from None
        except (ConnectionError, OSError) as exc:
            raise _Dropped("connection_error", f"{type(exc).__name__}: {exc}") from None


def _route_key(path: str) -> str:
    return path.partition("?")[0].strip("/")


def _peer(writer: asyncio.StreamWriter) -> tuple[str, str]:
    """(the peer's address, address:port for logs)."""
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), f"{peer[0]}:{peer[1]}"
    return str(peer), str(peer)


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(2.0):
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()
    except (ConnectionError, OSError):
        pass


__all__ = ["FastAGIServer", "Handler"]
