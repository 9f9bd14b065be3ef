"""The call-event builder on the recorded traces, IVR steps, and the JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft7Validator

from ivr.ami.messages import Event
from ivr.calls.steps import IvrStep
from ivr.events.builder import CallEventBuilder
from ivr.events.errors import EventValidationError
from ivr.events.model import EVENT_TYPES, CallEvent
from ivr.events.schema import load_schema, validate_event
from ivr.sim.synth_calls import load_call_template, load_trace, synth_call


def build(traces: Path, scenario: str) -> list[CallEvent]:
    b = CallEventBuilder(clock=lambda: 1_795_883_958.5)
    out: list[CallEvent] = []
    for ev in load_trace(next(traces.glob(f"{scenario}*")) / "ami.server.raw"):
        out.extend(b.feed_ami(ev))
    if scenario in ("02", "07", "08"):
        assert b.open_calls == 0 and b.unknown_channel_events == 0
    return out


def assert_ordered(events: list[CallEvent]) -> None:
    seqs: dict[str, int] = {}
    for e in events:
        assert e.seq == seqs.get(e.call_id, 0) + 1, (e.call_id, e.seq, e.type)
        seqs[e.call_id] = e.seq


def test_trace02_ivr_queue_record_threeway(traces: Path) -> None:
    events = build(traces, "02")
    assert_ordered(events)
    assert {e.call_id for e in events} == {"1795883958.1"}  # department leg: no own ticket
    assert [e.type for e in events] == [
        "call.started", "queue.joined", "agent.called", "queue.left", "agent.connected",
        "recording.started", "recording.muted", "recording.unmuted", "recording.stopped",
        "threeway.started",
        "threeway.joined", "threeway.joined", "threeway.joined",
        "threeway.left", "threeway.left", "agent.completed", "recording.ready",
        "threeway.left", "threeway.ended", "call.ended",
    ]
    first = events[0]
    assert first.caller == "13800138000"
    assert first.dialled == "12345"
    assert first.language == "zh"  # IVR_LANG overrides the channel default
    # the capture's Originate set CALLER_TAG=vip: not a variable the product sets or reads
    assert first.routing.tags == ()
    joined = events[1]
    assert joined.data["queue"] == "hotline" and joined.routing.queue == "hotline"
    connected = events[4]
    assert connected.data["agent"] == "Agent 1001"
    assert connected.routing.agent == "Agent 1001"
    assert events[5].data["file"] == "/tmp/cap-rec-1795883996.wav"
    roles = [e.data["role"] for e in events if e.type == "threeway.joined"]
    assert roles == ["caller", "agent", "external"]
    ext = [e for e in events if e.type == "threeway.joined"][2]
    assert ext.data["number"] == "12345"
    ended = events[-1]
    assert ended.data["cause"] == 16 and ended.data["reason"] == "hangup"


def test_trace07_abandon(traces: Path) -> None:
    events = build(traces, "07")
    assert_ordered(events)
    types = [e.type for e in events]
    assert types == ["call.started", "queue.joined", "agent.called", "queue.abandoned",
                     "queue.left", "call.ended"]
    ab = events[3]
    assert ab.data == {"queue": "nobody", "position": 1, "original_position": 1,
                       "hold_time_s": 4}
    assert ab.caller == "13600136000"


def test_trace04_blind_transfer(traces: Path) -> None:
    events = build(traces, "04")
    assert_ordered(events)
    first_call = [e for e in events if e.call_id == "1795884021.9"]
    bt = [e for e in first_call if e.type == "transfer.blind"]
    assert len(bt) == 1
    assert bt[0].data["extension"] == "2001" and bt[0].data["result"] == "Success"
    assert first_call[-1].type == "agent.completed"  # transferred leg still up: no end
    second = [e.type for e in events if e.call_id == "1795884027.13"]
    assert second == ["call.started", "queue.joined"]  # left waiting at log-off


def test_trace08_sip_call(traces: Path) -> None:
    events = build(traces, "08")
    assert [(e.type, e.caller, e.dialled) for e in events] == [
        ("call.started", "1381", "7003"), ("call.ended", "1381", "7003")]


@pytest.mark.parametrize("scenario", ["02", "04", "07", "08"])
def test_every_event_matches_the_schema(traces: Path, scenario: str) -> None:
    for e in build(traces, scenario):
        obj = e.to_json()
        validate_event(obj)
        assert CallEvent.from_json(json.loads(e.dumps())) == e


def test_schema_lists_every_type_and_rejects_bad_events(traces: Path) -> None:
    schema = load_schema()
    Draft7Validator.check_schema(schema)
    assert set(schema["properties"]["type"]["enum"]) == EVENT_TYPES
    obj = build(traces, "07")[0].to_json()
    bad = dict(obj, seq=0)
    with pytest.raises(EventValidationError, match="seq"):
        validate_event(bad)
    bad = dict(obj, routing=dict(obj["routing"], anonymous="yes"))
    with pytest.raises(EventValidationError, match="routing/anonymous"):
        validate_event(bad)
    with pytest.raises(EventValidationError, match="unknown call event type"):
        CallEvent.from_json(dict(obj, type="call.exploded"))


def test_ids_are_deterministic_on_replay(traces: Path) -> None:
    a = build(traces, "02")
    b = build(traces, "02")
    assert [e.id for e in a] == [e.id for e in b]
    assert len({e.id for e in a}) == len(a)


def _newchannel(uid: str, lid: str, ctx: str = "from-pstn", num: str = "13912345678") -> Event:
    return Event({"Event": "Newchannel", "Channel": f"SIP/x-{uid}", "CallerIDNum": num,
                  "Language": "zh", "Context": ctx, "Exten": "12345", "Uniqueid": uid,
                  "Linkedid": lid})


def _hangup(uid: str, lid: str) -> Event:
    return Event({"Event": "Hangup", "Channel": f"SIP/x-{uid}", "Uniqueid": uid,
                  "Linkedid": lid, "Cause": "16", "Cause-txt": "Normal Clearing"})


def test_ivr_steps_routing_anonymous_survey_callback() -> None:
    b = CallEventBuilder(clock=lambda: 100.0)
    out = b.feed_ami(_newchannel("9.1", "9.1"))
    # the IVR runs on the call's second channel; its steps name the call by its Linkedid
    out += b.feed_ami(_newchannel("9.2", "9.1"))
    out += b.feed_step(IvrStep("9.1", "9.2", "entered", "12345", "start", {"entry": "main"}))
    assert [e.type for e in out] == ["call.started", "ivr.entered"]
    assert out[1].routing.entry == "main" and out[1].source.uniqueid == "9.2"
    steps = [
        IvrStep("9.1", "9.2", "language", "12345", "lang", {"language": "en"}),
        IvrStep("9.1", "9.2", "tag", "12345", "dept", {"name": "department", "value": "住建局"}),
        IvrStep("9.1", "9.2", "tag", "12345", "prio", {"name": "priority", "value": "2"}),
        IvrStep("9.1", "9.2", "tag", "12345", "anon", {"name": "anonymous", "value": "1"}),
        IvrStep("9.1", "9.2", "choice", "12345", "menu", {"menu": "main", "digits": "2"}),
        IvrStep("9.1", "9.2", "callback", "12345", "cb", {"number": "13912345678"}),
        IvrStep("9.1", "9.2", "tag", "12345", "survey", {"name": "survey", "value": "5"}),
    ]
    for s in steps:
        out += b.feed_step(s)
    types = [e.type for e in out]
    assert types == ["call.started", "ivr.entered", "ivr.language", "ivr.tag", "ivr.tag",
                     "ivr.tag", "ivr.choice", "callback.requested", "survey.scored"]
    last = out[-1]
    assert last.language == "en"
    assert last.routing.department == "住建局"
    assert last.routing.priority == 2
    assert last.routing.anonymous is True
    assert last.data["score"] == 5
    out += b.feed_ami(_hangup("9.2", "9.1"))
    out += b.feed_ami(_hangup("9.1", "9.1"))
    assert out[-1].type == "call.ended"
    assert_ordered(out)
    for e in out:
        validate_event(e.to_json())
    assert b.open_calls == 0
    # a step that comes after its call ended opens nothing
    assert b.feed_step(IvrStep("9.1", "9.2", "exit", "12345", "", {"to": "caller-hangup"})) == []
    assert b.open_calls == 0


def test_step_before_the_ami_stream_opens_the_call() -> None:
    """The FastAGI session can report before the bridge read the call's Newchannel: the
    step opens the call (by its Linkedid), nothing is held back; the Newchannel joins it
    and gives later events the caller's number."""
    b = CallEventBuilder(clock=lambda: 100.0)
    out = b.feed_step(IvrStep("6.1", "6.1", "entered", "12345", "start", {"entry": "12345"},
                              ts=99.0))
    assert [e.type for e in out] == ["call.started", "ivr.entered"]
    assert out[0].call_id == "6.1" and out[0].dialled == "12345" and out[0].caller is None
    out += b.feed_ami(_newchannel("6.1", "6.1"))
    out += b.feed_step(IvrStep("6.1", "6.1", "prompt", "12345", "start", {"prompt": "hi"}))
    assert out[-1].caller == "13912345678" and b.open_calls == 1
    out += b.feed_ami(_hangup("6.1", "6.1"))
    assert [e.type for e in out][2:] == ["ivr.prompt", "call.ended"]
    assert_ordered(out)
    assert b.open_calls == 0


def test_routing_variables_from_varset() -> None:
    b = CallEventBuilder()
    b.feed_ami(_newchannel("4.1", "4.1"))
    for var, value in [("CHANNEL(language)", "en"), ("IVR_PRIORITY", "3"),
                       ("__IVR_ENTRY", "12345"), ("IVR_QUEUE", "hotline-en"),
                       ("IVR_DEPT", "12345-城管"), ("IVR_TAGS", "elderly"),
                       ("SURVEY_SCORE", "5")]:  # the last three: names nothing sets
        b.feed_ami(Event({"Event": "VarSet", "Uniqueid": "4.1", "Linkedid": "4.1",
                          "Variable": var, "Value": value}))
    (ended,) = b.feed_ami(_hangup("4.1", "4.1"))
    assert ended.language == "en"
    assert ended.routing.priority == 3 and ended.routing.entry == "12345"
    assert ended.routing.queue == "hotline-en"
    assert ended.routing.department is None and ended.routing.tags == ()


def test_internal_legs_and_unknown_step_kinds() -> None:
    b = CallEventBuilder()
    assert b.feed_ami(_newchannel("5.1", "5.1", ctx="agent-local")) == []
    assert b.feed_step(IvrStep("5.1", "5.1", "prompt", "12345")) == []  # internal leg
    assert b.feed_ami(_hangup("5.1", "5.1")) == []
    assert b.open_calls == 0
    with pytest.raises(ValueError, match="unknown IVR step kind"):
        IvrStep("5.1", "5.1", "dance", "12345")


def test_sweep_ends_calls_that_lost_their_hangup() -> None:
    b = CallEventBuilder(clock=lambda: 10.0)
    b.feed_ami(_newchannel("7.1", "7.1"))
    assert b.sweep(now=20.0, max_idle=60.0) == []
    out = b.sweep(now=100.0, max_idle=60.0)
    assert [e.type for e in out] == ["call.ended"]
    assert out[0].data["reason"] == "expired" and b.open_calls == 0


def test_synthetic_calls_are_distinct(traces: Path) -> None:
    template = load_call_template(next(traces.glob("02*")) / "ami.server.raw")
    b = CallEventBuilder()
    events: list[CallEvent] = []
    for n in range(5):
        for ev in synth_call(template, n):
            events.extend(b.feed_ami(ev))
    assert_ordered(events)
    assert len({e.call_id for e in events}) == 5
    assert len(events) == 5 * 20 and b.open_calls == 0
    assert len({e.id for e in events}) == len(events)


def test_repeated_headers_read_as_their_first_value() -> None:
    """The hot path reads headers from the dict: a repeated header (a list) must count
    as its first value, as ``Event.get`` does."""
    b = CallEventBuilder(clock=lambda: 100.0)
    newchan = Event({"Event": "Newchannel", "Channel": "SIP/pstn-00000001",
                     "Uniqueid": "1700000000.1", "Linkedid": "1700000000.1",
                     "CallerIDNum": "13800138000", "Context": "from-pstn", "Exten": "12345",
                     "Timestamp": ["1700000001.5", "1700000009.0"]})
    started = b.feed_ami(newchan)
    assert [e.type for e in started] == ["call.started"]
    assert started[0].ts == 1700000001.5
    hangup = Event({"Event": "Hangup", "Channel": "SIP/pstn-00000001",
                    "Uniqueid": ["1700000000.1", "ignored"], "Linkedid": "1700000000.1",
                    "Cause": "16"})
    ended = b.feed_ami(hangup)
    assert [e.type for e in ended] == ["call.ended"]
    assert ended[0].ts == 100.0 and b.open_calls == 0
