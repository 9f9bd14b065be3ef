"""Service-level figures (ivr/agents/levels.py): the definitions on hand-made event
sequences, and end to end on the recorded traces through the call-event builder."""

from __future__ import annotations

import json
import time
import uuid
from datetime import date, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ivr.agents.levels import HOTLINE_TZ, LevelsAggregator, interval_start
from ivr.agents.levels_store import read_levels
from ivr.ami.messages import Event
from ivr.demo import SIM_AMI_SECRET, SIM_AMI_USER
from ivr.events.builder import CallEventBuilder
from ivr.events.config import EventsConfig
from ivr.events.levels import LevelRecord, is_level_type
from ivr.events.model import CallEvent, Routing, Source, event_id
from ivr.events.outbox import keys_for
from ivr.events.pipeline import CallEventPipeline
from ivr.sim import Emulator, EmulatorConfig
from ivr.sim.clock import VirtualClock
from ivr.sim.synth_calls import load_call_template, load_trace, synth_call
from tests.test_agents_cli import ivr
from tests.test_agents_e2e import dialplans_with_desk, etc_with_desk

# 2026-12-06 10:00:00 Asia/Shanghai (= 02:00 UTC)
T0 = datetime(2026, 12, 6, 10, 0, tzinfo=HOTLINE_TZ).timestamp()
DAY = date(2026, 12, 6)


class Call:
    """Hand-made events of one call, seq numbered as the builder does."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.seq = 0

    def ev(self, type_: str, at: float, queue: str | None = None,
           **data: str | int | float) -> CallEvent:
        self.seq += 1
        if queue is not None:
            data = {"queue": queue, **data}
        return CallEvent(id=event_id(self.call_id, self.seq, type_), type=type_,
                         call_id=self.call_id, seq=self.seq, ts=T0 + at,
                         call_started_at=T0, dialled="12345", caller="13800138000",
                         language="zh", routing=Routing(entry="12345", queue=queue),
                         source=Source("ami", "test"), data=dict(data))


def answered(call_id: str, queue: str, join: float, wait: int) -> list[CallEvent]:
    c = Call(call_id)
    return [c.ev("call.started", join - 5), c.ev("queue.joined", join, queue),
            c.ev("agent.called", join + 1, queue), c.ev("queue.left", join + wait, queue),
            c.ev("agent.connected", join + wait, queue, hold_time_s=wait),
            c.ev("agent.completed", join + wait + 60, queue), c.ev("call.ended", join + wait + 61)]


def abandoned(call_id: str, queue: str, join: float, wait: int) -> list[CallEvent]:
    c = Call(call_id)
    return [c.ev("call.started", join - 5), c.ev("queue.joined", join, queue),
            c.ev("queue.abandoned", join + wait, queue, hold_time_s=wait),
            c.ev("queue.left", join + wait, queue), c.ev("call.ended", join + wait)]


def test_answered_within_and_after_15_s_and_the_rates() -> None:
    agg = LevelsAggregator()
    agg.fold_all(answered("a", "hotline", 10, 15) + answered("b", "hotline", 20, 16)
                 + abandoned("c", "hotline", 30, 40) + abandoned("d", "hotline", 40, 4))
    f = agg.day("hotline", DAY)
    assert (f.offered, f.answered, f.answered_15s) == (4, 2, 1)
    assert (f.abandoned, f.abandoned_short) == (1, 1)  # 4 s is a short abandon, apart
    assert f.answer_rate == round(2 / 3, 4)  # short abandons left out of the base
    assert f.answer_rate_15s == round(1 / 3, 4)
    assert f.longest_wait_s == 40 and f.average_wait_s == (15 + 16 + 40 + 4) / 4


def test_intervals_are_15_minutes_in_shanghai_time_by_arrival() -> None:
    agg = LevelsAggregator()
    # joins at 10:14:50, answered after 30 s (10:15:20): counted in 10:00-10:15
    agg.fold_all(answered("a", "hotline", 14 * 60 + 50, 30) + answered("b", "hotline", 15 * 60, 3))
    rows = agg.intervals("hotline")
    assert [(s.strftime("%H:%M"), f.offered, f.answered) for _, s, f in rows] == [
        ("10:00", 1, 1), ("10:15", 1, 1)]
    assert agg.interval("hotline", T0 + 14 * 60).answered_15s == 0
    assert agg.interval("hotline", T0 + 16 * 60).answered_15s == 1
    # the day boundary is midnight in Shanghai (16:00 UTC the day before), not UTC's
    midnight = datetime(2026, 12, 7, tzinfo=HOTLINE_TZ).timestamp() - T0
    agg.fold_all(answered("late", "hotline", midnight - 10, 3)
                 + answered("next", "hotline", midnight + 10, 3))
    assert agg.day("hotline", DAY).offered == 3
    assert agg.day("hotline", date(2026, 12, 7)).offered == 1
    assert interval_start(T0 + midnight).isoformat() == "2026-12-07T00:00:00+08:00"


def test_a_call_joining_two_queues_is_offered_in_each_and_answered_once() -> None:
    c = Call("x")
    evs = [c.ev("call.started", 0), c.ev("queue.joined", 1, "hotline"),
           c.ev("queue.left", 20, "hotline"), c.ev("queue.joined", 21, "enterprise"),
           c.ev("agent.connected", 30, "enterprise", hold_time_s=9),
           c.ev("call.ended", 90)]
    agg = LevelsAggregator()
    agg.fold_all(evs)
    hot, ent = agg.day("hotline", DAY), agg.day("enterprise", DAY)
    assert (hot.offered, hot.answered, hot.abandoned) == (1, 0, 0)  # left: timed out
    assert (ent.offered, ent.answered, ent.answered_15s) == (1, 1, 1)
    total = agg.day(None, DAY)
    assert (total.offered, total.answered) == (2, 1)


def test_requeued_in_the_same_queue_is_one_entry() -> None:
    c = Call("r")
    evs = [c.ev("queue.joined", 0, "hotline"), c.ev("queue.left", 30, "hotline"),
           c.ev("queue.joined", 31, "hotline"),
           c.ev("agent.connected", 40, "hotline", hold_time_s=9),
           c.ev("queue.abandoned", 41, "hotline", hold_time_s=10)]
    agg = LevelsAggregator()
    agg.fold_all(evs)
    f = agg.day("hotline", DAY)
    assert (f.offered, f.answered, f.abandoned) == (1, 1, 0)


def test_duplicated_and_replayed_events_count_once() -> None:
    evs = answered("a", "hotline", 0, 5) + abandoned("b", "hotline", 0, 20)
    agg = LevelsAggregator()
    agg.fold_all(evs)
    agg.fold_all(evs)  # the whole day again
    agg.fold(evs[4])  # one event again
    f = agg.day("hotline", DAY)
    assert (f.offered, f.answered, f.abandoned) == (2, 1, 1)
    assert evs[4].type == "agent.connected"
    assert agg.duplicates == sum(is_level_type(e.type) for e in evs) + 1


def test_callbacks_counted_per_type_and_queue() -> None:
    c = Call("cb")
    evs = [c.ev("call.started", 0), c.ev("queue.joined", 1, "hotline"),
           c.ev("callback.requested", 20, "hotline", number="13800138000", step="cb"),
           c.ev("queue.abandoned", 21, "hotline", hold_time_s=20), c.ev("call.ended", 22)]
    agg = LevelsAggregator()
    agg.fold_all(evs)
    f = agg.day("hotline", DAY)
    assert f.callbacks == {"requested": 1} and f.abandoned == 1


def test_window_counts_only_entries_that_began_in_it() -> None:
    start, end = T0 + 60, T0 + 3600
    agg = LevelsAggregator(window=(start, end))
    agg.fold_all(answered("early", "hotline", 30, 40) + answered("in", "hotline", 100, 5))
    f = agg.day("hotline", DAY)
    assert (f.offered, f.answered) == (1, 1)


def test_memory_is_released_when_calls_end() -> None:
    agg = LevelsAggregator()
    for i in range(50):
        agg.fold_all(answered(f"c{i}", "hotline", i, 3))
    assert not agg._entries and not agg._open
    assert agg.day("hotline", DAY).offered == 50


def test_report_json_shape() -> None:
    agg = LevelsAggregator()
    agg.fold_all(answered("a", "hotline", 0, 5))
    rep = agg.report(DAY, now=T0 + 60)
    q = rep["queues"][0]
    assert rep["time_zone"] == "Asia/Shanghai" and rep["total"]["offered"] == 1
    assert q["current_interval"]["start"] == "2026-12-06T10:00:00+08:00"
    assert q["day"]["answer_rate"] == 1.0 and len(q["intervals"]) == 1


# -- end to end: the recorded traces through the builder -------------------------------

def build(traces: Path, scenario: str) -> list[CallEvent]:
    b = CallEventBuilder(clock=lambda: 1_795_883_958.5)
    out: list[CallEvent] = []
    for ev in load_trace(next(traces.glob(f"{scenario}*")) / "ami.server.raw"):
        out.extend(b.feed_ami(ev))
    return out


def _day_of(events: list[CallEvent]) -> date:
    return datetime.fromtimestamp(events[0].ts, HOTLINE_TZ).date()


def test_trace02_one_call_answered_in_hotline(traces: Path) -> None:
    events = build(traces, "02")
    agg = LevelsAggregator()
    agg.fold_all(events)
    connected = next(e for e in events if e.type == "agent.connected")
    f = agg.day("hotline", _day_of(events))
    assert (f.offered, f.answered, f.abandoned, f.abandoned_short) == (1, 1, 0, 0)
    assert f.answered_15s == (1 if int(str(connected.data["hold_time_s"])) <= 15 else 0)
    assert f.longest_wait_s == float(str(connected.data["hold_time_s"]))
    assert agg.queues() == ["hotline"]


def test_trace07_short_abandon_in_queue_nobody(traces: Path) -> None:
    events = build(traces, "07")
    agg = LevelsAggregator()
    agg.fold_all(events)
    f = agg.day("nobody", _day_of(events))
    # the caller hung up after 4 s in the queue: a short abandon, not in the rate's base
    assert (f.offered, f.answered, f.abandoned, f.abandoned_short) == (1, 0, 0, 1)
    assert f.answer_rate == 0.0 and f.longest_wait_s == 4


def test_traces_together_and_twice(traces: Path) -> None:
    events = [e for s in ("02", "04", "07", "08") for e in build(traces, s)]
    agg = LevelsAggregator()
    agg.fold_all(events)
    once = agg.report(_day_of(events))
    agg.fold_all(events)
    assert agg.report(_day_of(events)) == once
    joins = {(e.call_id, e.data["queue"]) for e in events if e.type == "queue.joined"}
    assert sum(q["day"]["offered"] for q in once["queues"]) == len(joins)


# -- rebuilt from the durable levels stream in Redis ----------------------------------

def _ami(traces: Path, scenario: str) -> list[Event]:
    return load_trace(next(traces.glob(f"{scenario}*")) / "ami.server.raw")


class NowClock:
    """A wall clock from now on, 0.25 s per reading (the traces have no Timestamp)."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        self.t += 0.25
        return self.t


async def test_figures_rebuilt_from_redis_after_delivery_and_duplicates(
        traces: Path, redis_url: str) -> None:
    cfg = EventsConfig(redis_url=redis_url, stream_prefix=f"test:{uuid.uuid4().hex[:8]}",
                       partitions=4)
    keys = keys_for(cfg)
    async with CallEventPipeline(cfg.redis_url, cfg, clock=NowClock()) as pipe:
        for ev in _ami(traces, "02") + _ami(traces, "07"):
            await pipe.on_ami_event(ev)
    r = aioredis.from_url(redis_url)
    try:
        day = datetime.fromtimestamp(time.time(), HOTLINE_TZ).date()
        before = (await read_levels(r, keys, day)).report(day)
        # the pusher delivered everything: the partition streams are emptied
        for stream in keys.streams:
            await r.delete(stream)
        after = (await read_levels(r, keys, day)).report(day)
        assert after == before
        by_queue = {q["queue"]: q["day"] for q in after["queues"]}
        assert (by_queue["hotline"]["offered"], by_queue["hotline"]["answered"]) == (1, 1)
        assert (by_queue["nobody"]["offered"], by_queue["nobody"]["abandoned_short"]) == (1, 1)
        # a batch written twice (a retried script) and a small chunk size: same figures
        rows = await r.xrange(keys.levels)
        for _, fields in rows:
            await r.xadd(keys.levels, fields)
        await r.xadd(keys.levels, {"l": "not a record"})  # unreadable: skipped
        again = (await read_levels(r, keys, day, chunk=2)).report(day)
        assert again == before
        # only level events were copied; none of the IVR/recording/threeway ones
        types = {LevelRecord.loads(f[b"l"]).type for _, f in rows}
        assert types <= {"queue.joined", "queue.abandoned", "agent.connected", "call.ended"}
        assert "queue.joined" in types and "call.ended" in types
        # another day of the same stream: nothing
        other = (await read_levels(r, keys, date(2020, 1, 1))).report(date(2020, 1, 1))
        assert other["queues"] == [] and other["total"]["offered"] == 0
    finally:
        await r.aclose()


async def test_queues_status_shows_todays_figures_and_the_interval(
        traces: Path, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    prefix = f"test:{uuid.uuid4().hex[:8]}"
    cfg = EventsConfig(redis_url=redis_url, stream_prefix=prefix, partitions=4)
    async with CallEventPipeline(cfg.redis_url, cfg, clock=NowClock()) as pipe:
        for ev in _ami(traces, "02"):  # one call answered in "hotline"
            await pipe.on_ami_event(ev)
    async with Emulator(EmulatorConfig(etc=etc_with_desk(tmp_path),
                                       clock=VirtualClock())) as emu:
        for key, value in {"IVR_AMI_HOST": "127.0.0.1", "IVR_AMI_PORT": str(emu.ami_port),
                           "IVR_AMI_USER": SIM_AMI_USER, "IVR_AMI_SECRET": SIM_AMI_SECRET,
                           "IVR_DIALPLANS_DIR": str(dialplans_with_desk(tmp_path)),
                           "IVR_ASTERISK_CONF_DIR": str(tmp_path / "conf"),
                           "IVR_REDIS_URL": redis_url, "IVR_EVENTS_PREFIX": prefix}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("IVR_CONFIG", raising=False)

        code, out, err = await ivr(capsys, "queues", "status", "--json")
        assert code == 0, err
        doc = json.loads(out)
        queues = {q["queue"]: q for q in doc["queues"]}
        hot = queues["hotline"]["levels"]
        assert (hot["today"]["offered"], hot["today"]["answered"]) == (1, 1)
        assert hot["today"]["answer_rate"] == 1.0
        assert "agents_by_state" in queues["hotline"]  # the live state, beside the figures
        assert queues["desk"]["levels"]["today"]["offered"] == 0
        assert doc["levels"]["time_zone"] == "Asia/Shanghai" and doc["levels_error"] is None

        code, out, err = await ivr(capsys, "queues", "status", "hotline")
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].startswith("hotline: ")
        assert lines[1].startswith("  today 今日 ") and "offered 来电 1" in lines[1]
        assert "answer rate 接通率 100.0 %" in lines[1]
        assert lines[2].startswith("  now 本时段 ")

        monkeypatch.setenv("IVR_REDIS_URL", "redis://127.0.0.1:1/0")  # nobody listens
        code, out, err = await ivr(capsys, "queues", "status")
        assert code == 0, err
        assert "service levels unavailable / 服务水平数据不可用: cannot read Redis" in out


def _synth(traces: Path, n: int) -> list[list[Event]]:
    template = load_call_template(next(traces.glob("02*")) / "ami.server.raw")
    return [synth_call(template, i) for i in range(n)]


async def test_many_calls_and_a_crashed_bridge_mid_stream(traces: Path, redis_url: str) -> None:
    """60 synthetic trace-02 calls, interleaved, the bridge crashing (nothing flushed)
    half-way and a new one continuing: every call offered and answered once."""
    calls = _synth(traces, 60)
    stream = [ev for group in zip(*calls, strict=True) for ev in group]  # interleaved
    cfg = EventsConfig(redis_url=redis_url, stream_prefix=f"test:{uuid.uuid4().hex[:8]}",
                       partitions=4)
    clock = NowClock()
    half = len(stream) // 2
    first = CallEventPipeline(cfg.redis_url, cfg, clock=clock)
    await first.start()
    for ev in stream[:half]:
        await first.on_ami_event(ev)  # returns once its events are in Redis
    await first.outbox.close(flush=False)  # the process dies
    await first.redis.aclose()
    async with CallEventPipeline(cfg.redis_url, cfg, clock=clock) as second:
        for ev in stream[half:]:
            await second.on_ami_event(ev)
    r = aioredis.from_url(redis_url)
    try:
        day = datetime.fromtimestamp(time.time(), HOTLINE_TZ).date()
        agg = await read_levels(r, keys_for(cfg), day, chunk=50)
    finally:
        await r.aclose()
    f = agg.day("hotline", day)
    assert (f.offered, f.answered, f.abandoned, f.abandoned_short) == (60, 60, 0, 0)
    assert agg.duplicates == 0 and not agg._entries  # every call ended
