"""Resolve a directory id or a number into what to dial (pure: no I/O; pass the time).

See the package docstring (:mod:`ivr.directory`) for how the slices use it."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from ivr.dialplan import model as m
from ivr.dialplan.hours import OpenState, definition_is_open
from ivr.directory.errors import NotDialable, NotOneKey, UnknownTarget

DIAL_RE = re.compile(r"\+?[0-9*#]{2,20}")
"""What the directory dials (the same rule as dialplans/ numbers)."""

_SEPARATORS = re.compile(r"[\s\-().]")
_MAX_FALLBACK_HOPS = 8


@dataclass(frozen=True)
class DialTarget:
    """What an agent asked for, ready to dial."""

    entry: m.Department | None
    """The directory entry, or None for a number that is not in the directory."""
    number: str
    """The number as dialled (separators removed)."""
    context: str
    """The dialplan context it is dialled in (settings.dial_context)."""
    hours: str | None
    """The entry's hours spec (None: always reachable)."""
    open_state: OpenState | None
    """The hours decision at ``now`` (None when no hours apply)."""

    @property
    def dial_string(self) -> str:
        """``Local/<number>@<context>``: the channel to Originate or Dial."""
        return f"Local/{self.number}@{self.context}"

    @property
    def open_now(self) -> bool:
        return self.open_state is None or self.open_state.open

    @property
    def id(self) -> str | None:
        """The directory id (what goes to the ticket as the department), if any."""
        return None if self.entry is None else self.entry.name

    @property
    def kind(self) -> str:
        """department / emergency / interpreter / partner, or ``number``."""
        return "number" if self.entry is None else self.entry.kind

    @property
    def label(self) -> str:
        return self.number if self.entry is None else self.entry.label

    @property
    def fallback(self) -> m.Fallback | None:
        """The entry's fallback ({queue} or {entry}), None for a bare number."""
        return None if self.entry is None else self.entry.fallback

    @property
    def one_key(self) -> bool:
        return self.entry is not None and self.entry.one_key


@dataclass(frozen=True)
class FallbackOffer:
    """Where to go when a target is closed or its leg failed: a queue of this hotline, or
    the first open entry along the fallback chain (``target``)."""

    kind: str
    """``queue`` or ``entry``."""
    name: str
    """The queue name or the directory id."""
    target: DialTarget | None = None
    """For ``entry``: the entry, resolved."""

    def as_data(self) -> dict[str, str]:
        """For call events and API results: {fallback_kind, fallback}."""
        return {"fallback_kind": self.kind, "fallback": self.name}


def normalise_number(text: str) -> str:
    """A number as typed (``020-1234 5678``) without separators; NotDialable when what is
    left is not :data:`DIAL_RE`."""
    number = _SEPARATORS.sub("", text)
    if not DIAL_RE.fullmatch(number):
        raise NotDialable(text, "use digits, * or # (an optional leading +), 2-20 of them")
    return number


def lookup_number(definition: m.Definition, number: str) -> m.Department | None:
    """The directory entry with this number, if any."""
    for entry in definition.directory.values():
        if entry.number == number:
            return entry
    return None


def _now(now: dt.datetime | None) -> dt.datetime:
    return now if now is not None else dt.datetime.now(dt.UTC)


def _target(definition: m.Definition, entry: m.Department | None, number: str,
            now: dt.datetime) -> DialTarget:
    hours = entry.hours if entry is not None else None
    state = (definition_is_open(definition, hours, now)
             if hours is not None and hours in definition.hours else None)
    return DialTarget(entry, number, definition.settings.dial_context, hours, state)


def resolve(definition: m.Definition, target: str, *, now: dt.datetime | None = None
            ) -> DialTarget:
    """A directory id (``market``, ``police``, ``interp-en``) or a number (``2001``,
    ``020-12345678``) → a :class:`DialTarget`.  A number that is a directory entry's
    number resolves to that entry (so its hours, fallback and id apply).  Raises
    :class:`UnknownTarget` (neither) or :class:`NotDialable` (a malformed number)."""
    text = target.strip()
    when = _now(now)
    entry = definition.directory.get(text)
    if entry is not None:
        return _target(definition, entry, entry.number, when)
    if not text or not any(c.isdigit() for c in text):
        raise UnknownTarget(target, definition.directory)
    number = normalise_number(text)
    return _target(definition, lookup_number(definition, number), number, when)


def resolve_one_key(definition: m.Definition, target: str, *,
                    now: dt.datetime | None = None) -> DialTarget:
    """:func:`resolve` for a one-key transfer (一键转接): the emergency service's id or
    number (``police`` or ``110``); anything not marked ``one_key`` is refused."""
    resolved = resolve(definition, target, now=now)
    if not resolved.one_key:
        raise NotOneKey(target)
    return resolved


def interpreter_for(definition: m.Definition, language: str) -> m.Department | None:
    """The interpreter desk of a language (validation allows one per language)."""
    for entry in definition.interpreters.values():
        if entry.language == language:
            return entry
    return None


def one_key_services(definition: m.Definition) -> list[m.Department]:
    """The emergency services marked for one-key transfer, in definition order."""
    return [e for e in definition.emergency.values() if e.one_key]


def fallback_for(definition: m.Definition, target: DialTarget, *,
                 now: dt.datetime | None = None) -> FallbackOffer | None:
    """What to offer when ``target`` is closed or did not answer: its fallback queue, or
    along ``{entry}`` fallbacks the first entry that is open at ``now`` (an entry whose
    own fallback is a queue, when none is open, offers that queue; the last entry of a
    chain of closed entries is offered as it is).  None: the target has no fallback."""
    when = _now(now)
    fb = target.fallback
    seen = {target.id}
    last: DialTarget | None = None
    for _ in range(_MAX_FALLBACK_HOPS):
        if fb is None:
            break
        if fb.kind == "queue":
            return FallbackOffer("queue", fb.name)
        entry = definition.directory.get(fb.name)
        if entry is None or entry.name in seen:
            break
        seen.add(entry.name)
        last = _target(definition, entry, entry.number, when)
        if last.open_now:
            return FallbackOffer("entry", entry.name, last)
        fb = entry.fallback
    if last is not None and last.id is not None:
        return FallbackOffer("entry", last.id, last)
    return None
