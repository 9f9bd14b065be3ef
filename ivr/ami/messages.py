"""Typed AMI messages produced by :class:`ivr.ami.codec.AMIParser`.

Headers keep the order Asterisk sent them in.  A header that repeats (``Output``,
``Variable``, ``ChanVariable``…) is stored once, at its first position, as a list of all
its values in order; every other header is a plain ``str``.
"""

from __future__ import annotations

from collections.abc import Iterator

HeaderValue = str | list[str]
Headers = dict[str, HeaderValue]


class Message:
    """One AMI frame: an ordered mapping of header names to values."""

    __slots__ = ("headers",)
    kind = "message"

    def __init__(self, headers: Headers) -> None:
        self.headers = headers

    def get(self, name: str, default: str | None = None) -> str | None:
        """The (first) value of header ``name``, or ``default``."""
        value = self.headers.get(name)
        if value is None:
            return default
        if isinstance(value, list):
            return value[0]
        return value

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return name in self.headers

    def getall(self, name: str) -> list[str]:
        """Every value of header ``name`` in order (empty if absent)."""
        value = self.headers.get(name)
        if value is None:
            return []
        if isinstance(value, list):
            return list(value)
        return [value]

    def items(self) -> Iterator[tuple[str, str]]:
        """Each (name, value) pair; a repeated header yields one pair per value."""
        for name, value in self.headers.items():
            if isinstance(value, list):
                for v in value:
                    yield name, v
            else:
                yield name, value

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.headers == other.headers

    def __hash__(self) -> int:  # pragma: no cover - messages are not dict keys
        return id(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.headers!r})"


class Event(Message):
    """``Event: Name`` frame."""

    __slots__ = ()
    kind = "event"

    @property
    def name(self) -> str:
        return self.get("Event") or ""


class Response(Message):
    """``Response: Success|Error|Goodbye|…`` frame."""

    __slots__ = ()
    kind = "response"

    @property
    def status(self) -> str:
        return self.get("Response") or ""

    @property
    def success(self) -> bool:
        return self.status.lower() in ("success", "goodbye", "follows")

    @property
    def message(self) -> str:
        return self.get("Message") or ""


class Action(Message):
    """``Action: Name`` frame (what a client sends; parsed by the emulator)."""

    __slots__ = ()
    kind = "action"

    @property
    def name(self) -> str:
        return self.get("Action") or ""


class Banner:
    """The first line Asterisk sends: ``Asterisk Call Manager/9.0.0``."""

    __slots__ = ("text", "version")
    kind = "banner"

    def __init__(self, text: str) -> None:
        self.text = text
        self.version = text.partition("/")[2]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Banner) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Banner({self.text!r})"


class EventList:
    """A list result: the ``EventList: start`` response, its events, and the
    ``…Complete`` event (``None`` when the connection ended before it came).

    ``overflow`` (with ``complete`` None and no events) says why the parser gave the list
    up before it completed: it grew over the parser's caps; the rest of it is dropped."""

    __slots__ = ("response", "events", "complete", "overflow", "size")
    kind = "eventlist"

    def __init__(self, response: Response, events: list[Event], complete: Event | None,
                 overflow: str | None = None) -> None:
        self.response = response
        self.events = events
        self.complete = complete
        self.overflow = overflow
        self.size = 0  # characters of the frames held (the parser's list cap)

    @property
    def action_id(self) -> str | None:
        return self.response.action_id

    @property
    def finished(self) -> bool:
        return self.complete is not None

    def __repr__(self) -> str:
        return f"EventList({self.response!r}, {len(self.events)} events, {self.complete!r})"


class ProtocolIssue:
    """Something the peer sent that was wrong but survivable: a frame that is neither
    an event, a response nor an action; a frame over the size cap (discarded); bytes
    that were not UTF-8 (replaced, never dropped); a frame cut by EOF.  The I/O layer
    logs and counts every one."""

    __slots__ = ("reason", "raw", "message")
    kind = "issue"

    def __init__(self, reason: str, raw: str, message: Message | None = None) -> None:
        self.reason = reason
        self.raw = raw
        self.message = message

    def __repr__(self) -> str:
        return f"ProtocolIssue({self.reason!r}, {self.raw[:80]!r})"


Incoming = Banner | Event | Response | Action | EventList | ProtocolIssue
