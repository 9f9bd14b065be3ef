"""Regression tests for the panoramisk / pyst2 pitfalls (design/known-pitfalls.md) that
touch the FastAGI code we ship."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import threading
import warnings

import pytest
from panoramisk.fast_agi import Application

from ivr.agi.channel import AGIChannel
from ivr.agi.server import FastAGIServer
from ivr.metrics import METRICS
from tests.agi_peer import ProbeServer, header

PANORAMISK_SPIN = """
import asyncio
from panoramisk.fast_agi import Application

async def main():
    app = Application(loop=asyncio.get_running_loop())
    reader = asyncio.StreamReader()
    reader.feed_eof()  # a peer that connected and closed
    print("spinning", flush=True)
    await asyncio.wait_for(app.handler(reader, None), 0.5)

asyncio.run(main())
"""


@pytest.mark.slow
def test_panoramisk_2_the_original_handler_really_spins() -> None:
    """Why the handler is replaced: panoramisk's never returns on EOF and never yields,
    so even its own 0.5 s wait_for cannot fire."""
    with pytest.raises(subprocess.TimeoutExpired) as spun:
        subprocess.run(
            [sys.executable, "-c", PANORAMISK_SPIN], timeout=3, check=False, capture_output=True
        )
    assert spun.value.stdout == b"spinning\n"  # it got there, then never came back


async def test_panoramisk_2_connect_and_close_storm_leaves_the_loop_free() -> None:
    before = METRICS.get("agi.sessions.dropped.eof")
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    async def script(ch: AGIChannel) -> None:
        await ch.answer()

    async with ProbeServer() as server:
        server.add_route("ivr", script)
        await server.start(port=0)
        assert server.port
        tick_task = asyncio.create_task(ticker())
        for _ in range(30):
            _, w = await asyncio.open_connection("127.0.0.1", server.port)
            w.close()
            await w.wait_closed()
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        w.write(header())
        assert await asyncio.wait_for(r.readline(), 5) == b"ANSWER\n"
        w.write(b"200 result=0\n")
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()
        ends = [await asyncio.wait_for(server.finished.get(), 5) for _ in range(31)]
        stop.set()
        await tick_task
    assert ends == ["done"] * 31
    assert ticks > 31  # the loop kept running other tasks throughout
    assert METRICS.get("agi.sessions.dropped.eof") - before == 30


async def test_panoramisk_3_plain_function_routes_work() -> None:
    with pytest.raises(AttributeError, match="coroutine"):  # the original, on 3.11
        Application(loop=asyncio.get_running_loop()).add_route("x", lambda request: None)

    seen: list[str] = []

    def plain(ch: AGIChannel) -> None:  # returns nothing
        seen.append(ch.env.uniqueid)

    def returns_awaitable(ch: AGIChannel) -> asyncio.Future[None]:
        async def body() -> None:
            await ch.answer()
            seen.append("answered")

        return asyncio.ensure_future(body())

    async with ProbeServer() as server:
        server.add_route("plain", plain)
        server.add_route("awaitable", returns_awaitable)
        await server.start(port=0)
        assert server.port
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        w.write(header(script="plain", n=5))
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        w.write(header(script="awaitable?x=1"))
        assert await asyncio.wait_for(r.readline(), 5) == b"ANSWER\n"
        w.write(b"200 result=0\n")
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()
    assert seen == ["1795883958.5", "answered"]


def test_panoramisk_9_nothing_loop_bound_at_construction() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        server = FastAGIServer()
    assert server.port is None and not hasattr(server, "loop")


async def test_panoramisk_10_cancellation_is_not_swallowed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    entered = asyncio.Event()
    saw_cancel: list[bool] = []
    failed = METRICS.get("agi.sessions.failed")
    cancelled = METRICS.get("agi.sessions.cancelled")

    async def forever(ch: AGIChannel) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            saw_cancel.append(True)
            raise

    server = ProbeServer()
    server.add_route("ivr", forever)
    await server.start(port=0)
    assert server.port
    r, w = await asyncio.open_connection("127.0.0.1", server.port)
    w.write(header())
    await asyncio.wait_for(entered.wait(), 5)
    await asyncio.wait_for(server.close(grace=0), 5)
    assert saw_cancel == [True]
    # the session task ended *cancelled* (a BaseException catch-all would have ended it
    # normally) and it is not reported as a handler failure
    assert METRICS.get("agi.sessions.cancelled") == cancelled + 1
    assert METRICS.get("agi.sessions.failed") == failed
    assert server.finished.get_nowait() == "done"  # the start_server callback ends cleanly
    assert await r.read() == b""
    assert not [rec for rec in caplog.records if rec.name == "asyncio"]
    w.close()


def test_pyst2_1_fastagi_does_not_import_and_we_never_need_it() -> None:
    code = (
        "import sys, ivr.agi.server, ivr.agi.channel, ivr.agi.local\n"
        "print(sorted(m for m in sys.modules if m.startswith('asterisk')))\n"
        "try:\n    import asterisk.fastagi\nexcept ImportError as e:\n    print(e.name)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    ).stdout.splitlines()
    assert out == ["[]", "SocketServer"]


def test_pyst2_3_process_agi_class_cannot_run_in_a_server_thread() -> None:
    """Why the server never uses ``asterisk.agi.AGI``: its constructor installs a SIGHUP
    handler, which raises outside the main thread (ivr.agi.local runs it in its own
    process instead; see test_agi_local)."""
    from asterisk.agi import AGI

    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            AGI(stdin=io.StringIO(header().decode()), stdout=io.StringIO(), stderr=io.StringIO())
        except ValueError as exc:
            errors.append(exc)

    t = threading.Thread(target=in_thread)
    t.start()
    t.join(10)
    assert len(errors) == 1 and "main thread" in str(errors[0])
