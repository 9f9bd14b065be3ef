"""The live channels, bridges and conferences of the call model (ivr/calls/channels.py):
built from AMI events in wire order, rebuilt from what CoreShowChannels lists, bounded;
the builder keeps them and its call events do not change."""

from __future__ import annotations

from pathlib import Path

from ivr.ami.codec import AMIParser
from ivr.ami.messages import Event, EventList
from ivr.calls.channels import CONSUMED_AMI_EVENTS, Channel, LiveChannels
from ivr.calls.model import CallModel
from ivr.calls.state import CallState
from ivr.events.builder import CONSUMED_AMI_EVENTS as BUILDER_EVENTS
from ivr.events.builder import CallEventBuilder


def _stream(traces: Path, scenario: str) -> list[Event | EventList]:
    parser = AMIParser(group_lists=True)
    path = next(traces.glob(f"{scenario}-*")) / "ami.server.raw"
    items = parser.feed(path.read_bytes()) + parser.feed_eof()
    return [i for i in items if isinstance(i, Event | EventList)]


def _ev(name: str, uid: str = "1.1", **headers: str) -> Event:
    return Event({"Event": name, "Uniqueid": uid, "Linkedid": headers.pop("Linkedid", "1.1"),
                  **headers})


def _facts(c: Channel) -> tuple[object, ...]:
    return (c.uniqueid, c.linkedid, c.name, c.state, c.caller, c.connected, c.bridge,
            c.conference, c.queue)


def test_a_channel_state_lines_queue_and_agent_in_wire_order() -> None:
    m = CallModel()
    live = m.channels
    live.feed(_ev("Newchannel", Channel="PJSIP/pstn-1", ChannelStateDesc="Ring",
                  CallerIDNum="13912345678", ConnectedLineNum="<unknown>"))
    m.tracker.add("1.1", "1.1")
    chan = live.get("1.1")
    assert chan is not None and (chan.state, chan.caller, chan.connected) == (
        "Ring", "13912345678", None)
    live.feed(_ev("Newstate", ChannelStateDesc="Up", CallerIDNum="13912345678",
                  ConnectedLineNum="12345"))
    live.feed(_ev("NewConnectedLine", CallerIDNum="13912345678", ConnectedLineNum="1001",
                  ConnectedLineName="Agent 1"))
    live.feed(_ev("Rename", Newname="PJSIP/pstn-1<MASQ>"))
    assert (chan.state, chan.connected, chan.connected_name, chan.name) == (
        "Up", "1001", "Agent 1", "PJSIP/pstn-1<MASQ>")
    live.feed(_ev("QueueCallerJoin", Queue="q-complaints", Position="1"))
    assert m.waiting_in("1.1") == "q-complaints" and m.agent_of("1.1") is None
    live.feed(_ev("AgentConnect", Queue="q-complaints", MemberName="Agent 1"))
    live.feed(_ev("QueueCallerLeave", Queue="q-complaints"))
    assert m.waiting_in("1.1") is None and m.agent_of("1.1") == "Agent 1"
    live.feed(_ev("AgentComplete", Queue="q-complaints", MemberName="Agent 1"))
    assert m.agent_of("1.1") is None
    live.feed(_ev("Hangup"))
    assert len(live) == 0


def test_bridges_and_conferences_from_their_events() -> None:
    live = LiveChannels()
    for uid in ("1.1", "1.2", "1.3"):
        live.feed(_ev("Newchannel", uid, Channel=f"PJSIP/x-{uid}"))
    live.feed(_ev("BridgeCreate", "", BridgeUniqueid="b1", BridgeType="basic",
                  BridgeTechnology="simple_bridge"))
    live.feed(_ev("BridgeEnter", "1.1", BridgeUniqueid="b1"))
    live.feed(_ev("BridgeEnter", "1.2", BridgeUniqueid="b1"))
    assert live.bridges["b1"].channels == {"1.1", "1.2"} and live.bridges["b1"].type == "basic"
    live.feed(_ev("BridgeEnter", "1.2", BridgeUniqueid="b2"))  # moved: out of b1
    assert live.bridges["b1"].channels == {"1.1"} and live.bridges["b2"].channels == {"1.2"}
    live.feed(_ev("BridgeLeave", "1.1", BridgeUniqueid="b1"))
    live.feed(_ev("BridgeDestroy", "", BridgeUniqueid="b1"))
    live.feed(_ev("BridgeDestroy", "", BridgeUniqueid="b2"))
    assert live.bridges == {} and live.channels["1.2"].bridge is None
    live.feed(_ev("ConfbridgeJoin", "1.1", Conference="9001"))
    live.feed(_ev("ConfbridgeJoin", "1.3", Conference="9001"))
    live.feed(_ev("ConfbridgeLeave", "1.3", Conference="9001"))
    assert live.conferences == {"9001": {"1.1"}}
    live.feed(_ev("ConfbridgeEnd", "", Conference="9001"))
    assert live.conferences == {} and live.channels["1.1"].conference is None
    live.feed(_ev("ConfbridgeJoin", "1.3", Conference="9002"))
    live.feed(_ev("Hangup", "1.3"))  # its last member hung up: the conference is gone
    assert live.conferences == {}


def test_rebuilt_from_the_list_as_the_events_built_it(traces: Path) -> None:
    """Trace 02 (IVR, queue, agent, recording, three-way): the channels, their state,
    lines and bridges, built from the events up to the CoreShowChannels Asterisk sent,
    are what a builder that missed every event rebuilds from that list."""
    seen = CallEventBuilder(clock=lambda: 1_795_883_958.5)
    rows: list[Event] = []
    for item in _stream(traces, "02"):
        if isinstance(item, EventList):
            if item.events and item.events[0].name == "CoreShowChannel":
                rows = list(item.events)
                break
            continue
        seen.feed_ami(item)
    assert len(rows) >= 3
    restarted = CallEventBuilder(clock=lambda: 1_795_883_958.5)
    restarted.resync(restarted.channels_snapshot(), rows)
    built, rebuilt = seen.model.channels, restarted.model.channels
    assert sorted(map(_facts, built.channels.values())) == sorted(
        map(_facts, rebuilt.channels.values()))
    assert {b: x.channels for b, x in built.bridges.items()} == {
        b: x.channels for b, x in rebuilt.bridges.items()}
    assert built.bridges  # the agent is bridged with the caller


def test_resync_removes_channels_not_listed_and_keeps_newer_ones() -> None:
    b = CallEventBuilder(clock=lambda: 100.0)
    for uid in ("1.1", "1.2"):
        b.feed_ami(_ev("Newchannel", uid, Context="from-pstn", CallerIDNum="13912345678"))
    b.feed_ami(_ev("BridgeEnter", "1.2", BridgeUniqueid="b1"))
    mark = b.channels_snapshot()
    b.feed_ami(_ev("Newchannel", "2.1", Linkedid="2.1", Context="from-pstn"))  # after mark
    row = Event({"Event": "CoreShowChannel", "Uniqueid": "1.1", "Linkedid": "1.1",
                 "Channel": "PJSIP/pstn-1", "ChannelStateDesc": "Up",
                 "CallerIDNum": "13912345678", "Application": "Queue",
                 "ApplicationData": "q-complaints,t,,,300", "BridgeId": ""})
    b.resync(mark, [row])
    live = b.model.channels
    assert set(live.channels) == {"1.1", "2.1"} and live.bridges == {}
    assert b.model.waiting_in("1.1") == "q-complaints"
    b.feed_ami(_ev("Hangup", "1.1"))
    b.feed_ami(_ev("Hangup", "2.1", Linkedid="2.1"))
    assert len(live) == 0 and len(b.model) == 0


def test_a_swept_call_leaves_its_channels() -> None:
    b = CallEventBuilder(clock=lambda: 100.0)
    b.feed_ami(_ev("Newchannel", "1.1", Context="from-pstn", CallerIDNum="13912345678"))
    b.feed_ami(_ev("Newchannel", "1.2", Context="from-pstn"))
    b.feed_ami(_ev("Hangup", "1.2"))
    assert set(b.model.channels.channels) == {"1.1"}
    b.sweep(100.0 + 5 * 3600, 4 * 3600)  # its Hangup was missed
    assert len(b.model.channels) == 0 and len(b.model) == 0


def test_every_trace_leaves_what_is_up_and_the_filter_carries_what_it_reads(
        traces: Path) -> None:
    assert CONSUMED_AMI_EVENTS <= BUILDER_EVENTS
    for scenario in ("02", "04", "07", "09", "12"):
        b = CallEventBuilder(clock=lambda: 1_795_883_958.5)
        most = 0
        for item in _stream(traces, scenario):
            if isinstance(item, Event):
                b.feed_ami(item)
                most = max(most, len(b.model.channels))
        live = b.model.channels
        assert most > 0, scenario
        # what is left is what the trace left up (04 ends with calls up): the tracker's
        assert set(live.channels) == set(b.calls.channel_call), scenario
        if scenario != "04":  # every other one ends with every call hung up
            assert (live.channels, live.bridges, live.conferences) == ({}, {}, {}), scenario


def test_restored_call_is_known_to_the_model() -> None:
    m = CallModel()
    call = CallState(call_id="5.1", started_at=1.0, dialled="12345", first_uniqueid="5.1")
    call.channels.add("5.1")
    m.restore(call)
    # the channel table learns the channel from the first resync after the restart
    assert m.channels_of("5.1") == [] and m.tracker.call_of("5.1") == "5.1"
