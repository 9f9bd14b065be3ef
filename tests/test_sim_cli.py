"""``ivr sim`` as a process: starts, serves AMI, generates calls, exits on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from tests.sim_trace_tools import read_until


async def test_ivr_sim_runs_until_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ivr", "sim", "--ami-port", "0", "--speed", "20",
        "--calls", "3", "--rate", "5", "--seed", "1", "--agi-url", "agi://127.0.0.1:1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
    r, w = await asyncio.open_connection("127.0.0.1", first["ami_port"])
    buf = bytearray()
    w.write(b"Action: Login\r\nActionID: 1\r\nUsername: ivr\r\nSecret: ivrsecret\r\n\r\n")
    await read_until(r, buf, b"Authentication accepted")
    await read_until(r, buf, b"Variable: AGISTATUS\r\nValue: FAILURE")  # generator runs
    proc.send_signal(signal.SIGTERM)
    summary = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
    assert await asyncio.wait_for(proc.wait(), 20) == 0
    assert summary["placed"] >= 1
    w.close()
