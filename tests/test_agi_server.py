"""FastAGI server + typed channel against the recorded traces, replayed by a fake Asterisk
over a real socket on 127.0.0.1, and the server's hardening."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

import pytest

from ivr.agi.channel import AGIChannel, DataResult, StreamResult
from ivr.agi.errors import AGICommandError, AGIHangup
from ivr.agi.server import FastAGIServer
from ivr.log import JsonFormatter
from ivr.metrics import METRICS
from tests.agi_peer import (
    CHUNKERS,
    AGITrace,
    ProbeServer,
    fake_asterisk,
    header,
    load_trace,
)

Script = Callable[[AGIChannel], Awaitable[None]]


async def run_trace(
    trace: AGITrace,
    script: Script,
    chunker: str = "whole",
    hangup: str = "eager",
    hangup_grace: float = 2.0,
) -> AGIChannel:
    """Serve ``script`` on route ``ivr``; replay ``trace`` against it; return the channel
    after both sides are done (any assertion in ``script`` fails the test)."""
    outcome: asyncio.Future[AGIChannel] = asyncio.get_running_loop().create_future()

    async def route(channel: AGIChannel) -> None:
        try:
            await script(channel)
        except Exception as exc:
            outcome.set_exception(exc)
            raise
        outcome.set_result(channel)

    async with FastAGIServer(hangup_grace=hangup_grace, command_timeout=10) as server:
        server.add_route("ivr", route)
        await server.start(port=0)
        assert server.port
        replay = await fake_asterisk(server.port, trace, CHUNKERS[chunker], hangup=hangup)
        channel = await asyncio.wait_for(outcome, 10)
    assert replay.mismatches == []
    # byte-identical to the recording except where the trace quoted a plain token
    # (only "0123456789*#" in trace 02)
    assert all(got.replace(b'"', b"") == rec.replace(b'"', b"") for got, rec in replay.requoted)
    assert len(replay.requoted) == (2 if trace.name.startswith("02") else 0)
    assert replay.closed_by_server
    assert len(replay.received) == len(trace.steps)
    return channel


async def script_02(ch: AGIChannel) -> None:
    env = ch.env
    assert env.script_path == "ivr" and env.query == {"entry": "main"}
    assert env.callerid == "13800138000" and env.calleridname == "张三"
    assert env.channel == "Local/12345@from-pstn-00000000;2" and env.language == "zh"
    assert env.args == ()
    await ch.answer()
    assert await ch.get_variable("CHANNEL(language)") == "zh"
    await ch.set_language("en")
    full = await ch.get_full_variable("${CALLERID(num)}|${CALLERID(name)}")
    assert full == "13800138000|张三"
    await ch.set_variable("IVR_NOTE", "张三 投诉 噪音")
    assert await ch.get_variable("IVR_NOTE") == "张三 投诉 噪音"
    missing = await ch.stream_file("nosuchprompt", "0123456789*#")
    assert missing == StreamResult(digit=None, endpos=0, failed=True)
    assert not ch.hung_up
    played = await ch.stream_file("demo-congrats", "0123456789*#")
    assert played == StreamResult(digit=None, endpos=242240, failed=False)
    assert await ch.get_data("beep", 4000, 4) == DataResult(digits="2", timed_out=False)
    assert await ch.say_digits("12345") is None
    assert await ch.channel_status() == 6
    with pytest.raises(AGICommandError) as usage:
        await ch.raw("STREAM FILE")  # deliberately wrong, as in the trace
    assert usage.value.code == 520
    lines = usage.value.text.splitlines()
    assert lines[0] == "Invalid command syntax.  Proper usage follows:"
    assert lines[-1] == "End of proper usage."
    assert "    <value>FAILED</value>" in lines
    with pytest.raises(AGICommandError) as unknown:
        await ch.raw("FOO BAR")
    assert (unknown.value.code, unknown.value.text) == (510, "Invalid or unknown command")
    assert await ch.exec("Playback", "silence/1") == 0
    await ch.set_variable("IVR_NEXT", "queue")
    await ch.set_variable("IVR_QUEUE", "hotline")
    assert ch.commands_sent == 16
    assert not ch.hung_up


async def script_06(ch: AGIChannel) -> None:
    env = ch.env
    assert env.calleridname == '陈 "老" 师'
    assert env.callerid == "01012345678"
    assert env.args == ("zh", "vip")
    assert env.query == {"entry": "main"}
    await ch.answer()
    assert await ch.get_variable("AGI_NOT_SET") is None
    with pytest.raises(AGIHangup):
        await ch.stream_file("demo-congrats")
    assert ch.hung_up
    # still answered on a dead channel
    assert await ch.get_variable("CHANNEL(language)") == "en"
    await ch.set_variable("X", "1")
    with pytest.raises(AGIHangup) as dead:
        await ch.hangup()
    assert "511" in str(dead.value) or "dead channel" in str(dead.value)
    assert ch.commands_sent == 6


async def script_06_lazy(ch: AGIChannel) -> None:
    """The HANGUP line only arrives in front of the next reply: stream_file cannot know
    yet (failed), the next reply is still the right one and then hung_up is set."""
    await ch.answer()
    assert await ch.get_variable("AGI_NOT_SET") is None
    result = await ch.stream_file("demo-congrats")
    assert result == StreamResult(digit=None, endpos=8160, failed=True)
    assert await ch.get_variable("CHANNEL(language)") == "en"
    assert ch.hung_up
    await ch.set_variable("X", "1")
    with pytest.raises(AGIHangup):
        await ch.hangup()


async def script_08(ch: AGIChannel) -> None:
    env = ch.env
    assert env.channel == "SIP/caller-00000933" and env.context == "perf"
    assert env.query == {"entry": "sip"} and env.args == ("zh",)
    await ch.answer()
    assert await ch.get_data("beep", 4000, 1) == DataResult("1", False)
    await ch.set_language("en")
    with pytest.raises(AGIHangup):
        await ch.stream_file("demo-congrats")
    assert await ch.get_variable("CHANNEL(language)") == "en"
    assert ch.hung_up


@pytest.mark.parametrize("chunker", list(CHUNKERS))
async def test_trace_02_full_ivr_session(chunker: str) -> None:
    # hangup_grace: how long stream_file waits for a HANGUP after result=-1 (the
    # missing prompt here costs exactly that)
    ch = await run_trace(load_trace("02", 1), script_02, chunker, hangup_grace=0.1)
    assert ch.commands_sent == 16


@pytest.mark.parametrize("chunker", list(CHUNKERS))
async def test_trace_06_hangup_during_stream(chunker: str) -> None:
    ch = await run_trace(load_trace("06", 1), script_06, chunker)
    assert ch.hung_up


async def test_trace_06_hangup_line_held_until_next_reply() -> None:
    ch = await run_trace(load_trace("06", 1), script_06_lazy, hangup="lazy", hangup_grace=0.05)
    assert ch.hung_up and ch.commands_sent == 6


@pytest.mark.parametrize("chunker", list(CHUNKERS))
async def test_trace_08_sip_call(chunker: str) -> None:
    ch = await run_trace(load_trace("08", 2), script_08, chunker)
    assert ch.commands_sent == 5


async def test_trace_08_lazy_hangup_still_in_step() -> None:
    async def script(ch: AGIChannel) -> None:
        await ch.answer()
        assert (await ch.get_data("beep", 4000, 1)).digits == "1"
        await ch.set_language("en")
        assert (await ch.stream_file("demo-congrats")).failed
        assert await ch.get_variable("CHANNEL(language)") == "en"
        assert ch.hung_up

    await run_trace(load_trace("08", 2), script, hangup="lazy", hangup_grace=0.05)


# -- hardening --------------------------------------------------------------------------


def _delta(before: dict[str, int], name: str) -> int:
    return METRICS.get(name) - before.get(name, 0)


async def _short_session(port: int, n: int = 1) -> list[bytes]:
    """A tiny well-behaved Asterisk: header, answer ANSWER and GET VARIABLE, read EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = []
    writer.write(header(n=n))
    for reply in (b"200 result=0\n", b"200 result=1 (zh)\n"):
        got.append(await reader.readline())
        writer.write(reply)
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()
    return got


async def _short_script(ch: AGIChannel) -> None:
    await ch.answer()
    assert await ch.get_variable("CHANNEL(language)") == "zh"


async def test_connect_and_close_does_not_spin() -> None:
    before = METRICS.snapshot()
    async with ProbeServer() as server:
        server.add_route("ivr", _short_script)
        await server.start(port=0)
        assert server.port
        _, w = await asyncio.open_connection("127.0.0.1", server.port)
        w.close()
        await w.wait_closed()
        # the dropped session's task ends by itself ...
        assert await asyncio.wait_for(server.finished.get(), 5) == "done"
        # ... and the loop is free: a real session completes afterwards
        assert await asyncio.wait_for(_short_session(server.port), 5) == [
            b"ANSWER\n",
            b"GET VARIABLE CHANNEL(language)\n",
        ]
        assert await asyncio.wait_for(server.finished.get(), 5) == "done"
    assert _delta(before, "agi.sessions.dropped.eof") == 1
    assert _delta(before, "agi.sessions.completed") == 1


async def test_eof_in_the_middle_of_the_header_is_dropped() -> None:
    before = METRICS.snapshot()
    async with ProbeServer() as server:
        server.add_route("ivr", _short_script)
        await server.start(port=0)
        assert server.port
        _, w = await asyncio.open_connection("127.0.0.1", server.port)
        w.write(header()[:50])
        await w.drain()
        w.close()
        await w.wait_closed()
        assert await asyncio.wait_for(server.finished.get(), 5) == "done"
    assert _delta(before, "agi.sessions.dropped.eof") == 1


async def test_header_that_never_ends_is_dropped_at_timeout() -> None:
    before = METRICS.snapshot()
    async with ProbeServer(header_timeout=0.2) as server:
        server.add_route("ivr", _short_script)
        await server.start(port=0)
        assert server.port
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        w.write(b"agi_network: yes\nagi_network_script: ivr\n")
        await w.drain()
        # meanwhile another session is served normally
        await asyncio.wait_for(_short_session(server.port), 5)
        assert await asyncio.wait_for(r.read(), 5) == b""  # closed by the server
        w.close()
    assert _delta(before, "agi.sessions.dropped.header_timeout") == 1
    assert _delta(before, "agi.sessions.completed") == 1


async def test_header_over_the_cap_is_dropped() -> None:
    before = METRICS.snapshot()
    async with ProbeServer(max_header_bytes=1024) as server:
        server.add_route("ivr", _short_script)
        await server.start(port=0)
        assert server.port
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        w.write(b"agi_network: yes\nagi_x: " + b"A" * 4096)
        await w.drain()
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()
        assert await asyncio.wait_for(server.finished.get(), 5) == "done"
    assert _delta(before, "agi.sessions.dropped.bad_header") == 1


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: ivr\r\n\r\n",
        bytes(range(256)),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello start
        b"\n\n",
        b"agi_network: yes\nnot a header at all\n\n",  # no script: not a session
    ],
)
async def test_garbage_is_dropped_fast(garbage: bytes) -> None:
    before = METRICS.snapshot()
    async with ProbeServer(header_timeout=30) as server:
        server.add_route("ivr", _short_script)
        await server.start(port=0)
        assert server.port
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        w.write(garbage)
        await w.drain()
        assert await asyncio.wait_for(r.read(), 5) == b""  # long before header_timeout
        w.close()
        assert await asyncio.wait_for(server.finished.get(), 5) == "done"
    assert _delta(before, "agi.sessions.dropped.bad_header") == 1


async def test_unknown_route_sends_nothing_and_logs_masked_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = METRICS.snapshot()
    caplog.set_level(logging.INFO, logger="ivr.agi.server")
    async with ProbeServer() as server:
        server.add_route("ivr", _short_script)
        await server.start(port=0)
        assert server.port
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        w.write(header(script="nosuch?entry=x", callerid="13912345678"))
        await w.drain()
        assert await asyncio.wait_for(r.read(), 5) == b""  # no command at all
        w.close()
    assert _delta(before, "agi.sessions.dropped.no_route") == 1
    rendered = [JsonFormatter().format(rec) for rec in caplog.records]
    dropped = [json.loads(x) for x in rendered if "agi.session.dropped" in x]
    assert dropped and dropped[0]["reason"] == "no_route"
    assert "139****5678" in dropped[0]["detail"]
    assert all("13912345678" not in x for x in rendered)


async def test_raising_handler_is_logged_counted_and_server_survives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = METRICS.snapshot()
    caplog.set_level(logging.INFO, logger="ivr.agi.server")

    async def broken(ch: AGIChannel) -> None:
        await ch.answer()
        raise RuntimeError("bug in IVR script")

    async with ProbeServer() as server:
        server.add_route("broken", broken)
        server.add_route("ivr", _short_script)
        await server.start(port=0)
        assert server.port
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        w.write(header(script="broken", callerid="13800138000"))
        assert await r.readline() == b"ANSWER\n"
        w.write(b"200 result=0\n")
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()
        assert await asyncio.wait_for(server.finished.get(), 5) == "done"
        await asyncio.wait_for(_short_session(server.port), 5)
    assert _delta(before, "agi.sessions.failed") == 1
    assert _delta(before, "agi.sessions.completed") == 1
    failed = [rec for rec in caplog.records if rec.getMessage() == "agi.session.failed"]
    assert len(failed) == 1
    out = json.loads(JsonFormatter().format(failed[0]))
    assert out["caller"] == "138****8000"
    assert out["channel"] == "Local/12345@from-pstn-00000000;2"
    assert "RuntimeError: bug in IVR script" in out["error"]
    assert "13800138000" not in JsonFormatter().format(failed[0])


async def test_handler_hangup_ends_quietly() -> None:
    before = METRICS.snapshot()

    async def script(ch: AGIChannel) -> None:
        await ch.answer()  # the peer closes instead of answering

    async with ProbeServer() as server:
        server.add_route("ivr", script)
        await server.start(port=0)
        assert server.port
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        w.write(header())
        assert await r.readline() == b"ANSWER\n"
        w.close()
        await w.wait_closed()
        assert await asyncio.wait_for(server.finished.get(), 5) == "done"
    assert _delta(before, "agi.sessions.hangup") == 1
    assert _delta(before, "agi.sessions.failed") == 0


async def test_many_concurrent_sessions_with_stuck_ones() -> None:
    stuck_seen = asyncio.Event()
    cancelled: list[str] = []

    async def script(ch: AGIChannel) -> None:
        if ch.env.query.get("entry") == "stuck":
            stuck_seen.set()
            try:
                await ch.answer()  # this Asterisk never answers
            except asyncio.CancelledError:
                cancelled.append(ch.env.uniqueid)
                raise
        else:
            await _short_script(ch)

    before = METRICS.snapshot()
    server = ProbeServer(header_timeout=30, command_timeout=None)
    server.add_route("ivr", script)
    await server.start(port=0)
    assert server.port
    # a peer stuck in the header, and one stuck waiting for a reply
    r1, w1 = await asyncio.open_connection("127.0.0.1", server.port)
    w1.write(b"agi_network: yes\n")
    r2, w2 = await asyncio.open_connection("127.0.0.1", server.port)
    w2.write(header(script="ivr?entry=stuck", n=999))
    await asyncio.wait_for(stuck_seen.wait(), 5)
    results = await asyncio.wait_for(
        asyncio.gather(*(_short_session(server.port, n) for n in range(40))), 20
    )
    assert all(r == [b"ANSWER\n", b"GET VARIABLE CHANNEL(language)\n"] for r in results)
    assert server.sessions == 2
    await asyncio.wait_for(server.close(grace=0.1), 5)
    assert server.sessions == 0
    assert cancelled == ["1795883958.999"]
    assert await r1.read() == b"" and await r2.readline() == b"ANSWER\n"
    w1.close()
    w2.close()
    assert _delta(before, "agi.sessions.completed") == 40
    assert _delta(before, "agi.sessions.cancelled_at_close") == 2
    assert _delta(before, "agi.sessions.cancelled") == 2
    assert _delta(before, "agi.sessions.failed") == 0


async def test_close_waits_for_running_sessions() -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def script(ch: AGIChannel) -> None:
        entered.set()
        await release.wait()
        await ch.set_variable("IVR_NEXT", "queue")

    server = ProbeServer()
    server.add_route("ivr", script)
    await server.start(port=0)
    assert server.port
    r, w = await asyncio.open_connection("127.0.0.1", server.port)
    w.write(header())
    await asyncio.wait_for(entered.wait(), 5)
    closing = asyncio.create_task(server.close(grace=10))
    await asyncio.sleep(0)
    release.set()
    assert await r.readline() == b"SET VARIABLE IVR_NEXT queue\n"
    w.write(b"200 result=1\n")
    await asyncio.wait_for(closing, 5)
    assert server.finished.get_nowait() == "done"
    # no longer listening
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.port)
    w.close()


def test_routes_strip_query_and_refuse_duplicates() -> None:
    server = FastAGIServer()
    server.add_route("/ivr?entry=main", _short_script)
    with pytest.raises(ValueError, match="already exists"):
        server.add_route("ivr", _short_script)
    with pytest.raises(TypeError):
        server.add_route("x", "not callable")  # type: ignore[arg-type]
    server.del_route("ivr")
    with pytest.raises(ValueError, match="no AGI route"):
        server.del_route("ivr")
    server.add_route("ivr", _short_script)
    assert bool(server) and server != FastAGIServer()


async def test_hangup_in_the_same_packet_as_the_header() -> None:
    """A caller who hangs up at once: Asterisk's HANGUP line may share a read with the
    header block; it must mark the channel, not be lost or taken as a reply."""
    seen: list[bool] = []

    async def script(ch: AGIChannel) -> None:
        seen.append(ch.hung_up)
        assert ch.env.issues == ("not an agi_* header: 'junk line'",)
        assert await ch.get_variable("X") == "1"

    async with ProbeServer() as server:
        server.add_route("ivr", script)
        await server.start(port=0)
        assert server.port
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        w.write(header().replace(b"\n\n", b"\njunk line\n\nHANGUP\n"))
        assert await asyncio.wait_for(r.readline(), 5) == b"GET VARIABLE X\n"
        w.write(b"200 result=1 (1)\n")
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()
        assert await asyncio.wait_for(server.finished.get(), 5) == "done"
    assert seen == [True]


async def test_over_capacity_is_dropped_and_counted() -> None:
    before = METRICS.snapshot()
    async with ProbeServer(max_sessions=1, header_timeout=30) as server:
        server.add_route("ivr", _short_script)
        await server.start(port=0)
        assert server.port
        r1, w1 = await asyncio.open_connection("127.0.0.1", server.port)
        w1.write(b"agi_network: yes\n")  # holds the only slot
        await w1.drain()
        r2, w2 = await asyncio.open_connection("127.0.0.1", server.port)
        w2.write(header())
        try:  # closed unread: EOF, or a reset when the header was still unread
            assert await asyncio.wait_for(r2.read(), 5) == b""
        except ConnectionResetError:
            pass
        assert await asyncio.wait_for(server.finished.get(), 5) == "done"
        w2.close()
        w1.write(header()[len(b"agi_network: yes\n"):])  # the first one still completes
        assert await asyncio.wait_for(r1.readline(), 5) == b"ANSWER\n"
        w1.write(b"200 result=0\n")
        assert await asyncio.wait_for(r1.readline(), 5) == b"GET VARIABLE CHANNEL(language)\n"
        w1.write(b"200 result=1 (zh)\n")
        assert await asyncio.wait_for(r1.read(), 5) == b""
        w1.close()
    assert _delta(before, "agi.sessions.dropped.over_capacity") == 1
    assert _delta(before, "agi.sessions.completed") == 1
