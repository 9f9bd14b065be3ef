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
    assert summary["calls"] == 8
    assert summary["ended"] == 8
    assert summary["answered"] + summary["abandoned"] + summary["not_queued"] == 8
    assert 0.0 <= summary["answer_rate_15s"] <= 1.0
    # a realistic AMI stream per call; the bridge's event filter passes only what it reads
    assert summary["ami_events_emitted"] > 8 * 50
    assert 8 * 5 < summary["events"] < summary["ami_events_emitted"] / 2
    assert summary["events_written"] > 0
    assert summary["events_delivered"] == summary["events_written"]
    assert summary["events_lost"] == 0
    assert summary["tickets"] == 8
    # every ticket says which queue and language the caller reached
    assert sum(summary["routed"].values()) == 8
    assert all("(" in k and "-" not in k for k in summary["routed"])
    # answer -> first agent rung, per dialled number (simulated seconds at --speed 40)
    tta = summary["time_to_agent"]
    assert tta and set(tta) <= {"12345", "12315", "12333"}
    assert all(0 < t["p50_s"] <= t["p95_s"] <= t["max_s"] for t in tta.values())
    assert 0 < summary["time_to_agent_p95_s"] <= max(t["max_s"] for t in tta.values())
    # progress and the human summary went to stderr, in both languages
    text = err.decode()
    assert "Summary / 汇总" in text
    assert "calls 来电" in text
    assert "time to agent 接通坐席振铃用时" in text
    # nothing left running: the private redis-server and the emulator are gone
    assert not _demo_processes()
