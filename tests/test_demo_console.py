"""``ivr demo --console`` as a real subprocess: it prints the console's address and a token
per role, serves the console and the API on it while calls keep coming, and stops in
order on Ctrl-C (SIGINT) with exit status 0 and no call event lost."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

import aiohttp
import pytest

from tests.test_demo import ROOT

TOKEN = re.compile(r"token (admin|supervisor|agent)\b.*?(ivr_[0-9a-f]{12}_[A-Za-z0-9_-]{43})")
URL = re.compile(r"(http://127\.0\.0\.1:\d+)/console/")


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_demo_console_serves_until_ctrl_c() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ivr", "demo", "--console", "--speed", "5", "--rate", "0.5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    errors = asyncio.create_task(proc.stderr.read())  # its log lines, read all along
    try:
        base = None
        tokens: dict[str, str] = {}
        seen: list[str] = []
        async with asyncio.timeout(90):  # set-up: Redis, the sink, the emulator, publish
            while base is None or len(tokens) < 3:
                line = (await proc.stdout.readline()).decode()
                assert line, "".join(seen)  # the demo ended before printing its console
                seen.append(line)
                if (m := URL.search(line)) is not None:
                    base = m.group(1)
                if (t := TOKEN.search(line)) is not None:
                    tokens[t.group(1)] = t.group(2)
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            async with http.get(base + "/console/") as resp:  # → the login page
                assert resp.status == 200 and str(resp.url).endswith("/console/login")
                assert 'id="login-form"' in await resp.text()
            async with http.get(base + "/console/static/console.js") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/javascript")
            # the calls keep coming: the hotline's queues are live for the agent's token
            headers = {"Authorization": f"Bearer {tokens['agent']}"}
            async with http.get(base + "/api/queues", headers=headers) as resp:
                assert resp.status == 200
                assert "hotline" in {q["queue"] for q in (await resp.json())["queues"]}
            async with http.post(base + "/api/session", json={"token": tokens["admin"]}
                                 ) as resp:
                assert resp.status == 200 and (await resp.json())["role"] == "admin"
            async with http.get(base + "/console/dialplans") as resp:
                assert resp.status == 200 and "dialplans.js" in await resp.text()
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        async with asyncio.timeout(60):
            rest = (await proc.stdout.read()).decode()
            await proc.wait()
        assert proc.returncode == 0, rest + (await errors).decode()[-3000:]
        assert "stopped / 已停止" in rest and ", 0 lost" in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await errors
