"""Property tests: the AGI parsers never fail any other way than AGIProtocolError, never
hold more than their caps, and quoting round-trips through Asterisk's parse_args()."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.agi.codec import (
    MAX_REPLY_LINE,
    AsyncHangup,
    HeaderParser,
    Reply,
    ReplyParser,
    encode_command,
    parse_args,
    quote_arg,
)
from ivr.agi.errors import AGIArgumentError, AGIHeaderError, AGIProtocolError
from tests.agi_peer import load_trace

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# bytes that look a bit like AGI, plus anything at all
agi_tokens = st.sampled_from(
    [b"agi_", b"agi_network_script: ivr", b": ", b"\n", b"\r\n", b"\n\n", b"200 ", b"result=",
     b"-1", b"(", b")", b" endpos=", b"520-", b"520 ", b"HANGUP", b"100 Trying", b"\xe5\xbc",
     b"\xff", b"\x00", b"\xc2\xb2"]
)
agi_bytes = st.lists(st.one_of(agi_tokens, st.binary(max_size=20)), max_size=60).map(b"".join)
chunk_sizes = st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=20)


def _chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    out, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        out.append(data[i : i + n])
        i += n
        k += 1
    return out


@FAST
@given(agi_bytes, chunk_sizes)
def test_header_parser_total(data: bytes, sizes: list[int]) -> None:
    hp = HeaderParser(max_bytes=512)
    try:
        for c in _chunks(data, sizes):
            if hp.feed(c) is not None:
                break
            assert len(hp._buf) <= 512 + 64  # bounded by the cap + one chunk
        else:
            hp.feed_eof()
    except AGIHeaderError:
        pass


@FAST
@given(agi_bytes, chunk_sizes)
def test_reply_parser_total(data: bytes, sizes: list[int]) -> None:
    rp = ReplyParser(max_line=256)
    items: list[Reply | AsyncHangup] = []
    try:
        for c in _chunks(data, sizes):
            items += rp.feed(c)
            assert len(rp._buf) <= 256 + 64
        rp.feed_eof()
    except AGIProtocolError:
        return
    assert all(isinstance(i, Reply | AsyncHangup) for i in items)


@FAST
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=50))
def test_reply_parser_random_bytes(data: bytes, size: int) -> None:
    rp = ReplyParser()
    try:
        for c in _chunks(data, [size]):
            rp.feed(c)
        rp.feed_eof()
    except AGIProtocolError:
        pass


def test_reply_parser_memory_is_bounded_on_an_endless_line() -> None:
    rp = ReplyParser()
    try:
        for _ in range(100):
            rp.feed(b"2" * 4096)
    except AGIProtocolError:
        assert len(rp._buf) <= MAX_REPLY_LINE + 4096
    else:
        raise AssertionError("an endless reply line must be refused")


@FAST
@given(st.data())
def test_trace_stream_in_random_chunks(data: st.DataObject) -> None:
    t = load_trace("02", 1)
    stream = b"".join(s.reply + s.async_after for s in t.steps)
    sizes = data.draw(chunk_sizes)
    rp = ReplyParser()
    items = []
    for c in _chunks(stream, sizes):
        items += rp.feed(c)
    assert items == ReplyParser().feed(stream)


no_breaks = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\0", blacklist_categories=["Cs"])
)


@FAST
@given(no_breaks)
def test_quote_arg_round_trips(value: str) -> None:
    assert parse_args(quote_arg(value)) == [value]


@FAST
@given(st.lists(no_breaks, max_size=8))
def test_encode_command_round_trips(values: list[str]) -> None:
    line = encode_command("SET VARIABLE", *values).decode("utf-8")
    assert line.endswith("\n") and line.count("\n") == 1
    assert parse_args(line[:-1]) == ["SET", "VARIABLE", *values]


@FAST
@given(no_breaks, st.sampled_from(["\n", "\r", "\0"]), no_breaks)
def test_line_breaks_and_nul_are_refused(a: str, bad: str, b: str) -> None:
    try:
        quote_arg(a + bad + b)
    except AGIArgumentError:
        return
    raise AssertionError("a line break or NUL must be refused")


@FAST
@given(st.text(alphabet=st.characters(whitelist_categories=["Cs"]), min_size=1))
def test_lone_surrogates_are_refused(value: str) -> None:
    try:
        encode_command("SET VARIABLE", "X", value)
    except AGIArgumentError:
        return
    raise AssertionError("text that cannot be UTF-8 must be refused")
