"""The statutory calendar: which days are public holidays (法定节假日) and which weekend
days are worked in exchange (调休上班日).  Pure lookups, no clock: pass the date.

Sources, most authoritative first, decided per year:

``admin``
    The State Council's arrangement for the year (国务院办公厅关于 YYYY 年部分节假日安排的
    通知) as an admin entered it under ``calendar:`` in ``dialplans/``.  It wins over any
    library, date by date and for the whole year.
``chinese-calendar``
    The ``chinese-calendar`` package's official data (holidays and make-up workdays), for
    the years it carries.
``holidays``
    The ``holidays`` package's Chinese public holidays, which it computes for any year from
    the statutory rules (the days of 全国年节及纪念日放假办法 and their legal 补假).  It does
    not know a year's make-up workdays until the notice is out, so every decision on such a
    year is **provisional**; the validator warns, and hours decisions say so in the call
    events.
``none``
    No data: the weekly tables alone decide.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import chinese_calendar

from ivr.dialplan import model as m

Source = Literal["admin", "chinese-calendar", "holidays", "none"]
Kind = Literal["workday", "weekend", "holiday", "makeup-workday", "unknown"]

# chinese-calendar names its holidays in English only.
_CC_ZH = {
    "New Year's Day": "元旦",
    "Spring Festival": "春节",
    "Tomb-sweeping Day": "清明节",
    "Labour Day": "劳动节",
    "Dragon Boat Festival": "端午节",
    "National Day": "国庆节",
    "Mid-autumn Festival": "中秋节",
    "Anti-Fascist 70th Day": "中国人民抗日战争暨世界反法西斯战争胜利70周年纪念日",
}
# holidays' name of a day off given for a worked weekend day: 休息日（由 2026-01-04 调休）
_SUBSTITUTED = re.compile(r"由\s*(\d{4}-\d{2}-\d{2})\s*调休")
# holidays' names of days that are not statutory days proper (observed, substituted)
_NOT_STATUTORY = ("补假", "休息日")


@dataclass(frozen=True)
class DayKind:
    """What the statutory calendar says of one date, and who says it."""

    kind: Kind
    name_zh: str = ""
    name_en: str = ""
    source: Source = "none"
    notice: str = ""
    """The entered notice's reference (source ``admin``)."""

    @property
    def provisional(self) -> bool:
        """The year's official arrangement is not known yet (library estimate)."""
        return self.source == "holidays"

    @property
    def label(self) -> str:
        """``国庆节 National Day`` (what is known of the name, Chinese first)."""
        return " ".join(x for x in (self.name_zh, self.name_en) if x)


@dataclass(frozen=True)
class _LibraryYear:
    days_off: Mapping[dt.date, tuple[str, str]]
    """date → (Chinese name, English name)"""
    workdays: frozenset[dt.date]


@functools.lru_cache(maxsize=32)
def _library_year(year: int) -> _LibraryYear | None:
    """The ``holidays`` package's Chinese public holidays of ``year`` (None: no data)."""
    import holidays  # imported on first use: the IVR path only needs it for such years

    try:
        zh = holidays.country_holidays("CN", years=year, language="zh_CN")
        en = holidays.country_holidays("CN", years=year, language="en_US")
    except (NotImplementedError, KeyError, ValueError):
        return None
    if not zh:
        return None
    workdays: set[dt.date] = set()
    for name in zh.values():
        for found in _SUBSTITUTED.findall(name):
            workdays.add(dt.date.fromisoformat(found))
    days = {d: (str(zh[d]), str(en.get(d, ""))) for d in sorted(zh)}
    return _LibraryYear(MappingProxyType(days), frozenset(workdays))


@functools.lru_cache(maxsize=64)
def _chinese_calendar_covers(year: int) -> bool:
    try:
        chinese_calendar.get_holiday_detail(dt.date(year, 1, 1))
    except NotImplementedError:
        return False
    return True


def year_source(year: int, calendar: m.Calendar = m.NO_CALENDAR) -> Source:
    """Which source decides the days of ``year``."""
    if calendar.covers(year):
        return "admin"
    if _chinese_calendar_covers(year):
        return "chinese-calendar"
    if _library_year(year) is not None:
        return "holidays"
    return "none"


def statutory_days(year: int) -> Mapping[dt.date, tuple[str, str]]:
    """The statutory days off of ``year`` proper (no 补假, no exchanged days) as the
    ``holidays`` package computes them from the law: a check on what admins enter."""
    lib = _library_year(year)
    if lib is None:
        return MappingProxyType({})
    return MappingProxyType({d: names for d, names in lib.days_off.items()
                             if not any(word in names[0] for word in _NOT_STATUTORY)})


def day_kind(day: dt.date, calendar: m.Calendar = m.NO_CALENDAR) -> DayKind:
    """What the statutory calendar says about ``day``."""
    weekend = day.isoweekday() >= 6
    plain: Kind = "weekend" if weekend else "workday"
    entry = calendar.lookup(day)
    if entry is not None:
        kind, hol, year = entry
        return DayKind("holiday" if kind == "off" else "makeup-workday", hol.name_zh,
                       hol.name_en, "admin", year.notice)
    source = year_source(day.year, calendar)
    if source == "admin":
        return DayKind(plain, source="admin", notice=calendar.years[day.year].notice)
    if source == "chinese-calendar":
        on_holiday, name = chinese_calendar.get_holiday_detail(day)
        en = str(name) if name else ""
        if en and (on_holiday or weekend):
            return DayKind("holiday" if on_holiday else "makeup-workday",
                           _CC_ZH.get(en, ""), en, source)
        return DayKind(plain, source=source)
    lib = _library_year(day.year) if source == "holidays" else None
    if lib is None:
        return DayKind("unknown")
    names = lib.days_off.get(day)
    if names is not None:
        return DayKind("holiday", names[0], names[1], source)
    if day in lib.workdays:
        return DayKind("makeup-workday", "调休上班", "make-up workday", source)
    return DayKind(plain, source=source)


def warm(years: range) -> None:
    """Read the libraries' data for ``years`` now (about 0.1 s the first time), so the
    first call of a provisional year does not pay it on the event loop."""
    for year in years:
        _chinese_calendar_covers(year)
        _library_year(year)
