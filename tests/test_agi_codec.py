"""The sans-I/O FastAGI codec against the recorded traces and Asterisk's parse_args()."""

from __future__ import annotations

import pytest

from ivr.agi.codec import (
    ASYNC_HANGUP,
    MAX_ARGS,
    MAX_COMMAND_LINE,
    AsyncHangup,
    HeaderParser,
    Reply,
    ReplyParser,
    encode_command,
    encode_raw,
    parse_args,
    parse_reply_line,
    quote_arg,
)
from ivr.agi.errors import AGIArgumentError, AGIHeaderError, AGIProtocolError
from tests.agi_peer import CHUNKERS, load_trace

TRACES = [("02", 1), ("06", 1), ("08", 2)]


def _server_bytes(scenario: str, n: int) -> bytes:
    t = load_trace(scenario, n)
    return t.header + b"".join(s.reply + s.async_after for s in t.steps)


def _parse_all(data: bytes, chunker: str) -> tuple[dict[str, str], list[Reply | AsyncHangup]]:
    hp = HeaderParser()
    env = None
    chunks = CHUNKERS[chunker](data)
    i = 0
    while env is None:
        env = hp.feed(chunks[i])
        i += 1
    rp = ReplyParser()
    items = rp.feed(hp.leftover)
    for c in chunks[i:]:
        items += rp.feed(c)
    rp.feed_eof()
    return dict(env.headers), items


@pytest.mark.parametrize("chunker", list(CHUNKERS))
@pytest.mark.parametrize(("scenario", "n"), TRACES)
def test_traces_parse_identically_in_any_chunking(scenario: str, n: int, chunker: str) -> None:
    data = _server_bytes(scenario, n)
    assert _parse_all(data, chunker) == _parse_all(data, "whole")


def test_trace_02_replies() -> None:
    _, items = _parse_all(_server_bytes("02", 1), "whole")
    assert len(items) == 16
    assert items[1] == Reply(200, "result=1 (zh)", "1", "zh")
    assert items[3] == Reply(200, "result=1 (13800138000|张三)", "1", "13800138000|张三")
    assert isinstance(items[6], Reply) and (items[6].value, items[6].endpos) == (-1, 0)
    assert isinstance(items[7], Reply) and (items[7].value, items[7].endpos) == (0, 242240)
    assert isinstance(items[8], Reply) and items[8].result == "2"
    usage = items[11]
    assert isinstance(usage, Reply) and usage.code == 520
    assert usage.text.splitlines()[0] == "Invalid command syntax.  Proper usage follows:"
    assert usage.text.splitlines()[-1] == "End of proper usage."
    assert items[12] == Reply(510, "Invalid or unknown command")


def test_trace_06_header_and_async_hangup() -> None:
    headers, items = _parse_all(_server_bytes("06", 1), "whole")
    assert headers["agi_calleridname"] == '陈 "老" 师'
    assert headers["agi_callerid"] == "01012345678"
    assert headers["agi_accountcode"] == ""
    assert [i if i is ASYNC_HANGUP else i.code for i in items] == [  # type: ignore[union-attr]
        200, 200, 200, ASYNC_HANGUP, 200, 200, 511,
    ]
    env = HeaderParser().feed(load_trace("06", 1).header)
    assert env is not None and env.args == ("zh", "vip") and env.script_path == "ivr"
    assert env.query == {"entry": "main"}


def test_header_cap_eof_and_fail_fast() -> None:
    with pytest.raises(AGIHeaderError, match="larger than"):
        HeaderParser(max_bytes=100).feed(b"agi_x: " + b"a" * 200)
    hp = HeaderParser()
    assert hp.feed(b"agi_network: yes\n") is None
    with pytest.raises(AGIHeaderError, match="closed after"):
        hp.feed_eof()
    with pytest.raises(AGIHeaderError, match="not an AGI header"):
        HeaderParser().feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(AGIHeaderError):
        HeaderParser().feed(b"agi_foo: 1\n\n")  # no script


def test_reply_line_edge_cases() -> None:
    assert parse_reply_line("200 result=1 (a(b)c)").data == "a(b)c"
    assert parse_reply_line("200 result=1 (x endpos=5)").data == "x endpos=5"
    assert parse_reply_line("200 result=1 ()").data == ""
    assert parse_reply_line("200 result= (timeout)").result == ""
    # regression: str.isdigit() accepted "²" and int() then raised ValueError
    for bad in ["²²² x", "١٢x", "20", "2000 x", ""]:
        with pytest.raises(AGIProtocolError):
            parse_reply_line(bad)
    with pytest.raises(AGIProtocolError):
        ReplyParser().feed("²²²-usage\n".encode())


@pytest.mark.parametrize(
    ("line", "argv"),
    [
        # what res_agi.c parse_args() makes of these (read in the C source)
        ('a b  "c d" e\\"f "" x', ["a", "b", "c d", 'e"f', "", "x"]),
        ('a"b c"d', ["ab cd"]),
        ("a\\ b", ["a b"]),
        ("a\\\\b", ["a\\b"]),
        ("\tSAY\t DIGITS ", ["SAY", "DIGITS"]),
        ('""', [""]),
        ('"x', ["x"]),
        ("a\0b c", ["a"]),
    ],
)
def test_parse_args_mirrors_asterisk(line: str, argv: list[str]) -> None:
    assert parse_args(line) == argv


def test_parse_args_truncates_like_asterisk() -> None:
    words = [str(i) for i in range(200)]
    assert parse_args(" ".join(words)) == words[: MAX_ARGS - 1]


def test_encode_command_matches_trace_lines() -> None:
    assert encode_command("GET VARIABLE", "CHANNEL(language)") == (
        b"GET VARIABLE CHANNEL(language)\n"
    )
    assert encode_command("GET FULL VARIABLE", "${CALLERID(num)}|${CALLERID(name)}") == (
        b'GET FULL VARIABLE "${CALLERID(num)}|${CALLERID(name)}"\n'
    )
    assert encode_command("SET VARIABLE", "IVR_NOTE", "张三 投诉 噪音") == (
        'SET VARIABLE IVR_NOTE "张三 投诉 噪音"\n'.encode()
    )
    assert encode_command("SAY DIGITS", "12345", "") == b'SAY DIGITS 12345 ""\n'
    assert encode_command("GET DATA", "beep", 4000, 4) == b"GET DATA beep 4000 4\n"
    assert quote_arg('陈 "老" 师') == '"陈 \\"老\\" 师"'


def test_encode_limits() -> None:
    with pytest.raises(AGIArgumentError, match="words"):
        encode_command("EXEC", *["x"] * (MAX_ARGS - 1))
    encode_command("EXEC", *["x"] * (MAX_ARGS - 2))
    with pytest.raises(AGIArgumentError):
        encode_raw("A" * MAX_COMMAND_LINE)
    assert len(encode_raw("A" * (MAX_COMMAND_LINE - 1))) == MAX_COMMAND_LINE
    for bad in ["", "   ", "X\nY", "X\0"]:
        with pytest.raises(AGIArgumentError):
            encode_raw(bad)
    with pytest.raises(AGIArgumentError):
        encode_command("GET VARIABLE; EXEC", "x")
