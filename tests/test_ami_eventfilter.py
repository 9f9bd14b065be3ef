"""AMI event filters: Asterisk 20's parsing and matching rules (manager.c), the bridge's
one include filter on the recorded traces, and the emulator applying them per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ivr.ami.codec import AMIParser
from ivr.ami.include_filter import include_filter
from ivr.ami.messages import Event, Response
from ivr.callstats import CallStats
from ivr.events.builder import CONSUMED_AMI_EVENTS, CONSUMED_VARIABLES, CallEventBuilder
from ivr.sim import CallerScript, Emulator, EmulatorConfig
from ivr.sim.emulator import DEFAULT_ETC
from ivr.sim.eventfilter import (
    FilterCompileError,
    FilterFormatError,
    FilterSet,
    parse_filter,
)
from tests.ami_peer import split_server_raw
from tests.conftest import TRACES
from tests.sim_trace_tools import read_until
from tests.test_sim_ami import login

NEWCHANNEL = b"Event: Newchannel\r\nChannel: XXX\r\nSomeheader: YYY\r\n\r\n"
VARSET = b"Event: VarSet\r\nChannel: ABC\r\nSomeheader: XXX\r\n\r\n"

# (criteria, pattern, exclude, name, header, method, test event, should it be sent)
# -- the cases of manager.c's own eventfilter test (Asterisk 20.20.1), one filter each
VALID = [
    ("eventfilter", "XXX", False, None, None, "regex", NEWCHANNEL, True),
    ("eventfilter", "!XXX", True, None, None, "regex", VARSET, False),
    ("eventfilter(name(VarSet),method(none))", "", False, "VarSet", None, "none", VARSET, True),
    ("eventfilter(name(Newchannel),method(regex))", "X[XYZ]X", False, "Newchannel", None,
     "regex", NEWCHANNEL, True),
    ("eventfilter(name(Newchannel),method(regex))", "X[abc]X", False, "Newchannel", None,
     "regex", NEWCHANNEL, False),
    ("eventfilter(action(exclude),name(Newchannel),method(regex))", "X[XYZ]X", True,
     "Newchannel", None, "regex", NEWCHANNEL, False),
    ("eventfilter(action(exclude),name(Newchannel),method(regex))", "X[abc]X", True,
     "Newchannel", None, "regex", NEWCHANNEL, True),
    ("eventfilter(action(include),name(VarSet),header(Channel),method(starts_with))", "AB",
     False, "VarSet", "Channel:", "starts_with", VARSET, True),
    ("eventfilter(action(include),name(VarSet),header(Channel),method(ends_with))", "BC",
     False, "VarSet", "Channel:", "ends_with", VARSET, True),
    ("eventfilter(action(include),name(VarSet),header(Channel),method(exact))", "ABC",
     False, "VarSet", "Channel:", "exact", VARSET, True),
    ("eventfilter(action(include),name(VarSet),header(Channel),method(exact))", "XXX",
     False, "VarSet", "Channel:", "exact", VARSET, False),
    ("eventfilter(name(VarSet),header(Channel),method(exact))", "!ZZZ", True, "VarSet",
     "Channel:", "exact", VARSET, True),
    ("eventfilter(action(exclude),name(VarSet),header(Channel),method(exact))", "ZZZ", True,
     "VarSet", "Channel:", "exact", VARSET, True),
    ("eventfilter(action(include),name(VarSet),header(Someheader),method(exact))", "!XXX",
     False, "VarSet", "Someheader:", "exact", VARSET, True),
]

FORMAT_ERRORS = [
    ("eventfilter(action(include)", ""), ("eventfilter(action(inlude)", ""),
    ("eventfilter(nnnn(yyy)", "XXX"), ("eventfilter(eader(VarSet)", "XXX"),
    ("eventfilter(ethod(contains)", "XXX"),
    ("eventfilter(nnnn(yyy),header(VarSet),method(contains)", "XXX"),
    ("eventfilter(name(yyy),heder(VarSet),method(contains)", "XXX"),
    ("eventfilter(name(yyy),header(VarSet),mehod(contains)", "XXX"),
    ("eventfilter(name(yyy),header(VarSet),method(coains)", "XXX"),
    ("eventfilter(method(yyy))", "XXX"), ("eventfilter", ""), ("eventfilter", "!"),
    ("eventfilter()", "XXX"), ("", "XXX"),
]


@pytest.mark.parametrize("case", VALID, ids=lambda c: f"{c[0]}={c[1]}")
def test_valid_filters_parse_and_match_as_asterisk(case: tuple[object, ...]) -> None:
    criteria, pattern, exclude, name, header, method, event, send = case
    assert isinstance(criteria, str) and isinstance(pattern, str) and isinstance(event, bytes)
    f = parse_filter(criteria, pattern)
    assert f.exclude is exclude
    assert f.name == (name.encode() if isinstance(name, str) else None)
    assert f.header == (header.encode() if isinstance(header, str) else None)
    assert f.method == method
    assert FilterSet([f]).allows(event) is send


@pytest.mark.parametrize("criteria,pattern", FORMAT_ERRORS)
def test_badly_formatted_filters_are_refused(criteria: str, pattern: str) -> None:
    with pytest.raises(FilterFormatError) as err:
        parse_filter(criteria, pattern)
    assert err.value.message.startswith("Filter was formatted incorrectly")


@pytest.mark.parametrize("criteria", ["eventfilter", "eventfilter(method(regex))"])
def test_regex_that_does_not_compile_is_refused(criteria: str) -> None:
    with pytest.raises(FilterCompileError) as err:
        parse_filter(criteria, "XX[X")
    assert err.value.message == "Filter did not compile.  Check the syntax of the filter given."
    with pytest.raises(FilterCompileError):  # GNU word anchors: refused, not reinterpreted
        parse_filter("eventfilter", r"\<Hangup\>")
    with pytest.raises(FilterCompileError):
        parse_filter("eventfilter", "[[:nosuch:]]")


def test_posix_classes_whole_text_and_include_exclude_order() -> None:
    f = parse_filter("eventfilter", "Channel: SIP/[[:digit:]]+-")
    assert FilterSet([f]).allows(b"Event: Newchannel\r\nChannel: SIP/1001-0001\r\n\r\n")
    assert not FilterSet([f]).allows(b"Event: Newchannel\r\nChannel: SIP/pstn-0001\r\n\r\n")
    # '.' crosses lines (no REG_NEWLINE), as the manager.conf.sample example relies on
    both = parse_filter("eventfilter", "Event: Newchannel.*Channel: PJSIP/")
    assert FilterSet([both]).allows(b"Event: Newchannel\r\nChannel: PJSIP/a-1\r\n\r\n")
    # include and exclude: included first, then the excluded taken out
    fs = FilterSet([parse_filter("eventfilter(name(Newchannel))", ""),
                    parse_filter("eventfilter(name(Hangup))", ""),
                    parse_filter("eventfilter(action(exclude),name(Newchannel),header(Channel),"
                                 "method(starts_with))", "Local/")])
    assert len(fs) == 3
    assert fs.allows(b"Event: Newchannel\r\nChannel: SIP/pstn-1\r\n\r\n")
    assert not fs.allows(b"Event: Newchannel\r\nChannel: Local/1001@agent-1;1\r\n\r\n")
    assert fs.allows(b"Event: Hangup\r\nChannel: Local/1001@agent-1;1\r\n\r\n")
    assert not fs.allows(b"Event: VarSet\r\nChannel: SIP/pstn-1\r\n\r\n")
    # a header's value: blanks after the colon skipped, CR dropped, every such line tried
    h = parse_filter("eventfilter(header(Variable),method(exact))", "IVR_LANG")
    assert FilterSet([h]).allows(b"Event: VarSet\r\nVariable:   IVR_LANG\r\nValue: x\r\n\r\n")
    assert not FilterSet([h]).allows(b"Event: VarSet\r\nVariable: IVR_LANGS\r\n\r\n")
    assert FilterSet().allows(b"Event: Anything\r\n\r\n")  # no filters: everything


def _bridge_filter() -> FilterSet:
    pattern = include_filter(CONSUMED_AMI_EVENTS | CallStats.CONSUMED_AMI_EVENTS,
                             CONSUMED_VARIABLES)
    return FilterSet([parse_filter("eventfilter", pattern)])


def _parse(frames: list[bytes]) -> list[Event]:
    parser = AMIParser(expect_banner=False, group_lists=False)
    return [m for f in frames for m in parser.feed(f) if isinstance(m, Event)]


@pytest.mark.parametrize("scenario", ["02", "04", "06", "07", "08"])
def test_bridge_filter_passes_exactly_what_the_bridge_reads(scenario: str) -> None:
    """On each recorded trace: the bridge's one filter keeps exactly the events its
    consumers read, and the builder makes the same call events from the filtered stream
    as from the whole stream."""
    raw = (next(TRACES.glob(f"{scenario}*")) / "ami.server.raw").read_bytes()
    _, frames = split_server_raw(raw)
    frames = [f for f in frames if f.startswith(b"Event: ")]
    fs = _bridge_filter()
    kept = [f for f in frames if fs.allows(f)]
    wanted = CONSUMED_AMI_EVENTS | CallStats.CONSUMED_AMI_EVENTS
    for ev, frame in zip(_parse(frames), frames, strict=True):
        reads = ev.name in wanted and (
            ev.name != "VarSet" or (ev.get("Variable") or "").lstrip("_") in CONSUMED_VARIABLES)
        assert fs.allows(frame) is reads, ev
    assert len(kept) < len(frames)

    def build(evs: list[Event]) -> list[dict[str, object]]:
        b = CallEventBuilder(clock=lambda: 1_795_883_958.5)
        return [e.to_json() for ev in evs for e in b.feed_ami(ev)]

    full, filtered = build(_parse(frames)), build(_parse(kept))
    assert filtered == full
    if scenario == "02":
        assert len(full) > 10 and len(kept) * 3 < len(frames)


def _names(buf: bytearray) -> list[str]:
    return [m.name for m in AMIParser(expect_banner=buf.startswith(b"Asterisk"),
                                      group_lists=False).feed(bytes(buf))
            if isinstance(m, Event)]


async def test_emulator_applies_filter_actions_per_session() -> None:
    async with Emulator(EmulatorConfig(speed=20)) as emu:
        r, w, buf = await login(emu.ami_port)  # filtered session
        r2, w2, buf2 = await login(emu.ami_port)  # unfiltered session, same events
        w.write(b"Action: Filter\r\nActionID: f1\r\nOperation: Add\r\n"
                b"Filter: ^Event: (Newchannel|Hangup)[[:space:]]\r\n\r\n")
        w.write(b"Action: Filter\r\nActionID: f2\r\nOperation: Add\r\nMatchCriteria: "
                b"action(exclude),name(Newchannel),header(Channel),method(starts_with)\r\n"
                b"Filter: Local/\r\n\r\n")
        w.write(b"Action: Filter\r\nActionID: f3\r\nOperation: Add\r\nFilter: XX[X\r\n\r\n")
        w.write(b"Action: Filter\r\nActionID: f4\r\nOperation: Remove\r\nFilter: x\r\n\r\n")
        w.write(b"Action: Filter\r\nActionID: f5\r\nOperation: Add\r\n"
                b"MatchCriteria: method(bogus)\r\nFilter: x\r\n\r\n")
        await read_until(r, buf, b"ActionID: f5")
        replies = {m.action_id: m for m in AMIParser(group_lists=False).feed(bytes(buf))
                   if isinstance(m, Response)}
        assert replies["f1"].success and replies["f1"]["Message"] == "Success"
        assert replies["f2"].success
        assert replies["f3"]["Message"] == ("Filter did not compile.  Check the syntax of "
                                            "the filter given.")
        assert replies["f4"]["Message"] == "Unknown operation"
        assert replies["f5"]["Message"] == ("Filter was formatted incorrectly.  Check the "
                                            "syntax of the filter given.")
        cut = buf.index(b"ActionID: f5")
        cut = buf.index(b"\r\n\r\n", cut) + 4  # what came after the filters were added
        call = await emu.place_call(CallerScript(exten="6001", talk_time=None, patience=None,
                                                 hangup_after=1.0))
        await call.wait()
        await read_until(r2, buf2, f"Event: Hangup\r\nPrivilege: call,all\r\nChannel: "
                         f"{call.name}".encode())
        w.write(b"Action: Ping\r\nActionID: p\r\n\r\n")  # the filtered stream is caught up
        await read_until(r, buf, b"Ping: Pong")
        w.close()
        w2.close()
    names, everything = _names(buf[cut:]), _names(buf2)
    assert names == ["Newchannel", "Hangup"]
    assert len(everything) > 10 and "VarSet" in everything and "Newexten" in everything


async def test_manager_conf_eventfilter_applies_at_login(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    shutil.copytree(DEFAULT_ETC, etc)
    conf = etc / "manager.conf"
    conf.write_text(conf.read_text() + "eventfilter(action(include),name(Hangup))=\n"
                    "eventfilter(name(Bogus),method(nope))=x\n")
    async with Emulator(EmulatorConfig(etc=etc, speed=20)) as emu:
        r, w, buf = await login(emu.ami_port)
        call = await emu.place_call(CallerScript(exten="6001", talk_time=None, patience=None,
                                                 hangup_after=1.0))
        await call.wait()
        await read_until(r, buf, f"Channel: {call.name}".encode())
        w.close()
    assert set(_names(buf)) == {"FullyBooted", "Hangup"}
