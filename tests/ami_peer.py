"""A small AMI peer for the client tests: it answers with the bytes real Asterisk 20 sent
in tests/data/asterisk-traces (ActionIDs rewritten to the client's), over a real
socket on 127.0.0.1.

It knows what the trace knows: for each action in ``ami.client.raw`` the frames that
carried its ActionID in ``ami.server.raw``.  A test steers it with a ``policy`` (answer,
drop the connection, or stay silent) and can push raw bytes (events) at any time.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from ivr.ami.codec import AMIParser
from ivr.ami.messages import Action, Event, Message

from .conftest import TRACES

SECRET = "ivrsecret"
CHALLENGE = "581726354"
FRAME_END = b"\r\n\r\n"


def split_server_raw(raw: bytes) -> tuple[bytes, list[bytes]]:
    """(banner line with CRLF, raw frames each ending with CRLF CRLF)."""
    nl = raw.index(b"\r\n") + 2
    banner, rest = raw[:nl], raw[nl:]
    frames = [f + FRAME_END for f in rest.split(FRAME_END) if f]
    return banner, frames


def parse_one(frame: bytes) -> Message:
    items = AMIParser(expect_banner=False, group_lists=False).feed(frame)
    assert len(items) == 1, items
    msg = items[0]
    assert isinstance(msg, Message)
    return msg


def client_actions(raw: bytes) -> list[Action]:
    out: list[Action] = []
    for item in AMIParser(expect_banner=False, group_lists=False).feed(raw):
        assert isinstance(item, Action), item
        out.append(item)
    return out


@dataclass
class Entry:
    action: Action
    frames: list[bytes]  # every server frame carrying the action's ActionID, in order


@dataclass
class Library:
    banner: bytes
    entries: list[Entry]
    events: list[bytes]  # server frames with no ActionID of an action (unsolicited events)

    def find(self, action: Action) -> Entry | None:
        name = action.name.lower()
        fields = {k: v for k, v in action.headers.items() if k not in ("ActionID",)}
        same = [e for e in self.entries if e.action.name.lower() == name]
        for e in same:
            if {k: v for k, v in e.action.headers.items() if k != "ActionID"} == fields:
                return e
        # Same action, different arguments: answer like the first one of its kind,
        # but prefer one whose non-credential fields match.
        for e in same:
            if all(e.action.headers.get(k) == v for k, v in fields.items()
                   if k not in ("Secret", "Key", "AuthType", "Events")):
                return e
        return same[0] if same else None


def load_library(*scenarios: str) -> Library:
    banner = b""
    entries: list[Entry] = []
    events: list[bytes] = []
    for name in scenarios:
        d = TRACES / name
        banner, frames = split_server_raw((d / "ami.server.raw").read_bytes())
        actions = client_actions((d / "ami.client.raw").read_bytes())
        by_id = {a.action_id: Entry(a, []) for a in actions}
        for fr in frames:
            msg = parse_one(fr)
            aid = msg.action_id
            if aid is not None and aid in by_id:
                by_id[aid].frames.append(fr)
            elif isinstance(msg, Event):
                events.append(fr)
        entries.extend(by_id.values())
    return Library(banner, entries, events)


def rewrite_id(frame: bytes, new_id: str) -> bytes:
    msg = parse_one(frame)
    old = msg.action_id
    assert old is not None
    return frame.replace(f"ActionID: {old}\r\n".encode(), f"ActionID: {new_id}\r\n".encode())


Policy = Callable[[int, Action], str]
"""(connection number from 0, action) -> "reply" | "drop" (close, no reply) | "ignore"."""


@dataclass
class PeerConn:
    index: int
    writer: asyncio.StreamWriter
    actions: list[Action] = field(default_factory=list)


class AMIPeer:
    def __init__(
        self,
        library: Library | None = None,
        *,
        policy: Policy | None = None,
        banners: list[bytes] | None = None,
    ) -> None:
        self.lib = library or load_library("01-login-and-basics")
        bad = TRACES / "01-login-and-basics" / "ami-badlogin.server.raw"
        _, bad_frames = split_server_raw(bad.read_bytes())
        self.badlogin = bad_frames[0]
        self.policy = policy or (lambda _i, _a: "reply")
        self.banners = banners or []  # per connection; the trace's banner afterwards
        self.conns: list[PeerConn] = []
        self.received: asyncio.Queue[tuple[int, Action]] = asyncio.Queue()
        self.connected: asyncio.Queue[int] = asyncio.Queue()
        self.closed: asyncio.Queue[int] = asyncio.Queue()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> AMIPeer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for c in self.conns:
            c.writer.close()
        await self.server.wait_closed()

    @property
    def last(self) -> PeerConn:
        return self.conns[-1]

    async def push(self, data: bytes, conn: int = -1) -> None:
        w = self.conns[conn].writer
        w.write(data)
        await w.drain()

    def drop(self, conn: int = -1) -> None:
        self.conns[conn].writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pc = PeerConn(len(self.conns), writer)
        self.conns.append(pc)
        banner = self.banners[pc.index] if pc.index < len(self.banners) else self.lib.banner
        parser = AMIParser(expect_banner=False)
        try:
            writer.write(banner)
            self.connected.put_nowait(pc.index)
            if not banner.startswith(b"Asterisk Call Manager/"):
                return
            while data := await reader.read(65536):
                for item in parser.feed(data):
                    if not isinstance(item, Action):
                        continue
                    pc.actions.append(item)
                    self.received.put_nowait((pc.index, item))
                    if not await self._answer(pc, item):
                        return
        except ConnectionError:
            pass
        finally:
            writer.close()
            self.closed.put_nowait(pc.index)

    async def _answer(self, pc: PeerConn, action: Action) -> bool:
        """Answer one action; False to close the connection."""
        decision = self.policy(pc.index, action)
        if decision == "ignore":
            return True
        if decision == "drop":
            return False
        aid = action.action_id or ""
        name = action.name.lower()
        w = pc.writer
        if name == "challenge":
            w.write(f"Response: Success\r\nActionID: {aid}\r\nChallenge: {CHALLENGE}\r\n\r\n"
                    .encode())
            await w.drain()
            return True
        if name == "login":
            if action.get("AuthType", "").lower() == "md5":
                good = action.get("Key") == hashlib.md5((CHALLENGE + SECRET).encode()).hexdigest()
            else:
                good = action.get("Secret") == SECRET
            if not good:  # trace 01 ami-badlogin: Response: Error, then Asterisk closes
                w.write(rewrite_id(self.badlogin, aid))
                await w.drain()
                return False
        entry = self.lib.find(action)
        if entry is None:
            w.write(f"Response: Error\r\nActionID: {aid}\r\n"
                    "Message: Invalid/unknown command\r\n\r\n".encode())
        elif not entry.frames:
            return False  # trace 05 `core stop now`: no reply, the socket just closes
        else:
            w.write(b"".join(rewrite_id(f, aid) for f in entry.frames))
        await w.drain()
        return name != "logoff"

