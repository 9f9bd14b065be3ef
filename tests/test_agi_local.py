"""The process-AGI fallback (``python -m ivr.agi.local``) run as Asterisk runs it: a real
subprocess, the AGI header block on its stdin, commands read from its stdout."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass

from ivr.agi.codec import parse_args
from tests.agi_peer import load_trace

HEADER_02 = load_trace("02", 1).header  # caller 13800138000 "张三"


@dataclass
class Run:
    commands: list[list[str]]
    stdout_rest: bytes
    stderr: str
    returncode: int


async def run_local(
    *args: str,
    replies: list[bytes],
    header: bytes = HEADER_02,
    env: dict[str, str] | None = None,
    sighup_after: int | None = None,
) -> Run:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ivr.agi.local", *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdin and proc.stdout and proc.stderr
    proc.stdin.write(header)
    await proc.stdin.drain()
    commands: list[list[str]] = []
    for i, reply in enumerate(replies):
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        if not line:
            break
        commands.append(parse_args(line.decode().rstrip("\n")))
        if sighup_after == i:
            proc.send_signal(signal.SIGHUP)  # what Asterisk does when the caller hangs up
        proc.stdin.write(reply)
        await proc.stdin.drain()
    proc.stdin.close()
    rest, err = await asyncio.wait_for(
        asyncio.gather(proc.stdout.read(), proc.stderr.read()), 20
    )
    code = await asyncio.wait_for(proc.wait(), 20)
    return Run(commands, rest, err.decode(), code)


async def test_sets_queue_variables_and_logs_masked() -> None:
    run = await run_local("vip", replies=[b"200 result=1\n"] * 3)
    assert run.returncode == 0, run.stderr
    assert run.commands == [
        ["SET", "VARIABLE", "IVR_FALLBACK", "local"],
        ["SET", "VARIABLE", "IVR_NEXT", "queue"],
        ["SET", "VARIABLE", "IVR_QUEUE", "vip"],
    ]
    assert run.stdout_rest == b""
    logs = [json.loads(line) for line in run.stderr.splitlines()]
    assert [x["msg"] for x in logs] == ["agi.local.fallback"]
    assert logs[0]["caller"] == "138****8000"
    assert logs[0]["channel"] == "Local/12345@from-pstn-00000000;2"
    assert logs[0]["queue"] == "vip"
    assert "13800138000" not in run.stderr  # pyst2's own header dump is silenced


async def test_unsafe_queue_name_falls_back_to_env_then_default() -> None:
    run = await run_local(
        'x" "y', replies=[b"200 result=1\n"] * 3, env={"IVR_FALLBACK_QUEUE": "general"}
    )
    assert run.returncode == 0, run.stderr
    assert run.commands[-1] == ["SET", "VARIABLE", "IVR_QUEUE", "general"]
    assert "agi.local.bad_queue" in run.stderr
    run = await run_local(replies=[b"200 result=1\n"] * 3, env={"IVR_FALLBACK_QUEUE": ""})
    assert run.commands[-1] == ["SET", "VARIABLE", "IVR_QUEUE", "hotline"]


async def test_sighup_from_asterisk_ends_the_script_cleanly() -> None:
    """pyst2 #3: its SIGHUP handler is right in a process Asterisk started (main thread)."""
    run = await run_local(replies=[b"200 result=1\n"] * 3, sighup_after=0)
    assert run.returncode == 0, run.stderr
    assert run.commands == [["SET", "VARIABLE", "IVR_FALLBACK", "local"]]
    assert [json.loads(x)["msg"] for x in run.stderr.splitlines()] == ["agi.local.hangup"]


async def test_refused_command_is_reported() -> None:
    run = await run_local(replies=[b"510 Invalid or unknown command\n"])
    assert run.returncode == 1
    logs = [json.loads(x) for x in run.stderr.splitlines()]
    assert logs[-1]["msg"] == "agi.local.failed" and logs[-1]["caller"] == "138****8000"
