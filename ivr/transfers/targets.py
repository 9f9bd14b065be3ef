"""Where a transfer goes: a directory entry (by id) or a plain number, resolved to what
Asterisk dials — ``<number>@<dial context>`` (the definition's ``settings.dial_context``,
``outbound`` by default: ``Local/<n>@outbound`` for ``Atxfer``, ``Context``/``Exten`` for
``BlindTransfer`` and ``Redirect``).  Pure: no I/O.

Until the directory (issue 11) is in the definition, a target is a dialable number, and
the one-key targets are the emergency services 110/119/120/122; a
:data:`DirectoryLookup` plugs the directory in (an entry id → its :class:`DialTarget`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ivr.transfers.errors import NotDialable, NotOneKey, UnknownTarget

# a number Asterisk can dial in the dial context: digits, an optional leading +, 3-20
DIALABLE_RE = re.compile(r"\+?[0-9]{3,20}")
# what a directory entry id looks like (dialplans/ ids: letters first)
ENTRY_ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")


@dataclass(frozen=True, slots=True)
class DialTarget:
    number: str  # what Asterisk dials (the extension in the dial context)
    context: str  # the dial context
    entry: str | None = None  # the directory entry id (None: a plain number)
    label: str | None = None  # "市场监督管理局 Market regulation" …
    kind: str = "number"  # department, emergency, interpreter, partner, number
    one_key: bool = False  # may be transferred to with one key (110 …)


DirectoryLookup = Callable[[str], DialTarget | None]
"""An entry id → its dial target (None: no such entry)."""

EMERGENCY: Mapping[str, str] = {
    "110": "110 公安 Police", "119": "119 消防 Fire", "120": "120 急救 Ambulance",
    "122": "122 交警 Traffic police",
}


def check_number(value: str) -> str:
    number = value.strip()
    if not DIALABLE_RE.fullmatch(number):
        raise NotDialable(value, "3-20 digits, optionally after a leading '+' (no spaces, "
                          "letters or '*#,;/')")
    return number


class Resolver:
    """Targets of transfers: ``resolve(ref)`` for any entry or number, ``one_key(ref)`` for
    the one-key ones.  ``context()`` is asked each time (a published definition change
    applies at once)."""

    def __init__(self, context: Callable[[], str] | str,
                 directory: DirectoryLookup | None = None,
                 one_key: Callable[[], Mapping[str, DialTarget]] | None = None) -> None:
        self._context = context if callable(context) else (lambda: context)
        self.directory = directory
        self._one_key = one_key

    def resolve(self, ref: str) -> DialTarget:
        """A directory entry id, or a dialable number; raises :class:`UnknownTarget` or
        :class:`NotDialable`."""
        ref = (ref or "").strip()
        if not ref:
            raise NotDialable(ref, "empty target")
        if ENTRY_ID_RE.fullmatch(ref):
            found = self.directory(ref) if self.directory is not None else None
            if found is None:
                raise UnknownTarget(ref, "the directory has no entry of that id"
                                    if self.directory is not None else "no directory loaded")
            return found
        found = self.one_key_targets().get(ref)
        if found is not None:
            return found
        return DialTarget(check_number(ref), self._context())

    def one_key_targets(self) -> Mapping[str, DialTarget]:
        """The one-key targets by number and by entry id."""
        if self._one_key is not None:
            return self._one_key()
        ctx = self._context()
        return {n: DialTarget(n, ctx, label=label, kind="emergency", one_key=True)
                for n, label in EMERGENCY.items()}

    def one_key(self, ref: str = "110") -> DialTarget:
        """A one-key target (110 by default); raises :class:`NotOneKey`."""
        targets = self.one_key_targets()
        found = targets.get((ref or "").strip())
        if found is None or not found.one_key:
            raise NotOneKey(ref, sorted({t.number for t in targets.values() if t.one_key}))
        return found
