"""`ivr demo` end to end: a real subprocess, the emulator, Redis, the bridge, the sink."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _demo_processes() -> list[str]:
    """Command lines of live processes started for a demo (they run in ivr-demo-* dirs)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if "ivr-demo-" in text:
            found.append(text)
    return found


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_demo_json_summary_and_no_process_left_behind() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ivr", "demo", "--calls", "8", "--rate", "0.5",
        "--speed", "40", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=env,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-3000:]
    lines = out.decode().strip().splitlines()
    summary = json.loads(lines[-1])
    # the 2nd caller hangs up while an agent rings: called back (漏接回拨) and reached; the
    # callback is a call of its own (through the queue, to an agent)
    assert summary["callbacks_placed"] >= summary["callbacks_reached"] >= 1
    assert summary["callbacks_scheduled"] >= summary["callbacks_reached"]
    calls = 8 + summary["callbacks_reached"]
    assert summary["calls"] == calls
    assert summary["ended"] == calls
    assert summary["abandoned"] >= 1
    assert summary["answered"] + summary["abandoned"] + summary["not_queued"] == calls
    assert 0.0 <= summary["answer_rate_15s"] <= 1.0
    # a realistic AMI stream per call; the bridge's event filter passes only what it reads
    assert summary["ami_events_emitted"] > 8 * 50
    assert 8 * 5 < summary["events"] < summary["ami_events_emitted"] / 2
    assert summary["events_written"] > 0
    assert summary["events_delivered"] == summary["events_written"]
    assert summary["events_lost"] == 0
    # a ticket per call, and per callback job (its own event stream: callback.*)
    assert summary["tickets"] == calls + summary["callbacks_scheduled"]
    # every ticket says which queue and language the caller reached
    assert sum(summary["routed"].values()) == summary["tickets"]
    assert all("(" in k and "-" not in k for k in summary["routed"])
    # answer -> first agent rung, per dialled number (simulated seconds at --speed 40)
    tta = summary["time_to_agent"]
    assert tta and set(tta) <= {"12345", "12315", "12333"}
    assert all(0 < t["p50_s"] <= t["p95_s"] <= t["max_s"] for t in tta.values())
    assert 0 < summary["time_to_agent_p95_s"] <= max(t["max_s"] for t in tta.values())
    # the supervisor's break rota: agents paused with catalog reasons, all back at the end
    reasons = {"午休 lunch", "培训 training", "小结 after-call work", "会议 meeting", "休息 break"}
    assert summary["agent_pauses"] >= 1 and summary["agent_resumes"] == summary["agent_pauses"]
    assert set(summary["pause_reasons"]) <= reasons
    assert sum(summary["pause_reasons"].values()) == summary["agent_pauses"]
    assert all(by_state["paused"] == 0 for by_state in summary["agents_by_state"].values())
    # ratings: one per call at most, scores 1-5, as delivered to the ticket backend
    assert summary["surveys_scored"] == sum(summary["survey_scores"].values()) <= calls
    assert set(summary["survey_scores"]) <= set("12345")
    # service levels read back from the stored events agree with the calls made
    levels = summary["service_levels"]
    assert levels and set(levels) <= {"hotline", "english", "cantonese", "enterprise",
                                      "consumer", "social"}
    assert sum(f["answered"] for f in levels.values()) == summary["answered"]
    assert sum(f["offered"] for f in levels.values()) >= summary["answered"] + \
        summary["abandoned"]
    for f in levels.values():
        assert f["answered_15s"] <= f["answered"] <= f["offered"]
        # short abandons (< 5 s, the missed caller's) are counted apart from abandoned
        assert f["answered"] + f["abandoned"] + f["abandoned_short"] <= f["offered"]
    # issue 11: agents transfer calls through the transfer service (110 with one key, a
    # consultation with another hotline, a blind one); every request has one outcome
    t = summary["transfers"]
    assert t["requested"] == 3
    assert t.get("completed", 0) + t.get("returned", 0) + t.get("failed", 0) == 3
    assert set(t["by_kind"]) <= {f"{k}.{o}" for k in ("one_key", "attended", "blind")
                                 for o in ("completed", "returned", "failed")}
    assert sum(1 for k in t["by_kind"] if k.startswith("one_key.")) == 1
    # a three-way call (the market regulator, then an interpreter) on the first answered
    # call; the answered calls' recordings archived (recording.ready, stage archived)
    assert summary["threeway_calls"] == 1
    assert 1 <= summary["recordings_ready"]
    # issue 15: a supervisor listens, whispers, barges on one agent call (the shipped staff
    # policy), and a reviewer scores one sampled recorded call
    assert summary["supervisions"] == 1
    assert summary["recordings_ready"] >= 1 and summary["reviews_scored"] == 1
    # progress and the human summary went to stderr, in both languages
    text = err.decode()
    assert "Summary / 汇总" in text
    assert "calls 来电" in text
    assert "time to agent 接通坐席振铃用时" in text
    assert "called back 漏接回拨: reached" in text and "callbacks 漏接回拨" in text
    assert "supervisor 班长" in text and "paused 暂停" in text and "back 恢复接听" in text
    assert "ratings 满意度评价" in text and "service levels 服务水平" in text
    assert "110 公安报警 Police" in text and "transfers 转接 3" in text
    assert "barge 强插 on call" in text and "left 退出 call" in text
    assert "supervisions 班长监听 1" in text and "scored 评分" in text
    # nothing left running: the private redis-server and the emulator are gone
    assert not _demo_processes()
