"""The statutory holiday calendar behind office hours: 2026 from chinese-calendar (the
notice of 4 November 2025), 2027 provisional from the ``holidays`` package, an
admin-entered arrangement winning over both, its validation (``path:line:col``), the
warning 60 days before a year nobody carries, ``ivr dialplan hours``, publish refusing a
bad arrangement, and the provisional mark on the hours decisions the call events report."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from ivr.cli import main
from ivr.dialplan import definition_is_open, is_open, load_definition
from ivr.dialplan import model as m
from ivr.dialplan.hours_report import hours_report
from ivr.dialplan.loader import parse_definition
from ivr.dialplan.statutory import day_kind, year_source
from ivr.dialplan.validate import check_definition
from ivr.flow.engine import CallContext, CallEngine, Exit, Input
from tests.test_dialplan_support import MINIMAL, SHIPPED, write_definition

NINE_TO_FIVE = m.WeeklyWindow(frozenset(range(1, 6)), dt.time(9), dt.time(17, 30))
OFFICE = m.Hours("office", (NINE_TO_FIVE,))


def at(day: str, hhmm: str = "10:00") -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T{hhmm}")


# Test data, not the real 2027 notice (the State Council's is entered by admins when out).
ARRANGEMENT_2027 = """\
version: 1
calendar:
  2027:
    notice: "测试安排 test arrangement (not the official notice)"
    holidays:
      - name: {zh: 元旦, en: "New Year's Day"}
        days_off: [{from: 2027-01-01, to: 2027-01-03}]
      - name: {zh: 春节, en: Spring Festival}
        days_off: [{from: 2027-02-05, to: 2027-02-12}]
        workdays: [2027-02-20]
      - name: {zh: 清明节, en: Tomb-sweeping Day}
        days_off: [{from: 2027-04-03, to: 2027-04-05}]
      - name: {zh: 劳动节, en: Labour Day}
        days_off: [{from: 2027-05-01, to: 2027-05-03}]
      - name: {zh: 端午节}
        days_off: [2027-06-09]
      - name: {zh: 中秋节, en: Mid-autumn Festival}
        days_off: [2027-09-15]
      - name: {zh: 国庆节, en: National Day}
        days_off: [{from: 2027-10-01, to: 2027-10-07}]
        workdays: [2027-09-26, 2027-10-09]
"""


def definition(tmp_path: Path, calendar: str | None = ARRANGEMENT_2027) -> m.Definition:
    folder = write_definition(tmp_path / "dp")
    if calendar is not None:
        write_definition(folder, calendar, "calendar.yaml")
    return load_definition(folder)


# --------------------------------------------------------------------------- sources


@pytest.mark.parametrize("day", ["2026-01-04", "2026-02-14", "2026-02-28", "2026-05-09",
                                 "2026-09-20", "2026-10-10"])
def test_2026_make_up_workdays_from_the_library(day: str) -> None:
    """The notice of 4 November 2025: these weekend days are worked (调休上班)."""
    kind = day_kind(dt.date.fromisoformat(day))
    assert (kind.kind, kind.source, kind.provisional) == (
        "makeup-workday", "chinese-calendar", False)
    state = is_open(OFFICE, at(day))
    assert (state.open, state.reason, state.provisional) == (True, "makeup-workday", False)


@pytest.mark.parametrize(("day", "name"), [("2026-01-01", "元旦 New Year's Day"),
                                           ("2026-02-17", "春节 Spring Festival"),
                                           ("2026-05-05", "劳动节 Labour Day"),
                                           ("2026-10-07", "国庆节 National Day")])
def test_2026_holidays_from_the_library(day: str, name: str) -> None:
    state = is_open(OFFICE, at(day))
    assert (state.open, state.reason, state.detail, state.provisional) == (
        False, "holiday", name, False)


def test_2027_statutory_holidays_are_provisional() -> None:
    assert year_source(2026) == "chinese-calendar"
    assert year_source(2027) == "holidays"
    new_year = is_open(OFFICE, at("2027-01-01"))  # a Friday
    assert (new_year.open, new_year.reason, new_year.provisional) == (False, "holiday", True)
    assert "元旦" in new_year.detail and "New Year" in new_year.detail
    for day in ("2027-02-06", "2027-02-08", "2027-10-01"):  # Spring Festival, National Day
        assert day_kind(dt.date.fromisoformat(day)).kind == "holiday"
    # an ordinary Wednesday is open, but only provisionally: a day off may yet be given
    ordinary = is_open(OFFICE, at("2027-03-03"))
    assert (ordinary.open, ordinary.reason, ordinary.provisional) == (True, "weekly", True)
    # decisions that do not consult the calendar are never provisional
    always = m.Hours("h", (), always_open=True)
    assert not is_open(always, at("2027-01-01")).provisional
    assert not is_open(OFFICE, at("2026-12-31")).provisional


def test_an_entered_arrangement_wins_over_the_libraries(tmp_path: Path) -> None:
    d = definition(tmp_path)
    assert year_source(2027, d.calendar) == "admin"

    def office(day: str, hhmm: str = "10:00") -> tuple[bool, str, str, bool]:
        s = definition_is_open(d, "office", at(day, hhmm))
        return s.open, s.reason, s.detail, s.provisional

    # a Thursday the library does not know as a holiday
    assert office("2027-02-11") == (False, "holiday", "春节 Spring Festival", False)
    # a Saturday worked in exchange (MINIMAL's office: Mon-Fri 09:00-17:30, Monday's hours)
    assert office("2027-02-20") == (True, "makeup-workday", "春节 Spring Festival", False)
    assert office("2027-02-20", "18:00")[:2] == (False, "makeup-workday-closed")
    # the library's 补假 on Tuesday 4 May is an ordinary workday in the entered arrangement
    assert day_kind(dt.date(2027, 5, 4)).kind == "holiday"
    assert office("2027-05-04") == (True, "weekly", "", False)
    assert office("2027-06-09")[:3] == (False, "holiday", "端午节")  # no English name given
    kind = day_kind(dt.date(2027, 10, 9), d.calendar)
    assert (kind.kind, kind.source, kind.notice) == (
        "makeup-workday", "admin", "测试安排 test arrangement (not the official notice)")
    # years nobody entered keep their library
    assert office("2026-02-14") == (True, "makeup-workday", "春节 Spring Festival", False)


def test_an_entered_year_replaces_the_library_for_the_2026_dates_too(tmp_path: Path) -> None:
    """What admins enter wins even over official library data."""
    d = definition(tmp_path, """\
version: 1
calendar:
  2026:
    notice: "国务院办公厅关于2026年部分节假日安排的通知 (2025-11-04)"
    holidays:
      - name: {zh: 春节, en: Spring Festival}
        days_off: [{from: 2026-02-15, to: 2026-02-24}]
        workdays: [2026-02-14]
""")
    state = definition_is_open(d, "office", at("2026-02-24"))  # an extra day off
    assert (state.open, state.reason) == (False, "holiday")
    state = definition_is_open(d, "office", at("2026-02-28"))  # no longer worked
    assert (state.open, state.reason) == (False, "weekly-closed")


# --------------------------------------------------------------------------- validation


def warnings_about(problems: list[object], year: int) -> list[str]:
    return [str(p) for p in problems
            if ": warning: " in str(p) and f"{year} holiday arrangement" in str(p)]


def test_the_warning_comes_60_days_before_a_year_nobody_carries(tmp_path: Path) -> None:
    d = definition(tmp_path, calendar=None)

    def check(now: dt.datetime) -> list[object]:
        return list(check_definition(d, now=now))

    assert warnings_about(check(dt.datetime(2026, 11, 1, 12)), 2027) == []  # 61 days ahead
    [warning] = warnings_about(check(dt.datetime(2026, 11, 2, 12)), 2027)  # 60 days ahead
    assert "statutory holidays of 2027 are provisional" in warning
    assert "'calendar: 2027:'" in warning
    assert "国务院办公厅关于2027年部分节假日安排的通知" in warning
    assert "hours 'office'" in warning
    # an aware clock is taken in the definition's time zone: 16:00 UTC is 2 November there
    assert warnings_about(check(dt.datetime(2026, 11, 1, 16, tzinfo=dt.UTC)), 2027)
    # inside the year it still warns; entered, it does not
    assert warnings_about(check(dt.datetime(2027, 3, 1, 12)), 2027)
    entered = definition(tmp_path / "entered")
    assert warnings_about(list(check_definition(entered, now=dt.datetime(2026, 11, 2))),
                          2027) == []
    # no clock (a running server reloading): no date checks at all
    assert warnings_about(list(check_definition(d)), 2027) == []


def test_validate_command_prints_the_warning_with_a_fixed_clock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_definition(tmp_path / "dp")
    assert main(["dialplan", "validate", str(folder), "--no-prompts", "--today",
                 "2026-12-06"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [x for x in out if "2027 holiday arrangement is not entered" in x] == out
    assert out[0].startswith(f"{folder}/hotline.yaml:")
    assert main(["dialplan", "validate", str(folder), "--no-prompts", "--today",
                 "2026-06-01"]) == 0
    assert capsys.readouterr().out == ""


def bad(body: str) -> str:
    return f"version: 1\ncalendar:\n  2027:\n    notice: 测试\n    holidays:\n{body}"


SPRING = "      - name: {zh: 春节}\n        days_off: [2027-02-06]\n"


@pytest.mark.parametrize(("text", "line", "message"), [
    pytest.param(bad("      - name: {zh: 春节}\n        days_off: [2027-02-30]\n"),
                 7, "date '2027-02-30' for item 1 of 'days_off' of holiday 1 of calendar 2027 "
                 "does not exist", id="date-that-does-not-exist"),
    pytest.param(bad(SPRING + "        workdays: [2027-02-10]\n"),
                 8, "calendar 2027: make-up workday 2027-02-10 of 春节 is a Wednesday, not a "
                 "weekend day", id="workday-not-on-a-weekend"),
    pytest.param(bad(SPRING + "      - name: {zh: 除夕}\n        days_off: [2027-02-06]\n"),
                 9, "calendar 2027: 2027-02-06 is listed twice (also as day off of 春节 at ",
                 id="date-twice"),
    pytest.param(bad("      - name: {zh: 春节}\n"
                     "        days_off: [{from: 2027-02-10, to: 2027-02-05}]\n"),
                 7, "'to' 2027-02-05 is before 'from' 2027-02-10", id="range-backwards"),
    pytest.param(bad("      - name: {en: Spring Festival}\n        days_off: [2027-02-06]\n"),
                 6, "'name' of holiday 1 of calendar 2027 is missing required key 'zh'",
                 id="chinese-name-missing"),
    pytest.param(bad("      - name: {zh: Spring Festival}\n        days_off: [2027-02-06]\n"),
                 6, "'zh' of holiday 1 of calendar 2027 must be the holiday's Chinese name",
                 id="chinese-name-not-chinese"),
    pytest.param(bad("      - name: {zh: 春节}\n        days_off: [2029-02-06]\n"),
                 7, "day off 2029-02-06 of 春节 is outside the 2027 arrangement",
                 id="date-outside-the-year"),
    pytest.param("version: 1\ncalendar:\n  2027:\n    holidays: []\n", 4,
                 "calendar 2027 is missing required key 'notice'", id="notice-missing"),
    pytest.param(bad("      - name: {zh: 春节}\n        days_off: []\n"), 7,
                 "holiday 1 of calendar 2027 has no days off", id="no-days-off"),
    pytest.param("version: 1\ncalendar:\n  1999:\n    notice: x\n    holidays: []\n", 3,
                 "calendar year must be between 2000 and 2100, got 1999", id="year-range"),
    pytest.param("version: 1\ncalendar:\n  2027: {notice: a, holidays: []}\n"
                 "  2027: {notice: b, holidays: []}\n", 4,
                 "duplicate key '2027' in calendar", id="year-twice-in-a-file"),
])
def test_bad_arrangements_are_errors_with_their_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int, message: str
) -> None:
    folder = write_definition(tmp_path / "dp")
    write_definition(folder, text, "calendar.yaml")
    assert main(["dialplan", "validate", str(folder), "--no-prompts",
                 "--today", "2026-12-06"]) == 1
    errors = [x for x in capsys.readouterr().out.splitlines() if ": error: " in x]
    assert errors, "no error reported"
    assert errors[0].startswith(f"{folder}/calendar.yaml:{line}:"), errors
    assert message in errors[0], errors


def test_a_year_entered_in_two_files_is_an_error(tmp_path: Path) -> None:
    folder = write_definition(tmp_path / "dp")
    write_definition(folder, ARRANGEMENT_2027, "calendar.yaml")
    write_definition(folder, ARRANGEMENT_2027, "more.yaml")
    _, problems = parse_definition(folder)
    assert [str(p) for p in problems if p.severity == "error"] == [
        f"{folder}/more.yaml:3:3: error: calendar year '2027' is already defined at "
        f"{folder}/calendar.yaml:3:3"]


def test_a_past_year_is_an_error_and_statutory_days_are_checked(tmp_path: Path) -> None:
    d = definition(tmp_path)
    assert [p for p in check_definition(d, now=dt.datetime(2027, 12, 31, 12))
            if p.severity == "error"] == []
    errors = [str(p) for p in check_definition(d, now=dt.datetime(2028, 1, 2, 12))
              if p.severity == "error"]
    assert len(errors) == 1 and "calendar 2027: 2027 is a past year" in errors[0]
    # a statutory day the law gives (国庆节 3 October) left out: a warning naming it
    short = ARRANGEMENT_2027.replace("{from: 2027-10-01, to: 2027-10-07}",
                                     "{from: 2027-10-01, to: 2027-10-02}")
    d = definition(tmp_path / "short", short)
    warned = [str(p) for p in check_definition(d) if "statutory holiday by law" in str(p)]
    assert len(warned) == 1 and "2027-10-03" in warned[0] and "国庆节" in warned[0]


def test_publish_refuses_a_bad_arrangement_and_the_running_version_stays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "dialplans"
    shutil.copytree(SHIPPED, source)
    (source / "calendar.yaml").write_text(ARRANGEMENT_2027, encoding="utf-8")
    out = tmp_path / "conf"
    out.mkdir()
    shutil.copy(SHIPPED.parent / "asterisk-conf" / "extensions_site.conf", out)
    argv = ["dialplan", "publish", str(source), "--out", str(out), "--no-reload",
            "--who", "li.admin", "--no-prompts"]
    assert main([*argv, "--today", "2027-01-05"]) == 0
    live = (out / "extensions.conf").read_text()
    capsys.readouterr()
    # a year later the same arrangement is for a past year: refused
    assert main([*argv, "--today", "2028-01-05"]) == 1
    captured = capsys.readouterr()
    assert "calendar 2027: 2027 is a past year" in captured.out
    assert "publish refused" in captured.err
    # an impossible date: refused too
    (source / "calendar.yaml").write_text(
        ARRANGEMENT_2027.replace("2027-06-09", "2027-06-31"), encoding="utf-8")
    assert main([*argv, "--today", "2027-01-05"]) == 1
    assert "'2027-06-31'" in capsys.readouterr().out
    assert (out / "extensions.conf").read_text() == live


# --------------------------------------------------------------------------- hours report


def test_hours_report_for_a_provisional_holiday_and_an_entered_workday(tmp_path: Path) -> None:
    shipped = load_definition(SHIPPED)
    lines = hours_report(shipped, dt.date(2027, 2, 9))
    assert lines[0] == "2027-02-09 星期二 Tuesday (Asia/Shanghai)"
    assert lines[1].startswith("日历 calendar: 法定节假日 statutory holiday: 春节")
    assert "暂定 provisional" in lines[1] and "make-up workdays unknown" in lines[1]
    hotline, office = lines[2], lines[3]
    assert hotline.split()[:4] == ["hotline", "开放", "open", "全天"]
    assert office.startswith("office   关闭 closed  全天 all day  法定节假日 statutory holiday")
    assert office.endswith("[暂定 provisional: 2027 年放假安排未录入 / the 2027 arrangement is "
                           "not entered]")
    d = definition(tmp_path)
    lines = hours_report(d, dt.date(2027, 2, 20))
    assert ("调休上班日 make-up workday: 春节 Spring Festival — 管理员录入 entered by admin"
            in lines[1])
    assert lines[2:] == [
        "office",
        "  00:00–09:00  关闭 closed  调休上班日 make-up workday (春节 Spring Festival), "
        "按星期一作息 hours of a Monday; 作息以外 outside those hours",
        "  09:00–17:30  开放 open    调休上班日 make-up workday (春节 Spring Festival), "
        "按星期一作息 hours of a Monday",
        "  17:30–24:00  关闭 closed  调休上班日 make-up workday (春节 Spring Festival), "
        "按星期一作息 hours of a Monday; 作息以外 outside those hours",
    ]
    lines = hours_report(d, dt.date(2027, 2, 22), dt.time(8, 59))
    assert lines[0] == "2027-02-22 星期一 Monday 08:59 (Asia/Shanghai)"
    assert lines[2] == "office  关闭 closed  周作息以外 outside the weekly hours"


def test_hours_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dialplan", "hours", str(SHIPPED), "--date", "2025-12-31",
                 "--time", "14:30"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("hotline  开放 open    全天开放 always open")
    assert out[3] == ("office   开放 open    管理员例外 admin override: "
                      "年终 short day / Year-end short day")
    with pytest.raises(SystemExit) as exc:
        main(["dialplan", "hours", str(SHIPPED), "--date", "2027-02-30"])
    assert exc.value.code == 2
    assert "invalid date '2027-02-30' (expected YYYY-MM-DD)" in capsys.readouterr().err


# --------------------------------------------------------------------------- call events


def hours_tag(d: m.Definition, when: dt.datetime) -> dict[str, str]:
    """Run entry 8890's department transfer (MINIMAL: menu 2 → market, office hours) and
    return the hours decision the engine reports."""
    ctx = CallContext(d, d.entries["8890"], "v1", "1795883958.1", "13800000000",
                      call_id="1795883958.1", clock=lambda: when)
    engine = CallEngine(ctx)
    run = engine.run()
    action = next(run)
    while not isinstance(action, Exit):
        action = run.send(Input("2"))
    tags = [s.data for s in engine.steps if s.kind == "tag" and s.data["name"].startswith("hours:")]
    assert len(tags) == 1, engine.steps
    return dict(tags[0])


def test_hours_decisions_say_when_they_were_provisional(tmp_path: Path) -> None:
    text = MINIMAL.replace('  market: {label: Market, number: "2001"}',
                           '  market: {label: Market, number: "2001", hours: office, '
                           'fallback_queue: hotline}')
    folder = write_definition(tmp_path / "dp", text)
    d = load_definition(folder)
    tag = hours_tag(d, at("2027-01-01"))
    assert tag == {"name": "hours:office", "value": "holiday", "provisional": "true",
                   "detail": "元旦 New Year's Day"}
    tag = hours_tag(d, at("2026-10-01"))
    assert tag == {"name": "hours:office", "value": "holiday", "provisional": "false",
                   "detail": "国庆节 National Day"}
    write_definition(folder, ARRANGEMENT_2027, "calendar.yaml")
    tag = hours_tag(load_definition(folder), at("2027-01-01"))
    assert tag == {"name": "hours:office", "value": "holiday", "provisional": "false",
                   "detail": "元旦 New Year's Day"}
