"""``ivr recordings process|status|purge`` on real files and a real Redis."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ivr.cli import main
from ivr.events.model import Routing
from ivr.recordings.service import JobQueue
from ivr.recordings.state import CallFacts, Job, RawRecording
from ivr.recordings.store import AUDIT_FILE, archive_path
from tests.test_recordings import mixmonitor_files

ROOT = Path(__file__).resolve().parent.parent


def settings_file(tmp_path: Path, redis_url: str = "", prefix: str = "") -> Path:
    path = tmp_path / "ivr.toml"
    redis = f'[redis]\nurl = "{redis_url}"\n' if redis_url else ""
    if prefix:
        redis += f'[events]\nstream_prefix = "{prefix}"\n'
    path.write_text(f"""{redis}
[paths]
dialplans_dir = "{ROOT / 'dialplans'}"
asterisk_conf_dir = "{tmp_path / 'conf'}"
[recordings]
dir = "archive"
retention_days = 30
""", "utf-8")
    return path


def test_process_archives_files_by_the_policy_and_keeps_the_raw(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = mixmonitor_files(tmp_path / "rec")
    cfg = settings_file(tmp_path)
    assert main(["recordings", "process", "--config", str(cfg), str(raw), "--call-id",
                 "1796521807.0", "--started", "2026-12-06T01:02:03Z", "--queue",
                 "english"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["location"] == "2026/12/06/1796521807.0/rec.mp3"
    assert row["channels"] == 1  # the english queue's exception: mono
    assert row["duration_s"] == pytest.approx(2.5, abs=0.01)
    assert (tmp_path / "archive" / row["location"]).is_file() and raw.is_file()


def test_process_without_recordings_dir_names_the_setting(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "ivr.toml"
    cfg.write_text("", "utf-8")
    assert main(["recordings", "purge", "--config", str(cfg)]) == 2
    assert "[recordings] dir" in capsys.readouterr().err


def test_purge_with_audit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = settings_file(tmp_path)
    old = archive_path(tmp_path / "archive", "c1", time.time() - 40 * 86400, "a", "mp3")
    old.parent.mkdir(parents=True)
    old.write_bytes(b"abc")
    assert main(["recordings", "purge", "--config", str(cfg), "--dry-run"]) == 0
    assert old.exists() and "would delete" in capsys.readouterr().out
    assert main(["recordings", "purge", "--config", str(cfg)]) == 0
    assert not old.exists()
    (line,) = (tmp_path / "archive" / AUDIT_FILE).read_text().splitlines()
    assert json.loads(line)["actor"] == "ivr recordings purge"


async def test_status_shows_parked_jobs_and_retry_dead_queues_them(
        tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    r = aioredis.from_url(redis_url)
    prefix = f"test:{uuid.uuid4().hex[:8]}"
    keys = JobQueue(r, f"{prefix}:recordings").keys  # [events] stream_prefix + :recordings
    await r.delete(keys.open, keys.jobs, keys.due, keys.dead)
    try:
        job = Job("c9", 12, 0.0, CallFacts(0.0, "12345", None, "zh", Routing(entry="12345")),
                  (RawRecording(f"/spool/{uuid.uuid4().hex}.wav"),), attempts=8,
                  last_error="post-processing failed: ffmpeg not found")
        await JobQueue(r, f"{prefix}:recordings").park(job)
    finally:
        await r.aclose()
    cfg = settings_file(tmp_path, redis_url, prefix)
    # (the CLI runs its own event loop: run it in a thread)
    assert await asyncio.to_thread(main, ["recordings", "status", "--config", str(cfg),
                                          "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["dead"] == 1 and status["dead_jobs"][0]["call_id"] == "c9"
    assert await asyncio.to_thread(main, ["recordings", "status", "--config", str(cfg)]) == 1
    assert "ffmpeg not found" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["recordings", "process", "--config", str(cfg),
                                          "--retry-dead"]) == 0
    assert "1 parked job(s) queued again" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["recordings", "status", "--config", str(cfg)]) == 0
