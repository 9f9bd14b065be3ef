"""The AMI event filter a client sends to receive only the events it consumes.

The bridge sends it (``Filter`` action, ``Operation: Add``) after every login.  How
Asterisk applies filters (``manager.c``'s legacy and advanced filters) is the emulator's
:mod:`ivr.sim.eventfilter`; the tests check this filter against it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["include_filter"]


def include_filter(events: Iterable[str], variables: Iterable[str] = ()) -> str:
    """One legacy include filter (the ``Filter`` action's ``Filter:``, no
    ``MatchCriteria``) that passes exactly the events named in ``events`` and, of the
    ``VarSet`` events, those setting one of ``variables`` (also with the ``_``/``__``
    inheritance prefix).

    One filter, not one per event name, because a session's include filters take effect
    one by one: with only some of them added, the events of the others would be dropped.
    With a single filter the session goes from "every event" to "exactly these" at once.
    A legacy (whole-event POSIX regex) filter is understood by every Asterisk since 1.8;
    anchored at the text's start, it costs one comparison per event that is not wanted.
    """
    names = sorted(set(events) - {"VarSet"})
    alternatives = [f"({'|'.join(_ere_escape(n) for n in names)})[[:space:]]"] if names else []
    wanted_vars = sorted(set(variables))
    if wanted_vars:
        var_alt = "|".join(_ere_escape(v) for v in wanted_vars)
        alternatives.append(f"VarSet[[:space:]].*[[:space:]]Variable: _{{0,2}}({var_alt})"
                            "[[:space:]]")
    elif "VarSet" in set(events):
        alternatives.append("VarSet[[:space:]]")
    if not alternatives:
        raise ValueError("include_filter: no events to include")
    return f"^Event: ({'|'.join(alternatives)})"


def _ere_escape(text: str) -> str:
    return re.sub(r"([().|*+?\[\]{}^$\\])", r"\\\1", text)
