"""A restarted bridge continues the calls in progress: call state is checkpointed in Redis
with the events (same script call), resumed by the next process, calls whose channels
hung up while no bridge was listening are ended after the AMI (re)connect, and calls
that started meanwhile are adopted from ``CoreShowChannels``."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from ivr.ami.messages import Event
from ivr.app import BRIDGE, CALL_EVENTS, PIPELINE, AppOptions, build_app, running
from ivr.calls.state import CallState
from ivr.config import Settings, load_settings
from ivr.demo import SIM_AMI_SECRET, SIM_AMI_USER
from ivr.events import outbox as outbox_mod
from ivr.events.builder import CallEventBuilder
from ivr.events.config import EventsConfig
from ivr.events.model import CallEvent, event_id
from ivr.events.outbox import keys_for, read_status
from ivr.events.pipeline import CallEventPipeline
from ivr.events.schema import validate_event
from ivr.sim.callers import CallerScript
from ivr.sim.emulator import Emulator, EmulatorConfig
from ivr.sim.synth_calls import load_call_template, load_trace, synth_call


class Clock:
    """Deterministic wall clock (the trace has no Timestamp headers): every reading is
    0.25 s later, so a run split over two processes sharing it sees the same times."""

    def __init__(self) -> None:
        self.t = 1_795_883_958.0

    def __call__(self) -> float:
        self.t += 0.25
        return self.t


def trace02(traces: Path) -> list[Event]:
    return load_trace(next(traces.glob("02*")) / "ami.server.raw")


def synth_calls(traces: Path, n: int) -> list[list[Event]]:
    template = load_call_template(next(traces.glob("02*")) / "ami.server.raw")
    return [synth_call(template, i) for i in range(n)]


def bridge_settings(emu: Emulator, cfg: EventsConfig) -> Settings:
    """``ivr serve``'s settings for this emulator and this outbox."""
    return replace(load_settings(env={}), ami_host="127.0.0.1", ami_port=emu.ami_port,
                   ami_user=SIM_AMI_USER, ami_secret=SIM_AMI_SECRET, agi_host="127.0.0.1",
                   agi_port=0, redis_url=cfg.redis_url, events=cfg)


def cfg_for(redis_url: str) -> EventsConfig:
    return EventsConfig(redis_url=redis_url, stream_prefix=f"test:{uuid.uuid4().hex[:8]}",
                        partitions=4)


async def outbox_contents(cfg: EventsConfig) -> tuple[list[list[dict[str, Any]]],
                                                      dict[str, str]]:
    """Every partition stream's events in stream order, and the checkpoint hash."""
    keys = keys_for(cfg)
    r = aioredis.from_url(cfg.redis_url, decode_responses=True)
    try:
        streams: list[list[dict[str, Any]]] = []
        for stream in keys.streams:
            rows: Any = await r.xrange(stream)
            streams.append([json.loads(f["e"]) for _, f in rows])
        states: Any = await r.hgetall(keys.calls)
    finally:
        await r.aclose()
    return streams, dict(states)


async def feed(pipe: CallEventPipeline, events: list[Event]) -> None:
    for ev in events:
        await pipe.on_ami_event(ev)


async def crash(pipe: CallEventPipeline) -> None:
    """The process dies: what is not in Redis yet is gone, nothing is flushed."""
    await pipe.outbox.close(flush=False)
    await pipe.redis.aclose()


async def reference_run(redis_url: str, events: list[Event]) -> EventsConfig:
    cfg = cfg_for(redis_url)
    async with CallEventPipeline(cfg.redis_url, cfg, clock=Clock()) as pipe:
        await feed(pipe, events)
    return cfg


@pytest.mark.parametrize("stop", ["close", "crash"])
async def test_restart_mid_call_continues_every_call(traces: Path, redis_url: str,
                                                     stop: str) -> None:
    events = trace02(traces)
    half = len(events) // 2
    ref = await outbox_contents(await reference_run(redis_url, events))

    cfg = cfg_for(redis_url)
    clock = Clock()
    first = CallEventPipeline(cfg.redis_url, cfg, clock=clock)
    await first.start()
    await feed(first, events[:half])
    assert first.builder.open_calls == 1
    (before,) = (first.builder.call(cid) for cid in first.builder.channels_snapshot())
    if stop == "close":
        await first.close()
    else:
        await crash(first)
    streams, states = await outbox_contents(cfg)
    (call_id, text), = states.items()
    r = aioredis.from_url(cfg.redis_url)
    try:  # what `ivr events status` shows between the two processes
        assert (await read_status(r, keys_for(cfg))).calls_in_progress == 1
    finally:
        await r.aclose()
    assert CallState.from_checkpoint(text).seq == max(
        e["seq"] for s in streams for e in s if e["call_id"] == call_id)

    async with CallEventPipeline(cfg.redis_url, cfg, clock=clock) as second:
        assert second.resumed_calls == 1
        resumed = second.builder.call(call_id)
        assert resumed is not None and resumed == before  # routing, channels, seq, times…
        assert (resumed.queue, resumed.tags, resumed.language, len(resumed.channels)) == (
            "hotline", [], "zh", 4)
        await feed(second, events[half:])
        assert second.builder.open_calls == 0
    # Same ids, seq, types, data, routing, times, in the same stream order; the ended
    # call's checkpoint is gone.
    assert await outbox_contents(cfg) == ref
    assert ref[1] == {}
    types = [e["type"] for s in ref[0] for e in s]
    assert types[-1] == "call.ended" and "agent.connected" in types


def _split_run(trace: list[Event], k: int) -> list[CallEvent]:
    """Builder A gets events[:k] and saves its checkpoints like the outbox does;
    builder B is restored from them and gets the rest."""
    clock = Clock()
    a = CallEventBuilder(clock=clock, track_changes=True)
    saved: dict[str, str] = {}
    out: list[CallEvent] = []
    for ev in trace[:k]:
        out += a.feed_ami(ev)
        for cid, state in a.take_dirty():
            if state is None:
                saved.pop(cid, None)
            else:
                saved[cid] = state
    b = CallEventBuilder(clock=clock, track_changes=True)
    for text in saved.values():
        b.restore(CallState.from_checkpoint(text))
    for ev in trace[k:]:
        out += b.feed_ami(ev)
    return out


@pytest.mark.parametrize("scenario", ["02", "04", "07", "08"])
def test_checkpoint_is_complete_at_every_point(traces: Path, scenario: str) -> None:
    """Whatever AMI event the bridge stopped after, the resumed builder makes exactly
    the events of an uninterrupted one: nothing the tickets need is outside the
    checkpoint (routing variables, channels, recording files, conferences…)."""
    trace = load_trace(next(traces.glob(scenario + "*")) / "ami.server.raw")
    b = CallEventBuilder(clock=Clock())
    expected = [e.to_json() for ev in trace for e in b.feed_ami(ev)]
    assert expected
    for k in range(len(trace) + 1):
        assert [e.to_json() for e in _split_run(trace, k)] == expected, f"split at {k}"


async def test_crash_with_writes_in_flight_keeps_state_and_outbox_in_step(
        traces: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed while units are queued or being written (tiny batches so units of several
    events straddle batch limits): every checkpoint in Redis matches the last stored
    event of its call, and after the restart each call's seq still runs 1, 2, 3… with
    no gap and no repeat (events of the lost AMI events are simply missing)."""
    monkeypatch.setattr(outbox_mod, "WRITE_BATCH", 2)
    calls = synth_calls(traces, 6)
    ami = [ev for group in zip(*calls, strict=True) for ev in group]
    cut = len(ami) // 2
    cfg = cfg_for(redis_url)
    clock = Clock()
    first = CallEventPipeline(cfg.redis_url, cfg, clock=clock)
    await first.start()
    futs = [first.submit_ami_event(ev) for ev in ami[:cut]]
    await next(f for f in reversed(futs[: cut // 2]) if f is not None)
    await crash(first)

    streams, states = await outbox_contents(cfg)
    last: dict[str, dict[str, Any]] = {}
    for s in streams:
        for e in s:
            last[e["call_id"]] = e
    for cid, text in states.items():
        assert CallState.from_checkpoint(text).seq == (last[cid]["seq"] if cid in last
                                                       else 0)
    for cid, e in last.items():
        assert cid in states or e["type"] == "call.ended"

    async with CallEventPipeline(cfg.redis_url, cfg, clock=clock) as second:
        assert second.resumed_calls == len(states)
        await feed(second, ami[cut:])
    streams, _ = await outbox_contents(cfg)
    seqs: dict[str, list[int]] = {}
    for s in streams:
        for e in s:
            seqs.setdefault(e["call_id"], []).append(e["seq"])
            assert e["id"] == event_id(e["call_id"], e["seq"], e["type"])
    assert len(seqs) == len(calls)
    for cid, got in seqs.items():
        assert got == list(range(1, len(got) + 1)), cid


def test_resync_ends_calls_whose_channels_are_gone(traces: Path) -> None:
    events = trace02(traces)
    # after MixMonitorStart (recording of the caller's ;2 leg) but before it stopped
    k = next(i for i, e in enumerate(events) if e.name == "MixMonitorStart") + 1
    b = CallEventBuilder(clock=Clock(), track_changes=True)
    for ev in events[:k]:
        b.feed_ami(ev)
    b.take_dirty()
    (cid, chans), = b.channels_snapshot().items()
    call = b.call(cid)
    assert call is not None and len(chans) == 4 and call.recordings
    recorded = next(iter(call.recordings))
    seq = call.seq
    # Only an agent leg is still up: the others (the recorded one too) are dropped,
    # the call stays open until that leg hangs up.
    agent_leg = next(iter(call.agent_channels))
    out = b.resync({cid: chans}, {agent_leg})
    assert [(e.type, e.seq, e.data["file"]) for e in out] == [
        ("recording.ready", seq + 1, call.recording_files[recorded])]
    assert call.channels == {agent_leg} and b.call_of(recorded) is None
    assert b.take_dirty()[0][0] == cid
    # A channel created after the mark is not judged by a list that predates it.
    b.feed_ami(Event({"Event": "Newchannel", "Uniqueid": "9.9", "Linkedid": cid,
                      "Context": "agent-local", "Exten": "1002"}))
    assert b.resync({cid: chans}, set()) == []
    out = b.resync(b.channels_snapshot(), set())
    assert [(e.type, e.seq, e.data["reason"]) for e in out] == [("call.ended", seq + 2,
                                                                 "lost")]
    assert b.open_calls == 0 and b.take_dirty() == [(cid, None)]


async def test_call_that_ended_while_the_bridge_was_down_is_ended(
        traces: Path, redis_url: str) -> None:
    """Bridge stops mid-call; the call hangs up meanwhile (Asterisk keeps no events for
    a client that is away); the restarted bridge resumes it, sees in CoreShowChannels
    that none of its channels is live, and ends it (``reason: lost``)."""
    events = trace02(traces)
    cfg = cfg_for(redis_url)
    clock = Clock()
    async with CallEventPipeline(cfg.redis_url, cfg, clock=clock) as first:
        await feed(first, events[: len(events) // 2])
    _, states = await outbox_contents(cfg)
    (call_id, text), = states.items()
    seq = CallState.from_checkpoint(text).seq

    async with Emulator(EmulatorConfig()) as emu:
        app = build_app(bridge_settings(emu, cfg), AppOptions(pusher=False, watch_s=None))
        async with running(app):  # the bridge's start ran the first on_connect hook
            second = app[PIPELINE]
            assert second.resumed_calls == 1
            assert app[CALL_EVENTS].live_channels == 0
            await second.flush()
            assert second.builder.open_calls == 0
    streams, states = await outbox_contents(cfg)
    assert states == {}
    mine = [e for s in streams for e in s if e["call_id"] == call_id]
    assert [e["seq"] for e in mine] == list(range(1, seq + 2))
    assert mine[-1]["type"] == "call.ended"
    assert mine[-1]["data"]["reason"] == "lost"
    assert mine[-1]["source"]["name"] == "CoreShowChannels"


# -- calls that started while the bridge was away: adopted from CoreShowChannels --------

CALL = "1795883958.1"  # trace 02's call (Linkedid of its first channel)


def cap9_rows(events: list[Event], uids: set[str] | None = None) -> list[Event]:
    """The CoreShowChannel rows of trace 02's own ``CoreShowChannels`` (cap-9), taken
    after AgentConnect: both halves of the caller's Local pair and both agent legs."""
    rows = [e for e in events if e.name == "CoreShowChannel"]
    assert len(rows) == 4
    return [r for r in rows if uids is None or r["Uniqueid"] in uids]


def as_row(ev: Event, **headers: str) -> Event:
    """A CoreShowChannel row for the channel an AMI event describes."""
    return Event({**ev.headers, "Event": "CoreShowChannel", "Application": "Wait",
                  "ApplicationData": "120", "Duration": "00:00:05", **headers})


def seqs_by_call(streams: list[list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for s in streams:
        for e in s:
            out.setdefault(e["call_id"], []).append(e)
    return out


@pytest.mark.parametrize("joined", ["in-queue", "after-cap9"])
async def test_call_started_while_away_is_adopted(traces: Path, redis_url: str,
                                                  joined: str) -> None:
    """The bridge connects mid-call (trace 02's events before the cut are never seen):
    the call is adopted from the CoreShowChannels list, checkpointed (a restart right
    after keeps it), and the rest of the trace makes its events as usual: one ticket,
    seq 1..n without a gap, every event valid."""
    events = trace02(traces)
    if joined == "in-queue":  # caller queued, agent legs not created yet
        cut = next(i for i, e in enumerate(events) if e.name == "QueueCallerJoin") + 1
        rows = cap9_rows(events, {"1795883958.1", "1795883958.2"})
    else:  # right after trace 02's own list: the agent is already connected
        cut = next(i for i, e in enumerate(events) if e.name == "CoreShowChannelsComplete") + 1
        rows = cap9_rows(events)
    # what an uninterrupted builder makes from the events after the cut
    ref = CallEventBuilder(clock=Clock())
    for ev in events[:cut]:
        ref.feed_ami(ev)
    expected = [(e.type, e.data) for ev in events[cut:] for e in ref.feed_ami(ev)]

    cfg = cfg_for(redis_url)
    clock = Clock()
    async with CallEventPipeline(cfg.redis_url, cfg, clock=clock) as first:
        assert await first.resync(first.resync_mark(), rows) == 1
        assert first.builder.unknown_channel_events == 0
    _, states = await outbox_contents(cfg)
    adopted = CallState.from_checkpoint(states[CALL])
    assert (adopted.seq, adopted.channels) == (1, {r["Uniqueid"] for r in rows})
    async with CallEventPipeline(cfg.redis_url, cfg, clock=clock) as second:
        assert second.resumed_calls == 1
        await feed(second, events[cut:])
        assert second.builder.open_calls == 0
        assert second.builder.unknown_channel_events == 0
    streams, states = await outbox_contents(cfg)
    assert states == {}
    mine = seqs_by_call(streams)
    assert list(mine) == [CALL]
    got = mine[CALL]
    for e in got:
        validate_event(e)
        assert e["id"] == event_id(e["call_id"], e["seq"], e["type"])
    assert [e["seq"] for e in got] == list(range(1, len(got) + 1))
    start = got[0]
    assert start["type"] == "call.started"
    assert start["data"] == {"first_channel": CALL, "adopted": True,
                             "source": "CoreShowChannels",
                             "channel": "Local/12345@from-pstn-00000000;1",
                             "first_channel_live": True, "dialled_from": "Exten"}
    assert (start["caller"], start["dialled"], start["language"]) == ("13800138000", "12345",
                                                                       "en")
    assert start["routing"]["queue"] == "hotline"  # from Application: Queue(hotline,…)
    assert start["ts_epoch"] - adopted.started_at == 40.0  # Duration: 00:00:40
    for _, data in expected:  # the adopted call's start is Duration ago: close enough
        data.pop("duration_s", None)
    got[-1]["data"].pop("duration_s")
    if joined == "after-cap9":
        # MixMonitor ran before the cut: without manager.conf channelvars passing
        # MIXMONITOR_FILENAME the list does not say so, hence no recording.ready
        missed = [x for x in expected if x[0] == "recording.ready"]
        assert len(missed) == 1
        expected.remove(missed[0])
    assert [(e["type"], e["data"]) for e in got[1:]] == expected
    types = [t for t, _ in expected]
    assert types[-1] == "call.ended" and got[-1]["data"]["reason"] == "hangup"
    assert "threeway.joined" in types
    if joined == "in-queue":
        assert "recording.ready" in types
        assert types[:3] == ["agent.called", "queue.left", "agent.connected"]
        assert got[3]["routing"]["agent"] == "Agent 1001"


def test_adoption_rules(traces: Path) -> None:
    """What resync adopts, joins, leaves untracked or refuses."""
    events = trace02(traces)
    rows = {r["Uniqueid"]: r for r in cap9_rows(events)}
    by_uid = {e["Uniqueid"]: e for e in events if e.name == "Newchannel"}

    # The caller's first channel is gone but its ;2 half and the agent legs are live:
    # adopted under the Linkedid, the oldest caller-side channel standing for the caller.
    b = CallEventBuilder(clock=Clock(), track_changes=True)
    out = b.resync(b.channels_snapshot(), [rows[u] for u in ("1795883958.2", "1795883995.3",
                                                            "1795883995.4")], now=1000.0)
    assert [(e.type, e.call_id, e.caller, e.data["first_channel_live"], e.data["channel"])
            for e in out] == [("call.started", CALL, "13800138000", False,
                               "Local/12345@from-pstn-00000000;2")]
    call = b.call(CALL)
    assert call is not None and call.agent_channels == {"1795883995.3", "1795883995.4"}
    assert call.started_at == 1000.0 - 40 and [c for c, _ in b.take_dirty()] == [CALL]

    # Only internal legs of an unknown call: untracked, as their Newchannel would be; the
    # department leg (own Linkedid, agent-local) too; their events are not "unknown".
    b = CallEventBuilder(clock=Clock())
    dept = [as_row(by_uid["1795884001.7"]), as_row(by_uid["1795884001.8"])]
    out = b.resync({}, [rows["1795883995.3"], rows["1795883995.4"], *dept])
    assert out == [] and b.open_calls == 0
    for ev in events:
        if ev.name == "Hangup" and ev["Uniqueid"] in ("1795884001.8", "1795883995.4"):
            assert b.feed_ami(ev) == []
    assert b.unknown_channel_events == 0

    # Channels created during the downtime join the call already known (resumed): the
    # agent legs whose Newchannel/AgentCalled were missed count as agent legs.
    k = next(i for i, e in enumerate(events) if e.name == "QueueCallerJoin") + 1
    b = CallEventBuilder(clock=Clock())
    for ev in events[:k]:
        b.feed_ami(ev)
    call = b.call(CALL)
    assert call is not None
    seq = call.seq
    assert b.resync(b.channels_snapshot(), list(rows.values())) == []
    assert call.seq == seq and call.channels == set(rows)
    assert call.agent_channels == {"1795883995.3", "1795883995.4"}

    # A Hangup read after the mark but before the list was handled: not adopted.
    b = CallEventBuilder(clock=Clock())
    mark = b.channels_snapshot()
    hangup = Event({"Event": "Hangup", "Uniqueid": "1795883958.1", "Linkedid": CALL,
                    "Cause": "16"})
    b.feed_ami(hangup)
    out = b.resync(mark, [rows["1795883958.1"]])
    assert out == [] and b.open_calls == 0

    # A call that ended in this process is never opened again under its id.
    b = CallEventBuilder(clock=Clock())
    b.resync({}, [rows["1795883958.1"]])
    assert b.resync(b.channels_snapshot(), []) != [] and b.open_calls == 0
    assert b.resync(b.channels_snapshot(), [rows["1795883958.2"]]) == []
    assert b.open_calls == 0

    # Routing variables passed by manager.conf channelvars are recovered; an extension
    # that is not a number (the dialplan moved the channel) is not taken as dialled.
    b = CallEventBuilder(clock=Clock())
    row = Event({**rows["1795883958.1"].headers, "Context": "ivr-route", "Exten": "s",
                 "ChanVariable": ["IVR_PRIORITY=3", "IVR_ENTRY=12345", "IVR_QUEUE=hotline-en",
                                  "IVR_TAG_anonymous=yes", "IVR_TAG_department=城管",
                                  "IVR_TAG_outcome=x"]})  # a set step that is not routing
    (ev,) = b.resync({}, [row])
    assert (ev.dialled, ev.data["dialled_from"], ev.routing.priority, ev.routing.queue,
            ev.routing.entry, ev.routing.anonymous, ev.routing.department) == (
        "12345", "IVR_ENTRY", 3, "hotline-en", "12345", True, "城管")
    # … and a recording's file, so its recording.ready comes at the Hangup.
    rec = Event({**rows["1795883958.2"].headers,
                 "ChanVariable": "MIXMONITOR_FILENAME=/tmp/cap-rec-1795883996.wav"})
    assert [e.type for e in b.resync({}, [rec])] == []  # joins the adopted call
    hangup = Event({"Event": "Hangup", "Uniqueid": "1795883958.2", "Linkedid": CALL,
                    "Channel": rec["Channel"], "Cause": "16"})
    assert [(e.type, e.data["file"]) for e in b.feed_ami(hangup)] == [
        ("recording.ready", "/tmp/cap-rec-1795883996.wav")]
    b = CallEventBuilder(clock=Clock())
    (ev,) = b.resync({}, [Event({**row.headers, "ChanVariable": []})])
    assert (ev.dialled, ev.data["dialled_from"]) == ("", "unknown")
    validate_event(ev.to_json())


async def test_call_placed_before_the_bridge_connects_gets_a_ticket(redis_url: str) -> None:
    """A call already in progress when the bridge first logs in (no Newchannel seen) is
    adopted from CoreShowChannels; its later Hangup ends it as usual."""
    cfg = cfg_for(redis_url)

    async with Emulator(EmulatorConfig()) as emu:
        call = await emu.place_call(CallerScript(number="13900139000", exten="6001",
                                                 talk_time=None, patience=None))
        hung_up: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_hangup(ev: Event) -> None:  # runs after the bridge's own handler
            if ev.get("Uniqueid") == call.uniqueid and not hung_up.done():
                hung_up.set_result(None)

        app = build_app(bridge_settings(emu, cfg), AppOptions(pusher=False, watch_s=None))
        async with running(app):  # the bridge's start ran the first on_connect hook
            pipe, bridge = app[PIPELINE], app[BRIDGE]
            bridge.ami.on_event("Hangup", on_hangup)
            assert app[CALL_EVENTS].live_channels == 1
            assert pipe.builder.call(call.uniqueid) is not None
            # the live call model's channel table, rebuilt from the list as well
            model = pipe.builder.model
            chan = model.channels.get(call.uniqueid)
            assert chan is not None and [c.uniqueid for c in model.channels_of(
                call.uniqueid)] == [call.uniqueid]
            assert (chan.caller, chan.name) == ("13900139000", call.channel.name)
            emu.pbx.request_hangup(call.channel, 16)
            await hung_up
            await pipe.flush()
            assert pipe.builder.open_calls == 0
            assert len(model.channels) == 0
    streams, states = await outbox_contents(cfg)
    assert states == {}
    got = seqs_by_call(streams)[call.uniqueid]
    for e in got:
        validate_event(e)
    assert [(e["seq"], e["type"]) for e in got] == [(1, "call.started"), (2, "call.ended")]
    start, end = got
    assert start["data"]["adopted"] is True and start["data"]["first_channel_live"] is True
    assert (start["caller"], start["dialled"]) == ("13900139000", "6001")
    assert start["source"] == {"kind": "ami", "name": "CoreShowChannels",
                               "uniqueid": call.uniqueid}
    assert end["data"]["reason"] == "hangup" and end["data"]["cause"] == 16
