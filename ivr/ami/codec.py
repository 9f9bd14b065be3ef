"""AMI wire format without I/O.

:class:`AMIParser` takes bytes (``feed``) and returns typed messages; ``feed_eof``
reports what an end of stream leaves behind.  :func:`encode_action` and
:func:`encode_frame` turn actions and frames into bytes.

Framing is done on bytes (a frame ends with ``\\r\\n\\r\\n``) and only whole frames are
decoded, so a UTF-8 character split across TCP reads (a Chinese caller name) is never
lost — unlike panoramisk 1.4, which decodes each read on its own with
``errors='ignore'`` (known-pitfalls, panoramisk #1).  Bytes that are not UTF-8 are
replaced with U+FFFD and reported as a :class:`ProtocolIssue`, never dropped.

The parser either returns messages or raises :class:`AMIProtocolError`; any other
exception is a bug (the hypothesis tests check exactly that).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from ivr.ami.errors import AMIEncodeError, AMIProtocolError
from ivr.ami.messages import (
    Action,
    Banner,
    Event,
    EventList,
    Headers,
    Incoming,
    Message,
    ProtocolIssue,
    Response,
)

BANNER_PREFIX = "Asterisk Call Manager/"
FRAME_END = b"\r\n\r\n"
DEFAULT_MAX_FRAME = 1 << 20  # 1 MiB: far above any real frame (Command output included)
MAX_BANNER = 1024
# A list result (CoreShowChannels, QueueStatus…) held until its EventList: Complete: a busy
# Asterisk's 2,000 channels are ~2,000 events / 1.6 MB; 200 queues x 50 members ~10,000
# events / 5 MB.  Over either cap the list is given up (docs/ami.md "Codec").
DEFAULT_MAX_LIST_EVENTS = 50_000
DEFAULT_MAX_LIST_BYTES = 16 << 20  # all lists held at once, in characters of their frames
_MAX_DISCARDED_LISTS = 1024  # ActionIDs whose remaining list events are dropped

_KIND = {"Event": Event, "Response": Response, "Action": Action}


def _parse_frame(text: str) -> tuple[Headers, list[str]]:
    """Headers of one frame (in order, repeats as lists) and any lines with no colon."""
    headers: Headers = {}
    junk: list[str] = []
    for line in text.split("\r\n"):
        key, sep, value = line.partition(": ")
        if not sep:
            key, sep, value = line.partition(":")
            if not sep:
                if line:
                    junk.append(line)
                continue
        old = headers.get(key)
        if old is None:
            headers[key] = value
        elif isinstance(old, list):
            old.append(value)
        else:
            headers[key] = [old, value]
    return headers, junk


class AMIParser:
    """Incremental AMI parser for one direction of one connection.

    ``expect_banner`` is true on the client side (Asterisk speaks first).  With
    ``group_lists`` a response carrying ``EventList: start`` is held back together with
    the events that share its ActionID until the ``EventList: Complete`` event, and the
    whole result comes out as one :class:`EventList`.
    """

    def __init__(
        self,
        *,
        expect_banner: bool = True,
        group_lists: bool = True,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_list_events: int = DEFAULT_MAX_LIST_EVENTS,
        max_list_bytes: int = DEFAULT_MAX_LIST_BYTES,
    ) -> None:
        self._max_list_events = max_list_events
        self._max_list_bytes = max_list_bytes
        self._list_bytes = 0  # held by all open lists
        # ActionID -> events dropped so far, for lists given up (over a cap, or abandoned
        # by the client after its action timed out) until their Complete event
        self._discard: dict[str, int] = {}
        self._buf = bytearray()
        self._scan = 0  # where to resume looking for FRAME_END
        self._need_banner = expect_banner
        self._group = group_lists
        self._max_frame = max_frame
        self._discarding = False
        self._lists: dict[str, EventList] = {}
        self.banner: Banner | None = None
        self.closed = False

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the end of a frame."""
        return len(self._buf)

    @property
    def held_list_bytes(self) -> int:
        """Characters of the frames held by list results not yet complete."""
        return self._list_bytes

    def abandon(self, action_id: str) -> None:
        """Nobody waits for the list result of ``action_id`` any more (its action timed
        out): if that list has started, drop what is held of it, and drop its events
        until its Complete event instead of holding or passing them on.  (A list not
        started yet is left alone: the ActionID may be that of an action whose later
        events, such as ``OriginateResponse``, are dispatched like any event.)"""
        pending = self._lists.pop(action_id, None)
        if pending is None:
            return
        self._list_bytes -= pending.size
        self._discard_list(action_id, len(pending.events))

    def _discard_list(self, action_id: str, dropped: int) -> None:
        if action_id not in self._discard and len(self._discard) >= _MAX_DISCARDED_LISTS:
            del self._discard[next(iter(self._discard))]  # the oldest: bounded memory
        self._discard[action_id] = self._discard.get(action_id, 0) + dropped

    def feed(self, data: bytes) -> list[Incoming]:
        if self.closed:
            raise AMIProtocolError("data after end of stream")
        buf = self._buf
        buf += data
        out: list[Incoming] = []
        if self._need_banner and not self._take_banner(out):
            return out
        if self._discarding and not self._skip_oversized(out):
            return out
        end = buf.rfind(FRAME_END, self._scan)
        if end < 0:
            if len(buf) > self._max_frame:
                self._start_discard(out)
            else:
                self._scan = max(0, len(buf) - 3)
            return out
        chunk = bytes(buf[:end])
        del buf[: end + 4]
        self._scan = 0
        self._decode_frames(chunk, out)
        if len(buf) > self._max_frame:
            self._start_discard(out)
        return out

    def feed_eof(self) -> list[Incoming]:
        """End of stream: report a frame cut short and list results never completed."""
        out: list[Incoming] = []
        if self.closed:
            return out
        self.closed = True
        rest = bytes(self._buf).strip(b"\r\n")
        self._buf.clear()
        if rest and not self._discarding:
            if self._need_banner:
                out.append(ProtocolIssue("connection closed before the banner", _text(rest)))
            else:
                out.append(ProtocolIssue("connection closed in the middle of a frame", _text(rest)))
        for pending in self._lists.values():
            out.append(pending)
        self._lists.clear()
        self._list_bytes = 0
        self._discard.clear()
        return out

    # -- internals -------------------------------------------------------------

    def _take_banner(self, out: list[Incoming]) -> bool:
        buf = self._buf
        nl = buf.find(b"\r\n")
        if nl < 0:
            if len(buf) > MAX_BANNER:
                raise AMIProtocolError(
                    f"no AMI banner in the first {MAX_BANNER} bytes: {_text(bytes(buf[:80]))!r}"
                )
            if buf and not BANNER_PREFIX.encode().startswith(bytes(buf[: len(BANNER_PREFIX)])):
                raise AMIProtocolError(f"not an Asterisk AMI banner: {_text(bytes(buf[:80]))!r}")
            return False
        line = _text(bytes(buf[:nl]))
        if not line.startswith(BANNER_PREFIX):
            raise AMIProtocolError(f"not an Asterisk AMI banner: {line[:80]!r}")
        del buf[: nl + 2]
        self._need_banner = False
        self.banner = Banner(line)
        out.append(self.banner)
        return True

    def _start_discard(self, out: list[Incoming]) -> None:
        head = _text(bytes(self._buf[:200]))
        out.append(
            ProtocolIssue(f"frame larger than {self._max_frame} bytes discarded", head)
        )
        self._discarding = True
        self._skip_oversized(out)

    def _skip_oversized(self, out: list[Incoming]) -> bool:
        """Drop bytes up to the end of the oversized frame; True once past it."""
        buf = self._buf
        end = buf.find(FRAME_END)
        if end < 0:
            del buf[: max(0, len(buf) - 3)]
            return False
        del buf[: end + 4]
        self._discarding = False
        self._scan = 0
        if buf:
            rest = bytes(buf)
            buf.clear()
            out.extend(self.feed(rest))
        return True

    def _list_event(self, aid: str, msg: Event, size: int, out: list[Incoming]) -> None:
        """An event of a list result being collected under ActionID ``aid``."""
        pending = self._lists[aid]
        marker = msg.headers.get("EventList")
        if isinstance(marker, str) and marker.lower() == "complete":
            pending.complete = msg
            del self._lists[aid]
            self._list_bytes -= pending.size
            out.append(pending)
            return
        pending.events.append(msg)
        pending.size += size
        self._list_bytes += size
        over = None
        if len(pending.events) > self._max_list_events:
            over = f"more than {self._max_list_events} events"
        elif self._list_bytes > self._max_list_bytes:
            over = (f"list results held over {self._max_list_bytes} bytes "
                    f"({pending.size} in this one, {len(pending.events)} events)")
        if over is not None:
            del self._lists[aid]
            self._list_bytes -= pending.size
            self._discard_list(aid, len(pending.events))
            out.append(EventList(pending.response, [], None, overflow=over))

    def _discarded_event(self, aid: str, msg: Event, out: list[Incoming]) -> None:
        """An event of a list given up: dropped; its Complete event ends the discarding."""
        marker = msg.headers.get("EventList")
        if isinstance(marker, str) and marker.lower() == "complete":
            dropped = self._discard.pop(aid)
            out.append(ProtocolIssue(
                f"list result {aid} ended; {dropped} of its events were discarded "
                "(over the list caps, or its action timed out)", f"ActionID: {aid}"))
        else:
            self._discard[aid] += 1

    def _decode_frames(self, chunk: bytes, out: list[Incoming]) -> None:
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError:
            # Find the guilty frames so the issue names them; replace, never drop.
            for raw in chunk.split(FRAME_END):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    out.append(
                        ProtocolIssue(
                            f"invalid UTF-8 at byte {exc.start} of a frame, replaced with U+FFFD",
                            raw.decode("utf-8", "replace")[:200],
                        )
                    )
            text = chunk.decode("utf-8", "replace")
        group = self._group
        lists = self._lists
        discard = self._discard
        max_frame = self._max_frame
        big = max_frame // 4  # a str of n chars is at most 4n bytes of UTF-8
        kinds = _KIND
        for frame in text.split("\r\n\r\n"):
            if len(frame) > big and len(frame.encode("utf-8")) > max_frame:
                out.append(
                    ProtocolIssue(f"frame larger than {max_frame} bytes discarded", frame[:200])
                )
                continue
            # Fast path (almost every frame): each line is "Name: value", no name repeats.
            # Anything else (a repeated Output/Variable, a line without ": ", blank lines)
            # takes the general path below.  Same result either way.
            headers: Headers = {}
            lines = frame.split("\r\n")
            try:
                for line in lines:
                    key, value = line.split(": ", 1)
                    headers[key] = value
                fast = len(headers) == len(lines)
            except ValueError:
                fast = False
            if fast:
                cls = kinds.get(next(iter(headers)))
                if cls is Event:
                    if group and (lists or discard):
                        aid = headers.get("ActionID")
                        if isinstance(aid, str):
                            if aid in lists:
                                self._list_event(aid, Event(headers), len(frame) + 4, out)
                                continue
                            if aid in discard:
                                self._discarded_event(aid, Event(headers), out)
                                continue
                    out.append(Event(headers))
                    continue
                if cls is Response and not (group and "EventList" in headers):
                    out.append(Response(headers))
                    continue
            headers, junk = _parse_frame(frame)
            if not headers:
                if junk:
                    out.append(ProtocolIssue("frame with no headers", frame[:200]))
                continue
            first = next(iter(headers))
            cls = _KIND.get(first)
            if cls is None:
                for key, klass in _KIND.items():
                    if key in headers:
                        cls = klass
                        break
                else:
                    out.append(
                        ProtocolIssue("frame is neither an event, a response nor an action",
                                      frame[:200])
                    )
                    continue
            msg: Message = cls(headers)
            if junk:
                out.append(ProtocolIssue(f"{len(junk)} line(s) without a colon", frame[:200], msg))
            if group:
                if isinstance(msg, Event):
                    aid = headers.get("ActionID")
                    if isinstance(aid, str):
                        if aid in lists:
                            self._list_event(aid, msg, len(frame) + 4, out)
                            continue
                        if aid in discard:
                            self._discarded_event(aid, msg, out)
                            continue
                elif cls is Response:
                    marker = headers.get("EventList")
                    aid = headers.get("ActionID")
                    if (
                        isinstance(marker, str)
                        and marker.lower() == "start"
                        and isinstance(aid, str)
                    ):
                        lists[aid] = EventList(msg, [], None)  # type: ignore[arg-type]
                        continue
            out.append(msg)  # type: ignore[arg-type]


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


_NAME_RE = re.compile(r"[A-Za-z0-9_()\-.]+\Z")

FieldValue = str | int | Sequence[str]


def _check_value(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise AMIEncodeError(
            f"AMI header {name!r}: value contains a line break, which would end the "
            f"header early: {value[:60]!r}"
        )
    return value


def encode_frame(pairs: Iterable[tuple[str, str]]) -> bytes:
    """Encode (name, value) pairs as one frame. Names and values are checked so that no
    value can end the frame or add a header."""
    parts: list[str] = []
    for name, value in pairs:
        if not _NAME_RE.match(name):
            raise AMIEncodeError(f"invalid AMI header name {name!r}")
        parts.append(f"{name}: {_check_value(name, value)}\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("utf-8")


def action_pairs(
    action: str, fields: Mapping[str, FieldValue], action_id: str | None = None
) -> list[tuple[str, str]]:
    """(name, value) pairs of an action; a sequence value repeats its header."""
    pairs: list[tuple[str, str]] = [("Action", action)]
    if action_id is not None:
        pairs.append(("ActionID", action_id))
    for name, value in fields.items():
        if name.lower() in ("action", "actionid"):
            raise AMIEncodeError(f"{name!r} is set by the client, not in the fields")
        if isinstance(value, str):
            pairs.append((name, value))
        elif isinstance(value, int):
            pairs.append((name, str(value)))
        else:
            pairs.extend((name, str(v)) for v in value)
    return pairs


def encode_action(
    action: str, fields: Mapping[str, FieldValue] | None = None, action_id: str | None = None
) -> bytes:
    """Bytes for ``Action: action`` with ``fields`` and ``ActionID``."""
    return encode_frame(action_pairs(action, fields or {}, action_id))


def encode_message(msg: Message) -> bytes:
    """Bytes of a parsed message (round trip: ``parse(encode(m)) == m``)."""
    return encode_frame(msg.items())
