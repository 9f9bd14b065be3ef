"""Where a transfer goes: a directory entry (``market``, ``police``, ``interp-en`` …) or a
number, resolved by :mod:`ivr.directory` on the published definition into what Asterisk
dials — ``<number>`` in the definition's ``settings.dial_context`` (``Local/<n>@outbound``
for ``Atxfer``, ``Context``/``Exten`` for ``BlindTransfer`` and ``Redirect``).

Bad targets raise the directory's errors (``UnknownTarget``, ``NotDialable``,
``NotOneKey``); an entry closed now (its hours) raises :class:`TargetClosed`, naming its
fallback — a transfer never sends a caller to a department nobody answers (emergency
services have no hours).  Pure: the definition and the time are passed in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from ivr.dialplan.model import Definition
from ivr.directory import DialTarget, fallback_for, resolve, resolve_one_key
from ivr.transfers.errors import TargetClosed

__all__ = ["DialTarget", "Resolver"]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Resolver:
    """``resolve(ref)`` for any entry or number, ``one_key(ref)`` for the one-key ones
    (110 …).  ``definition()`` is asked each time: a published change applies at once."""

    def __init__(self, definition: Callable[[], Definition] | Definition, *,
                 now: Callable[[], dt.datetime] = _utc_now) -> None:
        self._definition = definition if callable(definition) else (lambda: definition)
        self.now = now

    def resolve(self, ref: str) -> DialTarget:
        definition = self._definition()
        target = resolve(definition, ref, now=self.now())
        self._check_open(definition, ref, target)
        return target

    def one_key(self, ref: str = "110") -> DialTarget:
        definition = self._definition()
        target = resolve_one_key(definition, ref, now=self.now())
        self._check_open(definition, ref, target)
        return target

    def fallback_queue(self, target: DialTarget) -> str | None:
        """The queue a caller goes back to when ``target`` does not answer: the entry's
        own fallback queue (or the first along its chain), None without one."""
        offer = fallback_for(self._definition(), target, now=self.now())
        return offer.name if offer is not None and offer.kind == "queue" else None

    def general_queue(self) -> str:
        return self._definition().settings.general_queue

    def _check_open(self, definition: Definition, ref: str, target: DialTarget) -> None:
        if target.open_now:
            return
        offer = fallback_for(definition, target, now=self.now())
        raise TargetClosed(ref, target.label, None if offer is None else
                           (offer.kind, offer.name))
