"""AMIParser on every recorded Asterisk 20 capture: whole, byte by byte, random chunks."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ivr.ami.codec import AMIParser, _parse_frame, encode_action, encode_message
from ivr.ami.messages import (
    Action,
    Banner,
    Event,
    EventList,
    Incoming,
    ProtocolIssue,
    Response,
)
from ivr.cli import main as ivr_main

from .conftest import SCENARIOS, TRACES

SERVER_RAWS = sorted(TRACES.glob("*/ami.server.raw")) + [
    TRACES / "01-login-and-basics" / "ami-badlogin.server.raw"
]
RAW_IDS = [f"{p.parent.name}/{p.name}" for p in SERVER_RAWS]


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """``ivr.cli.main`` calls ``setup_logging``, which replaces the root handlers."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def snap(item: Incoming) -> Any:
    """A comparable, complete picture of one parsed item."""
    if isinstance(item, EventList):
        return ("list", item.response.headers, [e.headers for e in item.events],
                None if item.complete is None else item.complete.headers)
    if isinstance(item, Banner):
        return ("banner", item.text)
    if isinstance(item, ProtocolIssue):
        return ("issue", item.reason, item.raw)
    return (item.kind, item.headers)


def parse_chunks(raw: bytes, sizes: list[int] | None, **kw: Any) -> list[Incoming]:
    parser = AMIParser(**kw)
    out: list[Incoming] = []
    if sizes is None:
        out.extend(parser.feed(raw))
    else:
        pos = 0
        i = 0
        while pos < len(raw):
            n = sizes[i % len(sizes)]
            out.extend(parser.feed(raw[pos:pos + n]))
            pos += n
            i += 1
    out.extend(parser.feed_eof())
    return out


def flat_messages(items: list[Incoming]) -> list[Any]:
    out: list[Any] = []
    for it in items:
        if isinstance(it, EventList):
            out.append(it.response)
            out.extend(it.events)
            if it.complete is not None:
                out.append(it.complete)
        else:
            out.append(it)
    return out


@pytest.mark.parametrize("path", SERVER_RAWS, ids=RAW_IDS)
def test_whole_bytewise_and_random_chunks_agree(path: Path) -> None:
    raw = path.read_bytes()
    whole = [snap(i) for i in parse_chunks(raw, None)]
    assert whole[0] == ("banner", "Asterisk Call Manager/9.0.0")
    assert not any(s[0] == "issue" for s in whole), "real Asterisk bytes raise no issue"
    assert [snap(i) for i in parse_chunks(raw, [1])] == whole
    rng = random.Random(f"{path}")
    for _ in range(5):
        sizes = [rng.randint(1, 700) for _ in range(64)]
        assert [snap(i) for i in parse_chunks(raw, sizes)] == whole
    # Ungrouped parsing yields the same frames, one per wire message, in order.
    ungrouped = parse_chunks(raw, [3], group_lists=False)
    assert [snap(m) for m in flat_messages(parse_chunks(raw, None))] == [
        snap(m) for m in ungrouped]
    frames = raw.count(b"\r\n\r\n")
    assert len(ungrouped) == frames + 1  # + banner


@pytest.mark.parametrize(
    ("scenario", "text", "header"),
    [
        ("02-ivr-queue-record-threeway", "张三", "CallerIDName"),
        ("02-ivr-queue-record-threeway", "12345 三方", "CallerIDName"),
        ("04-transfers", "李四", "CallerIDName"),
        ("04-transfers", "王五", "CallerIDName"),
        ("07-queue-abandon", "周八", "CallerIDName"),
        ("06-agi-args-and-hangup", '陈 "老" 师', "CallerIDName"),
    ],
)
def test_chinese_text_intact_in_every_chunking(scenario: str, text: str, header: str) -> None:
    raw = (TRACES / scenario / "ami.server.raw").read_bytes()
    expected = raw.count(f"\r\n{header}: {text}\r\n".encode())
    assert expected > 0
    for sizes in (None, [1], [2], [7, 1, 5, 3]):
        msgs = flat_messages(parse_chunks(raw, sizes))
        got = sum(1 for m in msgs if isinstance(m, Event | Response) and m.get(header) == text)
        assert got == expected, (sizes, got, expected)


@pytest.mark.parametrize("scenario", [p.name for p in SCENARIOS])
def test_every_response_pairs_with_its_action(scenario: str) -> None:
    d = TRACES / scenario
    actions = parse_chunks((d / "ami.client.raw").read_bytes(), None, expect_banner=False)
    assert all(isinstance(a, Action) for a in actions)
    by_id = {a.action_id: a for a in actions if isinstance(a, Action)}
    assert len(by_id) == len(actions)
    replies = [i for i in parse_chunks((d / "ami.server.raw").read_bytes(), None)
               if isinstance(i, Response | EventList)]
    answered = [r.action_id for r in replies]
    assert len(answered) == len(set(answered)), "one reply per ActionID"
    assert set(answered) <= set(by_id)
    unanswered = [by_id[a] for a in by_id if a not in answered]
    # Only trace 05's last action goes unanswered: `core stop now` closes the socket.
    if scenario.startswith("05"):
        assert [(a.name, a.get("Command")) for a in unanswered] == [("Command", "core stop now")]
    else:
        assert unanswered == []
    for r in replies:
        action = by_id[r.action_id]
        if isinstance(r, EventList):
            assert r.complete is not None, f"{action.name} list never completed"
            assert r.response.get("EventList") == "start"
            assert r.complete.get("EventList") == "Complete"
            assert r.complete.name.endswith("Complete")
            assert all(e.action_id == r.action_id for e in r.events)
            if "ListItems" in r.complete:
                assert int(r.complete["ListItems"]) == len(r.events), action.name
        if action.name == "Logoff":
            assert isinstance(r, Response) and r.status == "Goodbye"


def test_list_results_in_traces() -> None:
    raw = (TRACES / "02-ivr-queue-record-threeway" / "ami.server.raw").read_bytes()
    lists = [i for i in parse_chunks(raw, [5]) if isinstance(i, EventList)]
    names = [lst.complete.name for lst in lists if lst.complete is not None]
    assert "CoreShowChannelsComplete" in names
    assert "ConfbridgeListComplete" in names
    # Hangup with a regex channel answers a list too (EventList: start).
    client = parse_chunks((TRACES / "02-ivr-queue-record-threeway" / "ami.client.raw")
                          .read_bytes(), None, expect_banner=False)
    hangup_ids = {a.action_id for a in client if isinstance(a, Action) and a.name == "Hangup"
                  and a["Channel"].startswith("/")}
    assert any(lst.action_id in hangup_ids for lst in lists)


def test_badlogin_trace() -> None:
    raw = (TRACES / "01-login-and-basics" / "ami-badlogin.server.raw").read_bytes()
    items = parse_chunks(raw, [1])
    assert isinstance(items[1], Response)
    assert items[1].status == "Error" and items[1].message == "Authentication failed"
    assert items[1].action_id == "cap-1"
    assert len(items) == 2
    client = (TRACES / "01-login-and-basics" / "ami-badlogin.client.raw").read_bytes()
    (login,) = parse_chunks(client, [1], expect_banner=False)
    assert isinstance(login, Action) and login.name == "Login"
    assert login.action_id == items[1].action_id and login["Secret"] == "wrong"


def test_repeated_headers_keep_all_values_in_order() -> None:
    raw = (TRACES / "01-login-and-basics" / "ami.server.raw").read_bytes()
    replies = {r.action_id: r for r in parse_chunks(raw, None) if isinstance(r, Response)}
    dialplan = replies["cap-6"]
    out = dialplan.getall("Output")
    assert out[0] == "[ Context 'from-pstn' created by 'pbx_config' ]"
    assert out[-1] == "-= 1 extension (8 priorities) in 1 context. =-"
    assert "" in out  # an empty Output line is kept
    expected = [line[len(b"Output: "):].decode() for line in raw.split(b"\r\n")
                if line.startswith(b"Output:")]
    all_out = [o for r in replies.values() for o in r.getall("Output")]
    assert all_out == expected
    # Variable repeated in an Originate (client side of trace 02).
    client = parse_chunks((TRACES / "02-ivr-queue-record-threeway" / "ami.client.raw")
                          .read_bytes(), None, expect_banner=False)
    orig = next(a for a in client if isinstance(a, Action) and a.name == "Originate")
    assert orig.getall("Variable") == ["CALLER_TAG=vip", "IVR_LANG=zh"]
    assert orig["CallerID"] == '"张三" <13800138000>'
    # ChanVariable as Asterisk adds it to events (channelvars in manager.conf).
    ev = AMIParser(expect_banner=False).feed(
        b"Event: Newchannel\r\nChannel: SIP/a-1\r\nChanVariable: A=1\r\n"
        b"Uniqueid: 1.1\r\nChanVariable: B=\xe5\xbc\xa0\r\nChanVariable: C=3\r\n\r\n")[0]
    assert isinstance(ev, Event)
    assert ev.getall("ChanVariable") == ["A=1", "B=张", "C=3"]
    assert list(ev.headers) == ["Event", "Channel", "ChanVariable", "Uniqueid"]
    assert encode_message(ev).count(b"ChanVariable: ") == 3


def test_encode_action_repeats_and_round_trips() -> None:
    data = encode_action("Originate", {"Channel": "Local/12345@from-pstn",
                                       "Variable": ["CALLER_TAG=vip", "IVR_LANG=zh"],
                                       "CallerID": '"12345 三方" <12345>', "Timeout": 30000},
                         "x-1")
    (act,) = AMIParser(expect_banner=False).feed(data)
    assert isinstance(act, Action)
    assert act.getall("Variable") == ["CALLER_TAG=vip", "IVR_LANG=zh"]
    assert act["Timeout"] == "30000" and act.action_id == "x-1"
    assert encode_message(act) == data


def test_cli_decode_prints_one_json_object_per_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = TRACES / "01-login-and-basics" / "ami.server.raw"
    raw = path.read_bytes()
    assert ivr_main(["ami", "decode", "--strict", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    objs = [json.loads(line) for line in lines]
    assert len(objs) == raw.count(b"\r\n\r\n") + 1
    assert objs[0] == {"Banner": "Asterisk Call Manager/9.0.0"}
    by_id = {o.get("ActionID"): o for o in objs if "Response" in o}
    # One Output line stays a plain string in JSON (it is not repeated); in Python,
    # Message.getall("Output") is the accessor that is always a list (pitfall 8).
    assert by_id["cap-5"]["Output"] == (
        "Asterisk 20.20.1 built by root @ vm on a x86_64 running Linux on 2026-11-28 16:30:59 UTC"
    )
    assert isinstance(by_id["cap-6"]["Output"], list) and len(by_id["cap-6"]["Output"]) == 11
    assert by_id["cap-2"]["Ping"] == "Pong"
    assert list(objs[1]) == ["Response", "ActionID", "Message"]


def test_cli_decode_client_side_and_chinese(capsys: pytest.CaptureFixture[str]) -> None:
    path = TRACES / "02-ivr-queue-record-threeway" / "ami.client.raw"
    assert ivr_main(["ami", "decode", "--no-banner", str(path)]) == 0
    out = capsys.readouterr().out
    assert '"CallerID": "\\"张三\\" <13800138000>"' in out  # UTF-8, not \\u escapes
    objs = [json.loads(line) for line in out.splitlines()]
    assert objs[1]["Variable"] == ["CALLER_TAG=vip", "IVR_LANG=zh"]


def test_cli_decode_strict_flags_issues(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    bad = tmp_path / "bad.raw"
    bad.write_bytes(b"Asterisk Call Manager/9.0.0\r\nnonsense line\r\n\r\nResponse: Succ")
    assert ivr_main(["ami", "decode", "--strict", str(bad)]) == 1
    objs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o.get("ProtocolIssue") for o in objs[1:]] == [
        "frame with no headers", "connection closed in the middle of a frame"]


@pytest.mark.parametrize("path", SERVER_RAWS, ids=RAW_IDS)
def test_fast_path_agrees_with_general_parser(path: Path) -> None:
    """AMIParser's fast path gives exactly what the general per-line parser gives."""
    raw = path.read_bytes()
    frames = raw[raw.index(b"\r\n") + 2:].split(b"\r\n\r\n")[:-1]
    msgs = parse_chunks(raw, None, group_lists=False)[1:]
    assert len(msgs) == len(frames)
    for frame, msg in zip(frames, msgs, strict=True):
        headers, junk = _parse_frame(frame.decode("utf-8"))
        assert junk == []
        assert isinstance(msg, Event | Response) and msg.headers == headers
        assert list(msg.headers) == list(headers)
