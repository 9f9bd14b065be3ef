"""Caller numbers never reach a log in clear: ``scrub`` masks them however they are
written (separators, +86 / 0086, full-width digits, inside file names), and leaves
service numbers, Asterisk uniqueids and timestamps alone."""

from __future__ import annotations

import json
import logging

import pytest

from ivr.log import JsonFormatter
from ivr.privacy import mask_number, scrub


@pytest.mark.parametrize(("text", "masked"), [
    ("13800138000", "138****8000"),
    ("138-0013-8000", "138-****-8000"),
    ("138 0013 8000", "138 **** 8000"),
    ("+86 138 0013 8000", "+86 138 **** 8000"),
    ("+8613800138000", "+86138****8000"),
    ("008613800138000", "0086138****8000"),
    ("１３８００１３８０００", "１３８****８０００"),  # full-width digits (an IME)
    ("＋８６ １３８ ００１３ ８０００", "＋８６ １３８ **** ８０００"),
    ("rec-13800138000.wav", "rec-138****8000.wav"),  # inside a file name
    ("/var/spool/asterisk/monitor/13800138000-1795883958.1.wav",
     "/var/spool/asterisk/monitor/138****8000-1795883958.1.wav"),
    ("call from 13800138000.", "call from 138****8000."),
    ("0755-8888 6666", "075*-**** 6666"),
    ("020-88886666", "020-****6666"),
    ("+86 755 8888 6666", "+86 755 **** 6666"),
])
def test_numbers_are_masked_however_written(text: str, masked: str) -> None:
    assert scrub(text) == masked


@pytest.mark.parametrize("text", [
    "12345", "110", "call 12315 or 12333",  # service numbers are not people
    "Uniqueid 1795883958.1 Linkedid 1795883958.13800",  # Asterisk ids
    "epoch ms 1795883958123", "2026-12-06 10:00:00",
])
def test_ids_service_numbers_and_dates_stay(text: str) -> None:
    assert scrub(text) == text


def test_mask_number_keeps_short_codes() -> None:
    assert mask_number("12345") == "12345"
    assert mask_number("13800138000") == "138****8000"


def test_structured_logs_scrub_free_text() -> None:
    record = logging.LogRecord("ivr.test", logging.INFO, __file__, 1,
                               "rang from 138-0013-8000", None, None)
    record.fields = {"note": "caller +86 138 0013 8000", "file": "13800138000.wav"}
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "rang from 138-****-8000"
    assert line["note"] == "caller +86 138 **** 8000"
    assert line["file"] == "138****8000.wav"


def test_event_with_exc_info_logs_the_traceback_masked() -> None:
    from ivr.log import event

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("test.privacy.exc")
    handler = Keep()
    logger.addHandler(handler)
    try:
        try:
            raise ValueError("caller 13800138000 refused")
        except ValueError:
            event(logger, logging.ERROR, "x.failed", exc_info=True, call="c1")
    finally:
        logger.removeHandler(handler)
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["call"] == "c1"
    assert "ValueError" in line["exc"] and "Traceback" in line["exc"]
    assert "13800138000" not in line["exc"]
