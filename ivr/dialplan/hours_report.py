"""What ``ivr dialplan hours`` prints: for a date (and optionally a time), every hours set
of a definition, open or closed and why, in Chinese and English.  Pure: text out.

It is the admin's check on the calendar before publishing: the statutory calendar's word
on the day (holiday, make-up workday, and who says so — an entered notice, a library, or
a provisional estimate), then each hours set minute by minute, folded into intervals.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from ivr.dialplan import model as m
from ivr.dialplan.hours import OpenState, definition_is_open
from ivr.dialplan.statutory import DayKind, day_kind

_WEEKDAYS = ("星期一 Monday", "星期二 Tuesday", "星期三 Wednesday", "星期四 Thursday",
             "星期五 Friday", "星期六 Saturday", "星期日 Sunday")

_KIND = {
    "workday": "工作日 workday",
    "weekend": "周末 weekend",
    "holiday": "法定节假日 statutory holiday",
    "makeup-workday": "调休上班日 make-up workday",
    "unknown": "无节假日数据 no holiday data",
}


def _source(k: DayKind, year: int) -> str:
    if k.source == "admin":
        return f"管理员录入 entered by admin: {k.notice}"
    if k.source == "chinese-calendar":
        return "chinese-calendar 官方数据 official data"
    if k.source == "holidays":
        return (f"暂定 provisional: {year} 年放假安排未录入，法定节假日取自 holidays 库，调休未知"
                " / "
                f"the {year} arrangement is not entered; public holidays from the 'holidays' "
                "package, make-up workdays unknown")
    return (f"{year} 年无节假日数据，仅按周作息 / no holiday data for {year}: the weekly tables "
            "alone decide")


def _why(state: OpenState, spec: m.Hours, day: dt.date) -> str:
    r, detail = state.reason, state.detail
    if r == "always-open":
        text = "全天开放 always open (7×24)"
    elif r == "weekly":
        text = "按周作息 weekly hours"
        if detail:
            text += f"; 法定节假日照常 open on a statutory holiday: {detail}"
    elif r == "weekly-closed":
        text = "周作息以外 outside the weekly hours"
        if detail:
            text += f" (法定节假日 statutory holiday: {detail})"
    elif r == "holiday":
        text = f"法定节假日 statutory holiday: {detail}"
    elif r in ("makeup-workday", "makeup-workday-closed"):
        zh, en = _WEEKDAYS[spec.workday_as - 1].split(" ")
        text = f"调休上班日 make-up workday ({detail}), 按{zh}作息 hours of a {en}"
        if r == "makeup-workday-closed":
            text += "; 作息以外 outside those hours"
    elif r.startswith("override"):
        text = f"管理员例外 admin override: {detail or '(no reason given / 未填原因)'}"
    elif r == "surge":
        text = "话务高峰模式 surge mode"
    else:  # pragma: no cover - every Reason is listed above
        text = r
    if state.provisional:
        text += (f" [暂定 provisional: {day.year} 年放假安排未录入 / the {day.year} "
                 "arrangement is not entered]")
    return text


def _open(state: OpenState) -> str:
    return "开放 open  " if state.open else "关闭 closed"


def _segments(d: m.Definition, name: str, day: dt.date
              ) -> Iterator[tuple[dt.time, str, OpenState]]:
    """(start, end text, state) for each run of minutes with the same answer."""
    start = dt.datetime.combine(day, dt.time(0, 0))
    run_start, current = start, definition_is_open(d, name, start)
    for minute in range(1, 24 * 60):
        when = start + dt.timedelta(minutes=minute)
        state = definition_is_open(d, name, when)
        if state != current:
            yield run_start.time(), when.strftime("%H:%M"), current
            run_start, current = when, state
    yield run_start.time(), "24:00", current


def hours_report(d: m.Definition, day: dt.date, at: dt.time | None = None) -> list[str]:
    """The report's lines (date and time are local to the definition's time zone)."""
    kind = day_kind(day, d.calendar)
    head = f"{day.isoformat()} {_WEEKDAYS[day.isoweekday() - 1]}"
    if at is not None:
        head += f" {at.strftime('%H:%M')}"
    lines = [f"{head} ({d.settings.timezone})",
             f"日历 calendar: {_KIND[kind.kind]}" + (f": {kind.label}" if kind.label else "")
             + f" — {_source(kind, day.year)}"]
    width = max((len(n) for n in d.hours), default=0)
    for name, spec in d.hours.items():
        if at is not None:
            state = definition_is_open(d, name, dt.datetime.combine(day, at))
            lines.append(f"{name:<{width}}  {_open(state)}  {_why(state, spec, day)}")
            continue
        segments = list(_segments(d, name, day))
        if len(segments) == 1:
            _, _, state = segments[0]
            span = "全天 all day"
            lines.append(f"{name:<{width}}  {_open(state)}  {span}  {_why(state, spec, day)}")
            continue
        lines.append(name)
        for begin, end, state in segments:
            lines.append(f"  {begin.strftime('%H:%M')}–{end}  {_open(state)}  "
                         f"{_why(state, spec, day)}")
    return lines
