"""Recordings after the call (ivr/recordings): real audio files (stdlib ``wave``), real
ffmpeg, a real Redis.  Trace 12's MixMonitor (``b``, ``r()``/``t()`` legs, no
``MixMonitorStop`` when the recorded channel hangs up) drives the builder; the worker
archives the legs as stereo and emits ``recording.ready`` after ``call.ended``."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import struct
import subprocess
import uuid
import wave
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from ivr.dialplan import load_definition
from ivr.events.builder import CallEventBuilder
from ivr.events.config import EventsConfig
from ivr.events.model import CallEvent
from ivr.events.outbox import keys_for
from ivr.events.pipeline import CallEventPipeline
from ivr.events.schema import validate_event
from ivr.recordings.audio import legs_of, process
from ivr.recordings.errors import ProcessingError
from ivr.recordings.policy import RecordingPolicy, Rule
from ivr.recordings.service import RecordingsConfig, RecordingWorker
from ivr.recordings.store import AUDIT_FILE, archive_path, purge
from ivr.sim.synth_calls import load_trace

ROOT = Path(__file__).resolve().parent.parent
RATE = 8000
TRACE12_FILE = b"/tmp/cap12-1796521808"
TRACE12_CALL = "1796521807.0"
TRACE12 = ROOT / "tests/data/asterisk-traces/12-threeway-conference-ops/ami.server.raw"


def write_wav(path: Path, parts: list[tuple[float, float]], rate: int = RATE) -> None:
    """A mono 16-bit WAV of (seconds, tone Hz) parts; 0 Hz = silence."""
    frames = bytearray()
    for seconds, hz in parts:
        for i in range(int(seconds * rate)):
            v = 0 if hz == 0 else int(12000 * math.sin(2 * math.pi * hz * i / rate))
            frames += struct.pack("<h", v)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))


def mixmonitor_files(stem: Path) -> Path:
    """What MixMonitor with b, r(<stem>-in.wav), t(<stem>-out.wav) leaves: the caller
    speaks for 1 s, then the agent for 1 s (2.5 s recorded)."""
    raw = stem.with_suffix(".wav")
    write_wav(raw, [(1.0, 440), (1.0, 660), (0.5, 0)])
    left, right = legs_of(raw)
    write_wav(left, [(1.0, 440), (1.5, 0)])  # r(): what the caller's channel reads
    write_wav(right, [(1.0, 0), (1.0, 660), (0.5, 0)])  # t(): what the caller hears
    return raw


def decode(path: Path, channels: int) -> list[list[int]]:
    """The archive decoded by ffmpeg itself (not by the code under test)."""
    pcm = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path),
                          "-f", "s16le", "-acodec", "pcm_s16le", "-ar", str(RATE), "-"],
                         check=True, capture_output=True).stdout
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    return [list(samples[c::channels]) for c in range(channels)]


def rms(xs: list[int]) -> float:
    return math.sqrt(sum(x * x for x in xs) / max(len(xs), 1))


def ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                          "stream=channels,codec_name:format=duration", "-of", "json",
                          str(path)], check=True, capture_output=True, text=True).stdout
    obj: dict[str, Any] = json.loads(out)
    return obj


# ----------------------------------------------------------------- one recording


@pytest.mark.parametrize("fmt", ["mp3", "opus"])
def test_stereo_archive_from_the_legs_caller_left_agent_right(tmp_path: Path, fmt: str) -> None:
    raw = mixmonitor_files(tmp_path / "rec")
    dest = tmp_path / "out" / f"rec.{fmt}"
    arc = process(raw, dest, Rule(format=fmt))
    assert arc.path == dest and dest.is_file() and not dest.with_name(dest.name + ".part").exists()
    assert arc.channels == 2 and arc.format == fmt
    assert arc.duration_s == pytest.approx(2.5, abs=0.01)
    assert arc.sha256 == hashlib.sha256(dest.read_bytes()).hexdigest()
    probe = ffprobe(dest)
    assert probe["streams"][0]["channels"] == 2
    assert probe["streams"][0]["codec_name"] == {"mp3": "mp3", "opus": "opus"}[fmt]
    assert float(probe["format"]["duration"]) == pytest.approx(2.5, abs=0.2)  # codec padding
    left, right = decode(dest, 2)
    # skip the codec's delay around the switch: 0.2-0.8 s caller only, 1.2-1.8 s agent only
    a, b = slice(int(0.2 * RATE), int(0.8 * RATE)), slice(int(1.2 * RATE), int(1.8 * RATE))
    # ≥ 20 dB apart (Opus at 24 kb/s codes stereo jointly: about 25 dB of crosstalk)
    assert rms(left[a]) > 10 * max(rms(right[a]), 1.0)
    assert rms(right[b]) > 10 * max(rms(left[b]), 1.0)
    # normalised: the peak is near -3 dBFS (0.708 of full scale), whatever came in
    peak = max(max(abs(x) for x in left), max(abs(x) for x in right))
    assert 0.6 * 32768 < peak < 0.8 * 32768
    # the raw files are untouched
    assert all(p.is_file() for p in (raw, *legs_of(raw)))


def test_mono_archive_mixes_the_legs(tmp_path: Path) -> None:
    raw = mixmonitor_files(tmp_path / "rec")
    arc = process(raw, tmp_path / "rec.mp3", Rule(channels="mono"))
    assert arc.channels == 1 and ffprobe(arc.path)["streams"][0]["channels"] == 1
    (mono,) = decode(arc.path, 1)
    assert rms(mono[int(0.2 * RATE):int(0.8 * RATE)]) > 1000  # caller
    assert rms(mono[int(1.2 * RATE):int(1.8 * RATE)]) > 1000  # agent


def test_unreadable_raw_file_is_a_processing_error_and_nothing_is_written(
        tmp_path: Path) -> None:
    raw = tmp_path / "rec.wav"
    raw.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(ProcessingError, match=r"rec\.wav: post-processing failed"):
        process(raw, tmp_path / "out" / "rec.mp3", Rule())
    assert raw.read_bytes() == b"RIFF not really a wave file"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_layout_by_date_and_call(tmp_path: Path) -> None:
    p = archive_path(tmp_path, "1796521807.0", 1796521807.0, "cap12-1796521808", "mp3")
    assert p.relative_to(tmp_path).as_posix() == "2026/12/06/1796521807.0/cap12-1796521808.mp3"
    # a call id cannot climb out of the tree
    bad = archive_path(tmp_path, "../../etc", 0.0, "../x", "mp3")
    assert bad.parent.parent == tmp_path / "1970" / "01" / "01" and bad.parent.name != ".."


# ----------------------------------------------------------------- retention


def test_purge_deletes_old_days_only_with_an_audit_line_per_file(tmp_path: Path) -> None:
    now = 1796521807.0  # 2026-12-06
    old = archive_path(tmp_path, "old.1", now - 40 * 86400, "a", "mp3")
    old2 = archive_path(tmp_path, "old.2", now - 31 * 86400, "b", "opus")
    kept = archive_path(tmp_path, "new.1", now - 29 * 86400, "c", "mp3")
    for p in (old, old2, kept):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * 10)
    dry = purge(tmp_path, 30, now, dry_run=True)
    assert dry.files == 2 and old.exists() and not (tmp_path / AUDIT_FILE).exists()
    result = purge(tmp_path, 30, now)
    assert (result.files, result.bytes) == (2, 20)
    assert not old.exists() and not old2.exists() and kept.exists()
    assert not old.parent.parent.exists()  # the day folder went with it
    lines = [json.loads(x) for x in (tmp_path / AUDIT_FILE).read_text().splitlines()]
    assert sorted(x["path"] for x in lines) == sorted(
        p.relative_to(tmp_path).as_posix() for p in (old, old2))
    assert all(x["action"] == "purge" and x["retention_days"] == 30 and x["bytes"] == 10
               for x in lines)
    assert purge(tmp_path, 30, now).files == 0  # nothing twice


# ----------------------------------------------------------------- the worker


class Clock:
    def __init__(self, t: float = 1796521900.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def trace12_with_files(tmp_path: Path) -> tuple[list[Any], Path]:
    """Trace 12 with its MixMonitor files under ``tmp_path`` (and real audio there)."""
    stem = tmp_path / "spool" / "cap12-1796521808"
    stem.parent.mkdir()
    raw = mixmonitor_files(stem)
    text = TRACE12.read_bytes().replace(TRACE12_FILE, str(stem).encode())
    copy = tmp_path / "ami.server.raw"
    copy.write_bytes(text)
    return load_trace(copy), raw


def cfg_for(redis_url: str) -> EventsConfig:
    return EventsConfig(redis_url=redis_url, stream_prefix=f"test:{uuid.uuid4().hex[:8]}",
                        partitions=2)


async def outbox_events(cfg: EventsConfig, call_id: str) -> list[dict[str, Any]]:
    r = aioredis.from_url(cfg.redis_url, decode_responses=True)
    try:
        out: list[dict[str, Any]] = []
        for stream in keys_for(cfg).streams:
            rows: Any = await r.xrange(stream)
            out += [e for _, f in rows if (e := json.loads(f["e"]))["call_id"] == call_id]
    finally:
        await r.aclose()
    return sorted(out, key=lambda e: int(e["seq"]))


def rec_config(tmp_path: Path, **kw: Any) -> RecordingsConfig:
    return RecordingsConfig(dir=tmp_path / "archive", prefix=f"test:rec:{uuid.uuid4().hex[:8]}",
                            **kw)


async def test_trace12_recording_is_archived_and_recording_ready_follows_call_ended(
        tmp_path: Path, redis_url: str) -> None:
    events, raw = trace12_with_files(tmp_path)
    cfg = cfg_for(redis_url)
    policy = load_definition(ROOT / "dialplans").recordings
    r = aioredis.from_url(redis_url)
    try:
        async with CallEventPipeline(cfg.redis_url, cfg) as pipe:
            worker = RecordingWorker(rec_config(tmp_path, poll_s=30.0), r,
                                     policy=lambda: policy, emit=pipe.outbox.write)
            pipe.add_listener(worker.on_call_events)
            async with worker:
                ready = worker.wait_for(TRACE12_CALL)
                for ev in events:
                    await pipe.on_ami_event(ev)
                got = await asyncio.wait_for(ready, 30)
        stored = await outbox_events(cfg, TRACE12_CALL)
    finally:
        await r.aclose()
    assert [e["seq"] for e in stored] == list(range(1, len(stored) + 1))  # no gap
    # the department is still in the conference when the caller's channel goes: the
    # conference ends with the call
    assert [e["type"] for e in stored][-4:] == ["recording.ready", "threeway.ended",
                                                 "call.ended", "recording.ready"]
    closed, _conf_end, ended, archived = stored[-4:]
    assert "stage" not in closed["data"]  # the builder's: the file is closed at Hangup
    assert archived["seq"] == ended["seq"] + 1 == got[0].seq
    validate_event(archived)
    data = archived["data"]
    assert data["stage"] == "archived" and data["file"] == str(raw)
    assert data["channel"] == "Local/6000@from-pstn-00000000;2"
    assert data["format"] == "mp3" and data["channels"] == 2
    assert data["duration_s"] == pytest.approx(2.5, abs=0.01)
    path = tmp_path / "archive" / str(data["location"])
    day = archived["call_started_at"][:10].replace("-", "/")  # UTC day the call started
    assert data["location"] == f"{day}/{TRACE12_CALL}/cap12-1796521808.mp3"
    assert path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == data["sha256"]
    assert archived["routing"] == ended["routing"]
    assert archived["call_started_at"] == ended["call_started_at"]
    # verified and stored: the raw files are gone
    assert not raw.exists() and not any(p.exists() for p in legs_of(raw))
    assert CallEvent.from_json(archived).data["sha256"] == data["sha256"]


async def _close_call(worker: RecordingWorker, raw: Path) -> None:
    """Trace 12's call through the builder: its recording.ready (file = ``raw``) and its
    call.ended, into the worker's durable intake."""
    builder = CallEventBuilder(clock=lambda: 1796521807.0)
    built: list[CallEvent] = []
    for e in load_trace(TRACE12):
        built += builder.feed_ami(e)
    for ev in built:
        if ev.type == "recording.ready":
            ev = replace(ev, data={**ev.data, "file": str(raw)})
        if ev.type in ("recording.ready", "call.ended"):
            await worker.take(ev)


async def test_failed_attempt_is_retried_with_backoff_after_a_restart_and_keeps_the_raw(
        tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = mixmonitor_files(tmp_path / "rec")
    clock = Clock()
    emitted: list[CallEvent] = []

    async def emit(events: list[CallEvent]) -> None:
        emitted.extend(events)

    config = rec_config(tmp_path, backoff_base_s=10.0)
    r = aioredis.from_url(redis_url)
    try:
        first = RecordingWorker(config, r, policy=RecordingPolicy, emit=emit, clock=clock)
        await _close_call(first, raw)
        empty = tmp_path / "no-ffmpeg"
        empty.mkdir()
        monkeypatch.setenv("PATH", str(empty))  # ffmpeg missing for this attempt
        assert await first.run_due() == 0
        monkeypatch.undo()
        assert first.failed_attempts == 1 and not emitted
        assert all(p.is_file() for p in (raw, *legs_of(raw)))  # raw kept
        assert not any((tmp_path / "archive").rglob("*.mp3"))
        assert not any((tmp_path / "archive").rglob("*.part"))
        status = await first.queue.status(clock())
        assert (status.jobs, status.due_now, status.dead) == (1, 0, 0)
        clock.t += 9.0  # back-off: not due yet
        assert await first.run_due() == 0 and first.failed_attempts == 1
        # the process restarts: a new worker finds the durable job and succeeds
        clock.t += 1.5
        second = RecordingWorker(config, r, policy=RecordingPolicy, emit=emit, clock=clock)
        assert await second.run_due() == 1
        assert [e.type for e in emitted] == ["recording.ready"]
        data = emitted[0].data
        path = config.dir / str(data["location"])
        assert hashlib.sha256(path.read_bytes()).hexdigest() == data["sha256"]
        assert data["duration_s"] == pytest.approx(2.5, abs=0.01)
        assert not raw.exists()  # deleted only now, after the archive was verified
        status = await second.queue.status(clock())
        assert (status.jobs, status.due_now, status.dead) == (0, 0, 0)
    finally:
        await r.aclose()


async def test_job_failing_every_attempt_is_parked_with_the_raw_kept(
        tmp_path: Path, redis_url: str) -> None:
    raw = tmp_path / "rec.wav"
    raw.write_bytes(b"not audio")
    clock = Clock()

    async def emit(events: list[CallEvent]) -> None:
        raise AssertionError("nothing is emitted")

    config = rec_config(tmp_path, backoff_base_s=1.0, max_attempts=3)
    r = aioredis.from_url(redis_url)
    try:
        worker = RecordingWorker(config, r, policy=RecordingPolicy, emit=emit, clock=clock)
        await _close_call(worker, raw)
        for _ in range(3):
            await worker.run_due()
            clock.t += 60
        status = await worker.queue.status(clock())
        assert (status.jobs, status.dead) == (0, 1)
        assert status.dead_jobs[0].attempts == 3
        assert "post-processing failed" in status.dead_jobs[0].last_error
        assert raw.read_bytes() == b"not audio"
        assert await worker.queue.retry_dead(clock()) == 1
        assert (await worker.queue.status(clock())).due_now == 1
    finally:
        await r.aclose()


async def test_an_emit_that_fails_is_a_failed_attempt_not_a_dead_worker(
        tmp_path: Path, redis_url: str) -> None:
    """The outbox refuses (it is closed): the attempt fails, the archive is redone and the
    event stored on the next attempt; the raw files stay until then."""
    raw = mixmonitor_files(tmp_path / "rec")
    clock = Clock()
    cfg = cfg_for(redis_url)
    closed = CallEventPipeline(cfg.redis_url, cfg)
    await closed.start()
    await closed.close()  # its outbox.write raises RuntimeError("outbox is closed")
    config = rec_config(tmp_path, backoff_base_s=1.0)
    r = aioredis.from_url(redis_url)
    try:
        worker = RecordingWorker(config, r, policy=RecordingPolicy, emit=closed.outbox.write,
                                 clock=clock)
        await _close_call(worker, raw)
        assert await worker.run_due() == 0
        assert worker.failed_attempts == 1 and raw.is_file()
        status = await worker.queue.status(clock())
        assert status.jobs == 1 and status.dead == 0
        async with CallEventPipeline(cfg.redis_url, cfg) as pipe:
            worker = RecordingWorker(config, r, policy=RecordingPolicy,
                                     emit=pipe.outbox.write, clock=clock)
            clock.t += 1.0
            assert await worker.run_due() == 1
        stored = await outbox_events(cfg, TRACE12_CALL)
        assert [e["data"]["stage"] for e in stored] == ["archived"] and not raw.exists()
    finally:
        await r.aclose()
