"""What a bridge heard on AMI, cut by marks, so a standby can replay what the owner did
not store (pure: no I/O, no clock).

Every bridge of one Asterisk reads the same AMI event stream (same user, same event
filter): Asterisk hands each manager session the same events in the same order.  A
*mark* is a ``UserEvent`` the owner asks Asterisk for (``UserEvent: IvrMark``, ``Mark:
<id>``); it reaches every session at the same place of that stream, so "the n-th event
after mark m" names the same event in every bridge.  The owner stores such a
:data:`Position` with the call events of each AMI event (in the same Lua call); a
standby keeps the events it heard since the marks in a :class:`Tape` and, when it takes
over, replays exactly those after the stored position.
"""

from __future__ import annotations

from collections import deque

from ivr.ami.messages import Event

Position = tuple[str, int]
"""(mark id, index of the event after that mark, from 1; 0 = the mark itself)."""

MARK_EVENT = "IvrMark"


def format_position(pos: Position) -> str:
    return f"{pos[0]}\t{pos[1]}"


def parse_position(text: str | bytes | None) -> Position | None:
    if text is None:
        return None
    raw = text.decode() if isinstance(text, bytes) else text
    mark, sep, count = raw.rpartition("\t")
    if not sep or not mark or not count.isdigit():
        return None
    return mark, int(count)


class Tape:
    """The events heard since the oldest mark kept, one segment per mark.

    Bounded: at most ``max_events`` events (whole segments are dropped from the front;
    a segment is never split), and :meth:`trim_before` drops what the owner already
    stored.  After an AMI (re)connect :meth:`reset` empties it: what was missed while
    disconnected cannot be replayed, so nothing before the next mark counts."""

    def __init__(self, max_events: int = 200_000) -> None:
        self.max_events = max_events
        self._segments: deque[tuple[str, list[Event]]] = deque()
        self._index: dict[str, int] = {}  # mark -> number of segments dropped before it
        self._dropped = 0  # segments dropped from the front so far
        self._events = 0
        self.marks_seen = 0

    @property
    def mark(self) -> str | None:
        """The latest mark heard since the last reset (None: none yet)."""
        return self._segments[-1][0] if self._segments else None

    @property
    def events(self) -> int:
        return self._events

    def reset(self) -> None:
        self._segments.clear()
        self._index.clear()
        self._events = 0

    def covers(self, mark: str) -> bool:
        """``mark`` is held: every event after it can be replayed."""
        return mark in self._index

    def on_mark(self, mark: str) -> Position:
        """A mark was heard: a new segment starts (its position is ``(mark, 0)``)."""
        self.marks_seen += 1
        if mark in self._index:  # the same mark twice (should not happen): keep the first
            return mark, len(self._segments[self._seg(mark)][1])
        self._segments.append((mark, []))
        self._index[mark] = self._dropped + len(self._segments) - 1
        while self._events > self.max_events and len(self._segments) > 1:
            self._drop_first()
        return mark, 0

    def record(self, event: Event) -> Position | None:
        """Keep ``event``; its position, or None before the first mark (not kept)."""
        if not self._segments:
            return None
        mark, events = self._segments[-1]
        events.append(event)
        self._events += 1
        return mark, len(events)

    def trim_before(self, mark: str) -> None:
        """Drop the segments before ``mark`` (the owner stored everything before it)."""
        if mark not in self._index:
            return
        while self._segments and self._segments[0][0] != mark:
            self._drop_first()

    def keep_last(self, segments: int) -> None:
        """Keep only the last ``segments`` segments (the owner's own tape)."""
        while len(self._segments) > max(1, segments):
            self._drop_first()

    def after(self, pos: Position | None) -> tuple[list[tuple[Position, Event]], bool]:
        """The events after ``pos``, with their positions, and whether ``pos`` was held
        (False: ``pos`` is older than the tape, or None — everything held is returned)."""
        out: list[tuple[Position, Event]] = []
        covered = pos is not None and pos[0] in self._index
        start_seg, start_idx = (self._seg(pos[0]), pos[1]) if covered and pos else (0, 0)
        for i, (mark, events) in enumerate(self._segments):
            if i < start_seg:
                continue
            first = start_idx if i == start_seg else 0
            for j in range(first, len(events)):
                out.append(((mark, j + 1), events[j]))
        return out, covered

    def _seg(self, mark: str) -> int:
        return self._index[mark] - self._dropped

    def _drop_first(self) -> None:
        mark, events = self._segments.popleft()
        del self._index[mark]
        self._dropped += 1
        self._events -= len(events)
