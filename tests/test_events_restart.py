"""A restarted bridge continues the calls in progress: call state is checkpointed in Redis
with the events (same script call), resumed by the next process, and calls whose
channels hung up while no bridge was listening are ended after the AMI (re)connect."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from ivr.agi.channel import AGIChannel
from ivr.ami.messages import Event
from ivr.bridge import Bridge
from ivr.config import load_settings
from ivr.demo import SIM_AMI_SECRET, SIM_AMI_USER
from ivr.events import outbox as outbox_mod
from ivr.events.builder import CallEventBuilder, CallState
from ivr.events.config import EventsConfig
from ivr.events.model import CallEvent, event_id
from ivr.events.outbox import calls_key, keys_for
from ivr.events.pipeline import CallEventPipeline
from ivr.events.synth import load_call_template, load_trace, synth_call
from ivr.sim.emulator import Emulator, EmulatorConfig


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
        states: Any = await r.hgetall(calls_key(keys))
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
    assert CallState.from_checkpoint(text).seq == max(
        e["seq"] for s in streams for e in s if e["call_id"] == call_id)

    async with CallEventPipeline(cfg.redis_url, cfg, clock=clock) as second:
        assert second.resumed_calls == 1
        resumed = second.builder.call(call_id)
        assert resumed is not None and resumed == before  # routing, channels, seq, times…
        assert (resumed.queue, resumed.tags, resumed.language, len(resumed.channels)) == (
            "hotline", ["vip"], "zh", 4)
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

    async def no_ivr(channel: AGIChannel) -> None:
        return None

    settings = load_settings(env={})
    async with Emulator(EmulatorConfig()) as emu, \
            CallEventPipeline(cfg.redis_url, cfg, clock=clock) as second:
        assert second.resumed_calls == 1
        bridge = Bridge(replace(settings, ami_host="127.0.0.1", ami_port=emu.ami_port,
                                ami_user=SIM_AMI_USER, ami_secret=SIM_AMI_SECRET,
                                agi_host="127.0.0.1", agi_port=0),
                        ivr_handler=no_ivr, pipeline=second)
        async with bridge:  # start() returns after the first on_connect hook ran
            assert bridge.live_channels == 0
            await second.flush()
            assert second.builder.open_calls == 0
    streams, states = await outbox_contents(cfg)
    assert states == {}
    mine = [e for s in streams for e in s if e["call_id"] == call_id]
    assert [e["seq"] for e in mine] == list(range(1, seq + 2))
    assert mine[-1]["type"] == "call.ended"
    assert mine[-1]["data"]["reason"] == "lost"
    assert mine[-1]["source"]["name"] == "CoreShowChannels"
