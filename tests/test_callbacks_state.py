"""The callbacks' pure parts: dialable numbers, job ids, the next opening of a queue's
hours, OriginateResponse reasons (trace 10), and the queue ``hours`` of the definition."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from ivr.callbacks.errors import UndialableNumber
from ivr.callbacks.service import CallbacksConfig, dial_of
from ivr.callbacks.state import HOTLINE_TZ, Job, Origin, check_number, job_id, next_open, outcome_of
from ivr.dialplan import load_definition
from ivr.dialplan.errors import DialplanError
from ivr.dialplan.hours import definition_is_open
from ivr.events.model import CallEvent
from ivr.events.schema import validate_event
from tests.test_dialplan_support import SHIPPED


def test_dialable_numbers() -> None:
    assert check_number(" 13800138000 ") == "13800138000"
    assert check_number("02088886666") == "02088886666"
    for bad in ("", None, "anonymous", "1234", "1380013800a", "+8613800138000",
                "138 0013 8000", "1" * 21, "13800138000@evil"):
        with pytest.raises(UndialableNumber) as err:
            check_number(bad)
        assert "not a dialable number" in str(err.value) and "无法拨打" in str(err.value)


def test_one_job_id_per_number_per_day_without_the_number() -> None:
    a = job_id("20261206", "13800138000")
    assert a == job_id("20261206", "13800138000")
    assert a != job_id("20261207", "13800138000") != job_id("20261206", "13800138001")
    assert a.startswith("cb-20261206-") and "13800138000" not in a


def test_originate_reasons_of_trace_10() -> None:
    assert [outcome_of(r) for r in ("4", "3", "1", "5", "8", "0", None, "x")] == [
        "answered", "no_answer", "no_answer", "busy", "failed", "failed", "failed", "failed"]
    assert dial_of("Local/2001@agent-local-00000005;1") == "Local/2001@agent-local"
    assert dial_of("Local/1099@agent-local") == "Local/1099@agent-local"
    assert CallbacksConfig().caller_number == "12345"
    assert CallbacksConfig(caller_id='"12345回拨" <12345>').caller_number == "12345"
    assert [CallbacksConfig(backoff_s=600).backoff(n) for n in (1, 2, 3, 9)] == [
        600, 1200, 2400, 4 * 3600]


def test_next_opening_of_office_hours() -> None:
    d = load_definition(SHIPPED)

    def office(t: float) -> bool:
        return bool(definition_is_open(d, "office", dt.datetime.fromtimestamp(t, dt.UTC)))

    def at(*a: int) -> float:
        return dt.datetime(*a, tzinfo=HOTLINE_TZ).timestamp()

    assert next_open(at(2026, 12, 8, 10, 0), office) == at(2026, 12, 8, 10, 0)  # Tuesday
    assert next_open(at(2026, 12, 8, 12, 10), office) == at(2026, 12, 8, 13, 30)  # lunch
    assert next_open(at(2026, 12, 11, 18, 0), office) == at(2026, 12, 14, 9, 0)  # Fri→Mon
    assert next_open(at(2026, 12, 8, 10, 0), lambda t: False, horizon_s=3600) is None


def test_job_events_are_valid_call_events_of_the_jobs_own_stream() -> None:
    job = Job(id="cb-20261206-abc", number="13800138000", day="20261206", queue="hotline",
              reason="abandoned", origin=Origin("1796521051.6", "12345", "zh", "12345", 1.0),
              created_at=2.0)
    job = job.with_events(3.0, ("scheduled", {"due_at": 63.0}), ("placed", {"attempt": 1}))
    events = [CallEvent.loads(t) for t in job.pending]
    assert [(e.type, e.seq, e.call_id) for e in events] == [
        ("callback.scheduled", 1, job.id), ("callback.placed", 2, job.id)]
    for e in events:
        validate_event(e.to_json())
        assert e.data["original_call_id"] == "1796521051.6"
    assert Job.loads(job.dumps()) == job


def test_queue_hours_in_the_definition(tmp_path: Path) -> None:
    folder = tmp_path / "dialplans"
    shutil.copytree(SHIPPED, folder)
    (folder / "desk.yaml").write_text(
        "version: 1\nqueues:\n  desk: {strategy: ringall, hours: office}\n", "utf-8")
    assert load_definition(folder).queues["desk"].hours == "office"
    assert load_definition(SHIPPED).queues["hotline"].hours is None  # 7×24
    (folder / "desk.yaml").write_text(
        "version: 1\nqueues:\n  desk: {strategy: ringall, hours: nights}\n", "utf-8")
    with pytest.raises(DialplanError) as err:
        load_definition(folder)
    assert "undefined hours 'nights'" in str(err.value)
