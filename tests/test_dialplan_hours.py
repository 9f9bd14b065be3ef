"""Opening hours on real dates: 2025 National Day holidays and their make-up workdays
(chinese-calendar data), weekends, overrides, surge mode, time zones."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from ivr.dialplan import definition_is_open, is_open, load_definition
from ivr.dialplan import model as m
from ivr.dialplan.statutory import DayKind, day_kind, year_source
from tests.test_dialplan_support import SHIPPED

NINE_TO_FIVE = m.WeeklyWindow(frozenset(range(1, 6)), dt.time(9), dt.time(17, 30))
OFFICE = m.Hours("office", (NINE_TO_FIVE,))


def at(day: str, hhmm: str = "10:00") -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T{hhmm}")


def test_calendar_facts_the_tests_rely_on() -> None:
    # what chinese_calendar says about autumn 2025 (国办发明电〔2024〕12号)
    for day in ("2025-10-01", "2025-10-05", "2025-10-08"):
        assert day_kind(dt.date.fromisoformat(day)).kind == "holiday"
    assert day_kind(dt.date(2025, 10, 1)).label == "国庆节 National Day"
    makeup = DayKind("makeup-workday", "国庆节", "National Day", "chinese-calendar")
    assert day_kind(dt.date(2025, 9, 28)) == makeup  # Sun
    assert day_kind(dt.date(2025, 10, 11)) == makeup  # Sat
    assert day_kind(dt.date(2025, 10, 12)).kind == "weekend"
    assert day_kind(dt.date(2025, 9, 30)).kind == "workday"


@pytest.mark.parametrize(
    ("when", "open_", "reason"),
    [
        (at("2025-09-30"), True, "weekly"),  # Tuesday before the holiday
        (at("2025-09-30", "08:59"), False, "weekly-closed"),
        (at("2025-09-30", "17:30"), False, "weekly-closed"),  # end is exclusive
        (at("2025-10-01"), False, "holiday"),  # Wednesday, National Day
        (at("2025-10-06"), False, "holiday"),  # Monday inside the holiday
        (at("2025-10-08"), False, "holiday"),  # last day
        (at("2025-10-09"), True, "weekly"),  # back to work (Thursday)
        (at("2025-09-28"), True, "makeup-workday"),  # Sunday worked (调休上班)
        (at("2025-09-28", "18:00"), False, "makeup-workday-closed"),
        (at("2025-10-11"), True, "makeup-workday"),  # Saturday worked
        (at("2025-10-12"), False, "weekly-closed"),  # ordinary Sunday
        (at("2025-09-27"), False, "weekly-closed"),  # ordinary Saturday
    ],
)
def test_office_hours_on_real_dates(when: dt.datetime, open_: bool, reason: str) -> None:
    state = is_open(OFFICE, when)
    assert (bool(state), state.reason) == (open_, reason)
    assert state.holiday == (reason == "holiday")


def test_holiday_policies() -> None:
    open_on_holiday = m.Hours("h", (NINE_TO_FIVE,), statutory_holidays="open")
    # a holiday on a weekday keeps the weekly table; a make-up Sunday still works
    assert is_open(open_on_holiday, at("2025-10-01")).reason == "weekly"
    ignore = m.Hours("h", (NINE_TO_FIVE,), statutory_holidays="ignore")
    assert not is_open(ignore, at("2025-09-28"))  # a Sunday is a Sunday
    assert is_open(ignore, at("2025-10-01"))
    always = m.Hours("h", (), always_open=True)
    assert is_open(always, at("2025-10-01", "03:00")).reason == "always-open"


def test_makeup_workday_uses_the_hours_of_workday_as() -> None:
    monday_short = m.WeeklyWindow(frozenset({1}), dt.time(9), dt.time(12))
    friday_long = m.WeeklyWindow(frozenset({5}), dt.time(9), dt.time(17))
    spec = m.Hours("h", (monday_short, friday_long), workday_as=1)
    assert not is_open(spec, at("2025-10-11", "14:00"))
    spec5 = m.Hours("h", (monday_short, friday_long), workday_as=5)
    assert is_open(spec5, at("2025-10-11", "14:00"))


def test_overrides_win_in_order() -> None:
    closed = m.Override(dt.date(2025, 9, 30), dt.date(2025, 9, 30), "closed",
                        reason="power works", prompt="closed-hours")
    short = m.Override(dt.date(2025, 12, 31), dt.date(2025, 12, 31), "hours",
                       windows=(m.WeeklyWindow(frozenset(range(1, 8)), dt.time(9),
                                               dt.time(15)),))
    opened = m.Override(dt.date(2025, 10, 1), dt.date(2025, 10, 3), "open", reason="surge desk")
    other = m.Override(dt.date(2025, 9, 30), dt.date(2025, 9, 30), "open", hours=("other",))
    overrides = (other, closed, short, opened)
    state = is_open(OFFICE, at("2025-09-30"), overrides)
    assert (bool(state), state.reason, state.detail, state.prompt) == (
        False, "override-closed", "power works", "closed-hours")
    assert is_open(OFFICE, at("2025-12-31", "14:59"), overrides).reason == "override-hours"
    assert is_open(OFFICE, at("2025-12-31", "15:00"), overrides).reason == \
        "override-hours-closed"
    assert is_open(OFFICE, at("2025-10-02", "22:00"), overrides).reason == "override-open"
    assert is_open(OFFICE, at("2025-10-04"), overrides).reason == "holiday"


def test_surge_mode_and_time_zone() -> None:
    surge = m.Surge(active=True, start=at("2025-08-01", "06:00"), end=at("2025-08-02", "06:00"))
    state = is_open(OFFICE, at("2025-08-01", "23:00"), surge=surge)
    assert (bool(state), state.surge, state.prompt) == (True, True, "surge")
    assert not is_open(OFFICE, at("2025-08-02", "23:00"), surge=surge).surge
    # 02:00 UTC on 2025-09-30 is 10:00 in Beijing
    utc = dt.datetime(2025, 9, 30, 2, 0, tzinfo=ZoneInfo("UTC"))
    assert is_open(OFFICE, utc).reason == "weekly"
    assert not is_open(OFFICE, utc.replace(hour=10))


def test_end_of_day_window() -> None:
    night = m.WeeklyWindow(frozenset({1}), dt.time(20), dt.time(23, 59, 59, 999999),
                           end_of_day=True)
    spec = m.Hours("n", (night,), statutory_holidays="ignore")
    assert is_open(spec, at("2025-09-29", "23:59"))
    assert not is_open(spec, at("2025-09-29", "19:59"))


def test_shipped_definition_hours() -> None:
    d = load_definition(SHIPPED)
    assert definition_is_open(d, "hotline", at("2025-10-01", "03:00"))  # 7×24
    assert not definition_is_open(d, "office", at("2025-10-01")).open
    assert definition_is_open(d, "office", at("2025-09-28", "10:00")).reason == "makeup-workday"
    assert not definition_is_open(d, "office", at("2025-09-28", "12:30"))  # lunch break
    # the global override: 31 December closes at 15:00
    assert definition_is_open(d, "office", at("2025-12-31", "14:00")).reason == "override-hours"
    assert not definition_is_open(d, "office", at("2025-12-31", "16:00"))


def test_years_without_any_calendar_data_fall_back_to_the_weekly_table() -> None:
    assert year_source(2025) == "chinese-calendar"
    assert year_source(1900) == "none"  # before any library's data
    assert day_kind(dt.date(1900, 10, 1)).kind == "unknown"
    state = is_open(OFFICE, at("1900-10-01"))  # a Monday
    assert (state.reason, state.provisional) == ("weekly", False)
