"""The greeting the rendered dialplan plays itself, before ``AGI()`` (pure, no I/O).

For a zero-navigation entry whose first collect is a run of interruptible play steps
(reached only through time steps whose answer never changes and set steps), nothing about
that greeting depends on the call: the rendered dialplan plays it with
``Read(IVR_BARGE,p1&p2&…,1,,1,<s>)`` and hands the key pressed (or none) to the IVR as
``…/ivr?entry=N&barge=${IVR_BARGE}&barge_status=${READSTATUS}``.  The runtime
(:class:`ivr.flow.engine.CallEngine`) then takes that as the answer of the greeting's
collect instead of playing it again.  Both sides call :func:`static_greeting`, so they
agree on the prompts; the engine plays the greeting itself when its own first collect
differs (a definition version the dialplan was not rendered from).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ivr.dialplan import model as m

GREETING_TIMEOUT_MS = 1  # as engine.PLAY_TIMEOUT_MS: do not wait after the last prompt


@dataclass(frozen=True, slots=True)
class Greeting:
    """The prompt names (in the entry's language) of the greeting's collect."""

    prompts: tuple[str, ...]
    timeout_ms: int = GREETING_TIMEOUT_MS


def static_time(d: m.Definition, step: m.TimeStep) -> m.Target | None:
    """Where a time step always goes, or None when its answer can change (weekly hours,
    holidays, overrides, surge)."""
    spec = d.hours.get(step.hours)
    if spec is None or not spec.always_open or spec.overrides:
        return None
    if any(not o.hours or step.hours in o.hours for o in d.overrides):
        return None
    if d.surge.active and step.surge:
        return None
    return step.open


def _play_keys(e: m.Entry) -> bool:
    return bool(e.shortcuts or e.barge_in or e.operator.enabled)


def static_greeting(d: m.Definition, e: m.Entry) -> Greeting | None:
    """The greeting of zero-navigation entry ``e`` when it never changes, else None."""
    if not e.zero_navigation or not _play_keys(e):
        return None
    steps: Mapping[str, m.Step] = e.steps
    first = _through(d, steps, e.start, set())
    if not (isinstance(first, m.PlayStep) and first.interruptible):
        return None
    names = list(first.prompts)
    after, seen = first.next, {first.id}
    # the engine merges the interruptible plays that follow into the same collect
    while True:
        step = _through(d, steps, after, seen)
        if isinstance(step, _Dynamic):
            return None
        if not (isinstance(step, m.PlayStep) and step.interruptible):
            break
        names.extend(step.prompts)
        after = step.next
    if not names:
        return None
    return Greeting(tuple(names))


class _Dynamic:
    """A time step whose outcome depends on the call's time: not static."""


_DYNAMIC = _Dynamic()


def _through(
    d: m.Definition, steps: Mapping[str, m.Step], sid: m.Target, seen: set[str]
) -> m.Step | _Dynamic | None:
    """The first step from ``sid`` that is not an always-decided time step or a set step
    (``seen`` guards against loops); ``_DYNAMIC`` when a time step depends on the call."""
    while sid in steps and sid not in seen:
        seen.add(sid)
        step = steps[sid]
        if isinstance(step, m.TimeStep):
            nxt = static_time(d, step)
            if nxt is None:
                return _DYNAMIC
            sid = nxt
        elif isinstance(step, m.SetStep):
            sid = step.next
        else:
            return step
    return None
