"""Opening hours: weekly windows, Chinese statutory holidays with make-up workdays
(调休), admin overrides and surge mode.  Pure functions, no clock: pass the time.

Holiday data comes from the ``chinese-calendar`` package (import ``chinese_calendar``):
``get_holiday_detail(day)`` is ``(True, name)`` on a statutory holiday and
``(False, name)`` on a make-up workday (a weekend day worked in exchange).  Years the
package has no data for are treated as ordinary weeks (the validator warns).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

import chinese_calendar

from ivr.dialplan import model as m

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
    prompt: str | None = None
    """An override's own prompt, when it decided."""

    def __bool__(self) -> bool:
        return self.open


@dataclass(frozen=True)
class DayKind:
    kind: Literal["workday", "weekend", "holiday", "makeup-workday", "unknown"]
    name: str = ""


def day_kind(day: dt.date) -> DayKind:
    """What the statutory calendar says about ``day``."""
    weekend = day.isoweekday() >= 6
    try:
        on_holiday, name = chinese_calendar.get_holiday_detail(day)
    except NotImplementedError:
        return DayKind("unknown")
    label = str(name) if name else ""
    if on_holiday and label:
        return DayKind("holiday", label)
    if not on_holiday and weekend and label:
        return DayKind("makeup-workday", label)
    return DayKind("weekend" if weekend else "workday")


def calendar_covers(day: dt.date) -> bool:
    """Whether chinese-calendar has data for ``day``'s year."""
    try:
        chinese_calendar.get_holiday_detail(dt.date(day.year, 1, 1))
    except NotImplementedError:
        return False
    return True


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
) -> OpenState:
    """Whether ``spec`` is open at ``when``, and why.

    Order: surge mode (open, flagged) → overrides (the spec's own, then ``overrides``;
    the first covering the day wins) → always_open → statutory holiday → make-up
    workday → the weekly table.
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
    kind = day_kind(day) if spec.statutory_holidays != "ignore" else DayKind("unknown")
    if kind.kind == "holiday" and spec.statutory_holidays == "closed":
        return OpenState(False, "holiday", kind.name, holiday=True)
    if kind.kind == "makeup-workday":
        hit = _in_windows(spec.weekly, local, as_day=spec.workday_as)
        return OpenState(hit, "makeup-workday" if hit else "makeup-workday-closed", kind.name)
    hit = _in_windows(spec.weekly, local)
    return OpenState(hit, "weekly" if hit else "weekly-closed")


def definition_is_open(d: m.Definition, hours: str, when: dt.datetime) -> OpenState:
    """:func:`is_open` for the named Hours spec of a definition, with its global
    overrides, the surge mode and the configured time zone."""
    spec = d.hours[hours]
    glob = [o for o in d.overrides if not o.hours or hours in o.hours]
    return is_open(spec, when, glob, d.surge, d.settings.timezone)
