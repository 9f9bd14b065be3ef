"""ivr.asterisk.queues: the recorded queues.conf, defaults, templates, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.asterisk.conf import load_conf, parse_conf
from ivr.asterisk.errors import ConfSyntaxError
from ivr.asterisk.queues import StaticMember, parse_queues, parse_queues_general


def test_recorded_queues(traces: Path) -> None:
    cats = load_conf(traces / "asterisk-etc" / "queues.conf")
    queues = parse_queues(cats)
    assert list(queues) == ["hotline", "english", "nobody"]
    hot = queues["hotline"]
    assert (hot.strategy, hot.timeout, hot.retry, hot.wrapuptime) == ("rrmemory", 15, 1, 0)
    assert (hot.joinempty, hot.leavewhenempty, hot.ringinuse) == ("yes", "no", False)
    assert hot.raw["announce-frequency"] == "0"
    assert hot.members == [
        StaticMember("Local/1001@agent-local/n", 0, "Agent 1001", "Local/1001@agent-local")
    ]
    eng = queues["english"]
    assert (eng.strategy, eng.timeout, eng.retry, eng.ringinuse) == ("ringall", 15, 5, True)
    assert eng.members == [
        StaticMember("Local/1002@agent-local/n", 0, "Agent 1002", "Local/1002@agent-local/n")
    ]
    nobody = queues["nobody"]
    assert (nobody.strategy, nobody.timeout) == ("ringall", 20)
    assert [m.membername for m in nobody.members] == ["Ringing Agent"]
    assert parse_queues_general(cats) == {"persistentmembers": "no", "shared_lastcall": "yes"}


def test_templates_and_member_fields() -> None:
    cats = parse_conf(
        "[general]\n"
        "[base](!)\nstrategy = leastrecent\ntimeout = 30\n"
        "member => SIP/100\n"
        "[q1](base)\nweight = 2\nmaxlen = 10\nservicelevel = 60\n"
        "member => PJSIP/200,3,Zhang San,Custom:200,no,5,yes\n"
        "member => SIP/300,-4\n"
        "[q2](base)\nstrategy = roundrobin\n"
    )
    queues = parse_queues(cats)
    assert list(queues) == ["q1", "q2"]
    q1 = queues["q1"]
    assert (q1.strategy, q1.timeout, q1.weight, q1.maxlen, q1.servicelevel) == (
        "leastrecent",
        30,
        2,
        10,
        60,
    )
    assert q1.members == [
        StaticMember("SIP/100", 0, "SIP/100", "SIP/100"),
        StaticMember("PJSIP/200", 3, "Zhang San", "Custom:200", False, 5, True),
        StaticMember("SIP/300", 0, "SIP/300", "SIP/300"),
    ]
    assert queues["q2"].strategy == "rrmemory"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("[q]\nstrategy = fastest\n", 2, "unknown queue strategy 'fastest'"),
        ("[q]\ntimeout = soon\n", 2, "expected an integer"),
        ("[q]\nretry = -1\n", 2, "must be >= 0"),
        ("[q]\nringinuse = maybe\n", 2, "expected yes/no"),
        ("[q]\nmember =>\n", 2, "empty queue member"),
        ("[q]\nmember => ,1\n", 2, "no interface"),
    ],
)
def test_queue_errors(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfSyntaxError) as ei:
        parse_queues(parse_conf(text, "queues.conf"))
    assert ei.value.line == line and message in ei.value.message
    assert str(ei.value).startswith(f"queues.conf:{line}:")
