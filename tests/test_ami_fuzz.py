"""Property tests for the AMI codec: it returns messages or raises AMIProtocolError —
never another exception, never a hang — and keeps its buffer bounded."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.ami.codec import MAX_BANNER, AMIParser, encode_action, encode_frame
from ivr.ami.errors import AMIEncodeError, AMIProtocolError
from ivr.ami.messages import Action, Banner, Event, EventList, ProtocolIssue, Response

from .conftest import TRACES

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
TRACE_01 = (TRACES / "01-login-and-basics" / "ami.server.raw").read_bytes()
TRACE_06 = (TRACES / "06-agi-args-and-hangup" / "ami.server.raw").read_bytes()[:6000]

# Bytes that look like AMI: CRLFs, colons, header names, UTF-8 pieces, random noise.
PIECES = st.sampled_from([
    b"\r\n", b"\r\n\r\n", b": ", b":", b"Event: ", b"Response: Success", b"ActionID: a1",
    b"EventList: start", b"EventList: Complete", b"Asterisk Call Manager/9.0.0\r\n",
    "张三".encode(), "张三".encode()[:2], b"\xff", b"\xe5", b"Output: x", b"\r", b"\n",
])
AMI_ISH = st.lists(st.one_of(PIECES, st.binary(max_size=20)), max_size=60).map(b"".join)


def feed_all(parser: AMIParser, data: bytes, cuts: list[int]) -> list[Any]:
    """Feed ``data`` cut at ``cuts``; check the contract after every call."""
    out: list[Any] = []
    bound = max(parser._max_frame, MAX_BANNER) + 3
    pos = 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        chunk = data[pos:cut]
        pos = max(pos, cut)
        try:
            items = parser.feed(chunk)
        except AMIProtocolError:
            return out
        for it in items:
            assert isinstance(it, Banner | Event | Response | Action | EventList | ProtocolIssue)
        out.extend(items)
        assert parser.buffered <= bound
    out.extend(parser.feed_eof())
    assert parser.buffered == 0
    return out


@FUZZ
@given(data=st.one_of(st.binary(max_size=400), AMI_ISH), cuts=st.lists(st.integers(0, 500)),
       banner=st.booleans(), group=st.booleans(), max_frame=st.sampled_from([16, 64, 4096]))
def test_arbitrary_bytes_never_crash(data: bytes, cuts: list[int], banner: bool, group: bool,
                                     max_frame: int) -> None:
    parser = AMIParser(expect_banner=banner, group_lists=group, max_frame=max_frame)
    feed_all(parser, data, cuts)


@FUZZ
@given(cuts=st.lists(st.integers(0, 10_000), max_size=30),
       edits=st.lists(st.tuples(st.integers(0, 10_000), st.binary(max_size=4)), max_size=8),
       max_frame=st.sampled_from([64, 300, 1 << 20]))
def test_mutated_real_traffic_never_crashes(cuts: list[int], edits: list[tuple[int, bytes]],
                                            max_frame: int) -> None:
    data = bytearray(TRACE_06)
    for pos, new in edits:
        p = pos % len(data)
        data[p:p + len(new)] = new
    feed_all(AMIParser(max_frame=max_frame), bytes(data), cuts)


@FUZZ
@given(cuts=st.lists(st.integers(0, 8000), max_size=40))
def test_any_chunking_of_a_trace_gives_the_same_messages(cuts: list[int]) -> None:
    whole = [repr(i) for i in feed_all(AMIParser(), TRACE_01, [])]
    assert [repr(i) for i in feed_all(AMIParser(), TRACE_01, cuts)] == whole


def test_oversized_frame_is_discarded_and_parsing_resumes() -> None:
    parser = AMIParser(expect_banner=False, max_frame=100)
    big = b"Event: Big\r\nData: " + b"x" * 5000 + b"\r\n\r\n"
    out: list[Any] = []
    for i in range(0, len(big), 7):
        out.extend(parser.feed(big[i:i + 7]))
        assert parser.buffered <= 103
    out.extend(parser.feed(b"Event: Small\r\n\r\n"))
    assert isinstance(out[0], ProtocolIssue) and "larger than 100" in out[0].reason
    assert isinstance(out[-1], Event) and out[-1].name == "Small"


def test_not_a_banner_raises_protocol_error() -> None:
    with pytest.raises(AMIProtocolError, match="not an Asterisk AMI banner"):
        AMIParser().feed(b"SSH-2.0-OpenSSH_9.6\r\n")
    with pytest.raises(AMIProtocolError, match="not an Asterisk AMI banner"):
        AMIParser().feed(b"HTTP/1.1")  # noticed before the line ends
    with pytest.raises(AMIProtocolError, match="no AMI banner"):
        AMIParser().feed(b"Asterisk Call Manager/" + b"9" * 2000)


HEADER_NAME = st.from_regex(r"[A-Za-z][A-Za-z0-9_\-.]{0,15}", fullmatch=True).filter(
    lambda n: n.lower() not in ("action", "actionid"))
VALUE = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    max_size=40,
) | st.sampled_from(["张三", '陈 "老" 师', "12345 三方", "周八: 投诉", " lead", "trail "])


@FUZZ
@given(action=st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,20}", fullmatch=True),
       fields=st.dictionaries(HEADER_NAME, st.one_of(VALUE, st.lists(VALUE, min_size=1,
                                                                       max_size=3)),
                              max_size=6),
       action_id=st.from_regex(r"[A-Za-z0-9\-]{1,20}", fullmatch=True),
       cuts=st.lists(st.integers(0, 2000), max_size=10))
def test_encode_action_round_trips(action: str, fields: dict[str, Any], action_id: str,
                                   cuts: list[int]) -> None:
    # Header names are matched exactly by the parser; avoid two names differing by case
    # only being treated as distinct on the way in and out (they are distinct keys).
    data = encode_action(action, fields, action_id)
    items = feed_all(AMIParser(expect_banner=False), data, cuts)
    assert len(items) == 1
    (msg,) = items
    assert isinstance(msg, Action)
    assert msg.name == action and msg.action_id == action_id
    for name, value in fields.items():
        expected = [value] if isinstance(value, str) else list(value)
        assert msg.getall(name) == expected


@FUZZ
@given(before=VALUE, after=VALUE, brk=st.sampled_from(["\r", "\n", "\r\n", "\r\n\r\n"]))
def test_line_breaks_in_values_are_refused(before: str, after: str, brk: str) -> None:
    with pytest.raises(AMIEncodeError, match="line break"):
        encode_action("Setvar", {"Variable": "X", "Value": before + brk + after})
    with pytest.raises(AMIEncodeError, match="line break"):
        encode_action("Originate", {"Variable": ["A=1", before + brk + after]})


@pytest.mark.parametrize("name", ["", "Bad Name", "X:Y", "A\r\nB", "名字"])
def test_bad_header_names_are_refused(name: str) -> None:
    with pytest.raises(AMIEncodeError, match="header name"):
        encode_frame([(name, "v")])
    with pytest.raises(AMIEncodeError):
        encode_action("Ping", {"ActionID": "x"})
