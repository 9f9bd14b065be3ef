"""The AMI server: TCP sessions, login (plain and MD5 challenge), per-session event
masks, dispatch to :mod:`ivr.sim.actions`.  Framing is :class:`ivr.ami.codec.AMIParser`
(server side, no banner).  A client sending garbage, oversized frames or vanishing
mid-action affects only its own session."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ivr.ami.codec import AMIParser
from ivr.ami.errors import AMIProtocolError
from ivr.ami.messages import Action, ProtocolIssue
from ivr.log import event as log_event
from ivr.metrics import METRICS
from ivr.sim.eventfilter import EventFilter, FilterSet
from ivr.sim.events import EventBus
from ivr.sim.model import clean

log = logging.getLogger("ivr.sim.ami")

BANNER = b"Asterisk Call Manager/9.0.0\r\n"
AUTH_TIMEOUT_S = 30  # manager.conf [general] authtimeout: seconds to log in (manager.c)
AUTH_LIMIT = 50  # manager.conf [general] authlimit: sessions not logged in at once
MAX_FRAME = 64 * 1024
MAX_OUTPUT_BUFFER = 32 * 1024 * 1024  # a client that stops reading is dropped past this

ALL_CLASSES = ("system", "call", "log", "verbose", "command", "agent", "user", "config",
               "dtmf", "reporting", "cdr", "dialplan", "originate", "agi", "cc", "aoc",
               "test", "security", "message")


@dataclass
class User:
    name: str
    secret: str
    read: set[str] = field(default_factory=lambda: set(ALL_CLASSES))
    write: set[str] = field(default_factory=lambda: set(ALL_CLASSES))
    # manager.conf ``eventfilter`` lines, copied into each session at login
    filters: list[EventFilter] = field(default_factory=list)


class Session:
    def __init__(self, server: AmiServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.user: User | None = None
        self.events_on = True
        self.mask: set[str] = set(ALL_CLASSES)
        self.filters = FilterSet()  # eventfilter lines of the user + Filter actions
        self.filtered = 0  # events the filters kept from this session
        self.challenge: str | None = None
        self.closed = False
        self.id = f"0x{id(self):x}"
        peer = writer.get_extra_info("peername") or ("127.0.0.1", 0)
        sock = writer.get_extra_info("sockname") or ("127.0.0.1", 0)
        self.remote = f"IPV4/TCP/{peer[0]}/{peer[1]}"
        self.local = f"IPV4/TCP/{sock[0]}/{sock[1]}"
        self.started = server.bus.wall()
        self.counted_unauth = False  # one of the server's sessions not logged in
        self.holding: list[bytes] | None = None  # events raised before the response
        self._out = bytearray()

    # -- Subscriber -------------------------------------------------------------------

    def wants(self, category: str) -> bool:
        return self.events_on and category in self.mask

    def send(self, data: bytes) -> None:
        if self.filters and not self.filters.allows(data):
            self.filtered += 1
            return
        if self.holding is not None:
            self.holding.append(data)
            return
        if self.closed:  # _write, inlined: this runs for every event
            return
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out += data

    def release(self) -> None:
        """Events an action raised go out after its response, as Asterisk sends them."""
        held, self.holding = self.holding, None
        for data in held or ():
            self._write(data)

    def _write(self, data: bytes) -> None:
        """Queue bytes; one transport write per loop iteration (events come in bursts)."""
        if self.closed:
            return
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out += data

    def _flush(self) -> None:
        if self.closed or not self._out:
            self._out.clear()
            return
        transport = self.writer.transport
        if transport.is_closing():
            self._out.clear()
            self.close()
            return
        if transport.get_write_buffer_size() > MAX_OUTPUT_BUFFER:
            METRICS.inc("sim.ami_slow_client_dropped")
            log_event(log, logging.WARNING, "sim.ami_slow_client", session=self.id)
            self._out.clear()
            self.close()
            return
        self.writer.write(bytes(self._out))
        self._out.clear()

    # -- replies ----------------------------------------------------------------------

    def respond(self, msg: Action, status: str, pairs: Iterable[tuple[str, str]] = ()) -> None:
        aid = msg.action_id
        head = f"Response: {status}\r\n" + (f"ActionID: {clean(aid)}\r\n" if aid else "")
        self._write((head + "".join(f"{k}: {clean(v)}\r\n" for k, v in pairs)
                     + "\r\n").encode())
        self.release()

    def ok(self, msg: Action, message: str | None = None) -> None:
        self.respond(msg, "Success", [("Message", message)] if message is not None else [])

    def error(self, msg: Action, message: str) -> None:
        self.respond(msg, "Error", [("Message", message)])

    def event_frame(self, data: bytes) -> None:
        """An event for this session only, past its filters (as ``astman_append``)."""
        self._write(data)

    def event(self, name: str, body: str) -> None:
        """A list event for this session only (no Privilege header)."""
        self._write(f"Event: {name}\r\n{body}\r\n".encode())

    def close(self) -> None:
        if not self.closed:
            if self._out and not self.writer.transport.is_closing():
                self.writer.write(bytes(self._out))
                self._out.clear()
            self.closed = True
            self.server.drop(self)
            self.writer.close()

    def authenticated(self) -> None:
        """Logged in: no longer counts against ``authlimit``, no more ``authtimeout``."""
        self.server.uncount(self)


class AmiServer:
    def __init__(self, bus: EventBus, users: dict[str, User],
                 dispatch: Callable[[Session, Action], object], *,
                 auth_timeout: float = AUTH_TIMEOUT_S, auth_limit: int = AUTH_LIMIT) -> None:
        self.bus = bus
        self.auth_timeout = auth_timeout
        self.auth_limit = auth_limit
        self.unauth = 0  # sessions connected and not logged in
        self.users = users
        self.dispatch = dispatch
        self.sessions: set[Session] = set()
        self._server: asyncio.Server | None = None
        self.port = 0
        self.on_login: list[Callable[[Session], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await asyncio.start_server(self._client, host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for s in list(self.sessions):
            s.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        if self._server is not None:
            await self._server.wait_closed()

    def uncount(self, s: Session) -> None:
        if s.counted_unauth:
            s.counted_unauth = False
            self.unauth -= 1

    def drop(self, s: Session) -> None:
        self.uncount(s)
        self.sessions.discard(s)
        if s in self.bus.subscribers:
            self.bus.subscribers.remove(s)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.unauth >= self.auth_limit:
            # manager.c session_do: over authlimit, the connection is closed at once,
            # before the banner
            METRICS.inc("sim.ami_auth_limit")
            log_event(log, logging.WARNING, "sim.ami_auth_limit", limit=self.auth_limit)
            writer.close()
            return
        s = Session(self, reader, writer)
        self.sessions.add(s)
        s.counted_unauth = True
        self.unauth += 1
        # manager.c get_input/do_message: not logged in within authtimeout seconds of
        # connecting, the session is closed (silently: no response is written)
        expire = asyncio.get_running_loop().call_later(
            self.auth_timeout, self._auth_expired, s)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        parser = AMIParser(expect_banner=False, group_lists=False, max_frame=MAX_FRAME)
        writer.write(BANNER)
        try:
            while not s.closed:
                data = await reader.read(65536)
                if not data:
                    break
                try:
                    items = parser.feed(data)
                except AMIProtocolError as exc:
                    METRICS.inc("sim.ami_protocol_error")
                    log_event(log, logging.WARNING, "sim.ami_protocol_error", error=str(exc))
                    break
                for item in items:
                    if self._gone(s):
                        break
                    msg: object = item
                    if isinstance(item, ProtocolIssue):
                        METRICS.inc("sim.ami_protocol_issue")
                        log_event(log, logging.WARNING, "sim.ami_protocol_issue",
                                  session=s.id, reason=item.reason)
                        if item.message is None:
                            continue
                        msg = item.message
                    if not isinstance(msg, Action):
                        s.respond(Action({}), "Error", [("Message", "Missing action in request")])
                        continue
                    await self._handle(s, msg)
                if not self._gone(s):
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            expire.cancel()
            s.close()

    def _auth_expired(self, s: Session) -> None:
        if s.user is None and not s.closed:
            METRICS.inc("sim.ami_auth_timeout")
            log_event(log, logging.INFO, "sim.ami_auth_timeout", session=s.id,
                      seconds=self.auth_timeout)
            s.close()

    @staticmethod
    def _gone(s: Session) -> bool:
        return s.closed

    async def _handle(self, s: Session, msg: Action) -> None:
        name = msg.name.lower()
        if s.user is None and name not in ("login", "challenge", "logoff"):
            s.error(msg, "Permission denied")
            return
        if name == "challenge":
            if (msg.get("AuthType") or "").lower() != "md5":
                s.error(msg, "Must specify AuthType")
                return
            s.challenge = str(secrets.randbelow(10**9))
            s.respond(msg, "Success", [("Challenge", s.challenge)])
            return
        if name == "login":
            self._login(s, msg)
            return
        s.holding = []
        try:
            result = self.dispatch(s, msg)
            if asyncio.iscoroutine(result):
                await result
        except Exception as exc:  # one action must never take the server down
            METRICS.inc("sim.ami_action_failed")
            log_event(log, logging.ERROR, "sim.ami_action_failed", action=msg.name,
                      error=repr(exc))
            if not s.closed:
                s.error(msg, f"Internal error: {exc}")
        finally:
            s.release()

    def _login(self, s: Session, msg: Action) -> None:
        user = self.users.get(msg.get("Username") or "")
        ok = False
        if user is not None:
            if (msg.get("AuthType") or "").lower() == "md5" and s.challenge:
                want = hashlib.md5((s.challenge + user.secret).encode()).hexdigest()
                ok = (msg.get("Key") or "").lower() == want
            else:
                ok = msg.get("Secret") == user.secret
        if not ok or user is None:
            METRICS.inc("sim.ami_login_failed")
            s.error(msg, "Authentication failed")
            s.close()
            return
        s.user = user
        s.authenticated()
        s.mask = set(user.read)
        for f in user.filters:
            s.filters.add(f)
        events = (msg.get("Events") or "on").lower()
        if events == "off":
            s.events_on = False
        elif events not in ("on", "yes", "all"):
            s.mask = {c.strip() for c in events.split(",")} & set(user.read)
        s.ok(msg, "Authentication accepted")
        up = int(self.bus.wall() - self.started_at) if hasattr(self, "started_at") else 0
        # written straight to the session (astman_append), so no filter applies
        s.event_frame(("Event: FullyBooted\r\nPrivilege: system,all\r\n"
                       f"Uptime: {up}\r\nLastReload: {up}\r\n"
                       "Status: Fully Booted\r\n\r\n").encode())
        self.bus.subscribers.append(s)
        for hook in self.on_login:
            hook(s)
