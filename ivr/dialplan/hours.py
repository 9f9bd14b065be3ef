"""Opening hours: weekly windows, Chinese statutory holidays with make-up workdays
(调休), admin overrides and surge mode.  Pure functions, no clock: pass the time.

Which days are holidays and make-up workdays comes from :mod:`ivr.dialplan.statutory`
(the arrangements admins entered, then the libraries); a decision that consulted a year
whose arrangement is not known yet is marked ``provisional``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

from ivr.dialplan import model as m
from ivr.dialplan.statutory import day_kind

Reason = Literal[
    "always-open",
    "weekly",
    "weekly-closed",
    "holiday",
    "makeup-workday",
    "makeup-workday-closed",
    "override-open",
    "override-closed",
    "override-hours",
    "override-hours-closed",
    "surge",
]


@dataclass(frozen=True)
class OpenState:
    """The answer of :func:`is_open`: ``bool(state)`` is ``open``."""

    open: bool
    reason: Reason
    detail: str = ""
    """Holiday name, override reason…"""
    holiday: bool = False
    """Closed because of a statutory holiday (TimeStep.holiday branch)."""
    surge: bool = False
    provisional: bool = False
    """The statutory calendar was consulted for a year whose official arrangement is not
    known yet (library estimate: no make-up workdays)."""
    prompt: str | None = None
    """An override's own prompt, when it decided."""

    def __bool__(self) -> bool:
        return self.open


def local_time(when: dt.datetime, timezone: str = "Asia/Shanghai") -> dt.datetime:
    """Aware datetimes are converted to ``timezone``; naive ones are taken as local."""
    if when.tzinfo is None:
        return when
    return when.astimezone(ZoneInfo(timezone)).replace(tzinfo=None)


def _in_windows(windows: Sequence[m.WeeklyWindow], when: dt.datetime, as_day: int | None = None
                ) -> bool:
    if as_day is not None:
        # a make-up workday uses the windows of another weekday
        shift = as_day - when.isoweekday()
        when = when + dt.timedelta(days=shift)
    return any(w.contains(when) for w in windows)


def is_open(
    spec: m.Hours,
    when: dt.datetime,
    overrides: Sequence[m.Override] = (),
    surge: m.Surge | None = None,
    timezone: str = "Asia/Shanghai",
    calendar: m.Calendar = m.NO_CALENDAR,
) -> OpenState:
    """Whether ``spec`` is open at ``when``, and why.

    Order: surge mode (open, flagged) → overrides (the spec's own, then ``overrides``;
    the first covering the day wins) → always_open → statutory holiday → make-up
    workday → the weekly table.  ``calendar`` holds the arrangements admins entered.
    """
    local = local_time(when, timezone)
    day = local.date()
    if surge is not None and surge.on(local):
        return OpenState(True, "surge", surge=True, prompt=surge.prompt)
    for o in (*spec.overrides, *overrides):
        if o.hours and spec.name not in o.hours:
            continue
        if not o.covers(day):
            continue
        if o.mode == "open":
            return OpenState(True, "override-open", o.reason)
        if o.mode == "closed":
            return OpenState(False, "override-closed", o.reason, prompt=o.prompt)
        hit = _in_windows(o.windows, local)
        return OpenState(hit, "override-hours" if hit else "override-hours-closed", o.reason,
                         prompt=None if hit else o.prompt)
    if spec.always_open:
        return OpenState(True, "always-open")
    if spec.statutory_holidays == "ignore":
        hit = _in_windows(spec.weekly, local)
        return OpenState(hit, "weekly" if hit else "weekly-closed")
    kind = day_kind(day, calendar)
    tentative = kind.provisional
    if kind.kind == "holiday" and spec.statutory_holidays == "closed":
        return OpenState(False, "holiday", kind.label, holiday=True, provisional=tentative)
    if kind.kind == "makeup-workday":
        hit = _in_windows(spec.weekly, local, as_day=spec.workday_as)
        return OpenState(hit, "makeup-workday" if hit else "makeup-workday-closed", kind.label,
                         provisional=tentative)
    hit = _in_windows(spec.weekly, local)
    return OpenState(hit, "weekly" if hit else "weekly-closed",
                     kind.label if kind.kind == "holiday" else "", provisional=tentative)


def definition_is_open(d: m.Definition, hours: str, when: dt.datetime) -> OpenState:
    """:func:`is_open` for the named Hours spec of a definition, with its global
    overrides, the surge mode and the configured time zone."""
    spec = d.hours[hours]
    glob = [o for o in d.overrides if not o.hours or hours in o.hours]
    return is_open(spec, when, glob, d.surge, d.settings.timezone, d.calendar)
