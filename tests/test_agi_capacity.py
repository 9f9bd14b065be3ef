"""FastAGI under a flood (issue 14 item 6): per-command deadlines bounded by what the
command can take, per-address session limits, and shedding of stalled/idle sessions, so
that a real call is still served.  Real sockets on 127.0.0.x (the whole 127/8 is loopback
on Linux: each flood client binds its own source address)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ivr.agi.channel import (
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_DEADLINE_MARGIN,
    DEFAULT_PROMPT_SECONDS,
    AGIChannel,
    command_deadline,
)
from ivr.agi.errors import AGITimeout
from ivr.agi.server import LOG_BURST, FastAGIServer, _LogBudget
from ivr.metrics import METRICS
from ivr.prompts.convert import MAX_PROMPT_SECONDS
from tests.agi_peer import header


def _delta(before: dict[str, int], name: str) -> int:
    return METRICS.get(name) - before.get(name, 0)


# -- per-command deadlines ----------------------------------------------------------------


def test_each_command_is_bounded_by_what_it_can_take() -> None:
    p, m = DEFAULT_PROMPT_SECONDS, DEFAULT_DEADLINE_MARGIN
    assert p == MAX_PROMPT_SECONDS  # a prompt plays at most what `prompts import` keeps
    assert DEFAULT_COMMAND_TIMEOUT == 10.0  # not 600 s any more
    assert FastAGIServer().command_timeout == DEFAULT_COMMAND_TIMEOUT
    plain = (DEFAULT_COMMAND_TIMEOUT, False)
    assert command_deadline("ANSWER", ()) == plain
    assert command_deadline("SET VARIABLE", ("IVR_NEXT", "queue")) == plain
    assert command_deadline("EXEC", ("MSet", "A=1,B=2")) == plain
    assert command_deadline("EXEC", ("Queue", "hotline")) == plain  # pass timeout=
    assert command_deadline("GET DATA", ("menu", 5000, 1)) == (p + 5 + m, True)
    assert command_deadline("GET DATA", ("menu", 4000, 4)) == (p + 16 + m, True)
    assert command_deadline("GET DATA", ("menu", 0, 2)) == (p + 20 + m, True)  # PBX default
    assert command_deadline("STREAM FILE", ("demo", "0123")) == (p + m, True)
    assert command_deadline("SAY DIGITS", ("12345", "")) == (p + m, True)
    assert command_deadline("WAIT FOR DIGIT", (3000,)) == (3 + m, True)
    assert command_deadline("EXEC", ("Playback", "a&b&c")) == (3 * p + m, True)
    # what AGIChannel.read_digits sends: EXEC Read IVR_DIGITS,p1&p2,2,,1,4
    assert command_deadline("EXEC", ("Read", "IVR_DIGITS,p1&p2,2,,1,4")) == (
        2 * p + 2 * 4 + m, True)
    assert command_deadline("EXEC", ("Read", "V,p1,1,,3,0.5")) == (3 * (p + 0.5) + m, True)
    assert command_deadline("GET DATA", ("x", 100, 2), plain=1, prompt_seconds=0.2,
                            margin=0.1) == (pytest.approx(0.5), True)


async def _server_with(route: object, **kw: object) -> FastAGIServer:
    server = FastAGIServer(**kw)  # type: ignore[arg-type]
    server.add_route("ivr", route)  # type: ignore[arg-type]
    await server.start(port=0)
    return server


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("get_data", 0.2 + 2 * 0.1 + 0.1),  # a prompt + 2 digits x 100 ms + margin
     ("read_digits", 2 * 0.2 + 2 * 0.1 + 0.1),  # two prompts
     ("answer", 0.3)],  # a plain command: command_timeout
    ids=["get_data", "read_digits", "answer"],
)
async def test_a_reply_that_never_comes_is_bounded_by_the_commands_own_deadline(
    kind: str, expected: float
) -> None:
    outcome: asyncio.Future[tuple[float, str]] = asyncio.get_running_loop().create_future()

    async def route(ch: AGIChannel) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            if kind == "get_data":
                await ch.get_data("menu", 100, 2)
            elif kind == "read_digits":
                await ch.read_digits(["a", "b"], 100, 2)
            else:
                await ch.answer()
        except AGITimeout as exc:
            outcome.set_result((loop.time() - t0, str(exc)))
            raise

    server = await _server_with(route, command_timeout=0.3 if kind == "answer" else 30,
                                prompt_seconds=0.2, deadline_margin=0.1)
    assert server.port
    r, w = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        w.write(header())
        line = await asyncio.wait_for(r.readline(), 5)  # the command; never answered
        assert line.split()[0] in (b"GET", b"EXEC", b"ANSWER")
        elapsed, message = await asyncio.wait_for(outcome, 5)  # 600 s before the fix
        assert expected <= elapsed < expected + 1.5
        assert f"within {expected:g} s" in message
        assert await asyncio.wait_for(r.read(), 5) == b""  # the session ended
    finally:
        w.close()
        await server.close(grace=0)


# -- capacity ------------------------------------------------------------------------------


class Flood:
    """Clients that send a valid header and then never answer, each from ``source``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.writers: list[asyncio.StreamWriter] = []

    async def one(self, source: str, n: int, send_header: bool = True) -> bytes:
        """Connect from ``source``; return the first line the server sends (b"" when it
        refuses the connection)."""
        r, w = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(source, 0))
        self.writers.append(w)
        if not send_header:
            return b"(silent)"
        w.write(header(n=n))
        try:
            return await r.readline()
        except ConnectionResetError:
            return b""

    async def many(self, source: str, count: int, first: int = 0) -> list[bytes]:
        return list(await asyncio.gather(*(self.one(source, first + i)
                                           for i in range(count))))

    def close(self) -> None:
        for w in self.writers:
            w.close()


@contextmanager
def flood_of(port: int) -> Iterator[Flood]:
    flood = Flood(port)
    try:
        yield flood
    finally:
        flood.close()


async def real_call(port: int, source: str = "127.0.0.1") -> list[bytes]:
    """A real Asterisk's session: header, an answer to each command at once, EOF."""
    r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    got = []
    try:
        w.write(header(n=424242))
        while line := await r.readline():
            got.append(line)
            w.write(b"200 result=2\n" if line.startswith(b"GET DATA") else b"200 result=1\n")
        return got
    finally:
        w.close()


async def menu(ch: AGIChannel) -> None:
    """What the IVR does first on a real call: a menu (media), then variables."""
    data = await ch.get_data("ivr/menu", 5000, 1)
    await ch.set_variable("IVR_NEXT", data.digits)


@pytest.mark.slow  # 3,000 real connections
async def test_thousands_of_silent_sessions_do_not_keep_a_real_call_out() -> None:
    """3,000 connections from two addresses send a valid header and never answer the
    menu's GET DATA (the slowest case: a command that legitimately waits for the caller,
    so nothing is 'stalled').  Defaults: 2,000 sessions, 1,000 per address.  Before the
    fix all 2,000 slots were theirs and the real call was refused."""
    before = METRICS.snapshot()
    server = await _server_with(menu)
    assert server.port and server.max_sessions == 2000
    assert server.max_sessions_per_peer == 1000
    with flood_of(server.port) as flood:
        got = await asyncio.wait_for(asyncio.gather(
            flood.many("127.0.0.2", 1500), flood.many("127.0.0.3", 1500, first=1500)), 50)
        lines = [x for g in got for x in g]
        assert lines.count(b"GET DATA ivr/menu 5000 1\n") >= 2000
        assert server.peer_sessions("127.0.0.2") == 1000
        assert server.peer_sessions("127.0.0.3") == 1000
        # each connection over the limits was refused, or made room for itself by
        # shedding a stalled one (a header not read within stall_after on a busy loop)
        assert (_delta(before, "agi.sessions.dropped.over_peer_capacity")
                + _delta(before, "agi.sessions.dropped.over_capacity")
                + _delta(before, "agi.sessions.shed")) == 1000
        shed = _delta(before, "agi.sessions.shed")
        # the real Asterisk (another address) still gets its call served, at once
        t0 = asyncio.get_running_loop().time()
        call = await asyncio.wait_for(real_call(server.port), 5)
        assert call == [b"GET DATA ivr/menu 5000 1\n", b"SET VARIABLE IVR_NEXT 2\n"]
        assert asyncio.get_running_loop().time() - t0 < 2
        assert _delta(before, "agi.sessions.shed") == shed + 1  # an idle flood session went
        assert server.peer_sessions("127.0.0.2") + server.peer_sessions("127.0.0.3") == 1999
    await asyncio.wait_for(server.close(grace=0), 30)
    assert _delta(before, "agi.sessions.completed") == 1


async def test_a_flood_from_one_address_leaves_room_for_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ivr.agi.server")
    before = METRICS.snapshot()
    server = await _server_with(menu, max_sessions=40, max_sessions_per_peer=20)
    assert server.port
    with flood_of(server.port) as flood:
        lines = await asyncio.wait_for(flood.many("127.0.0.2", 60), 20)
        assert lines.count(b"GET DATA ivr/menu 5000 1\n") == 20
        assert lines.count(b"") == 40
        assert _delta(before, "agi.sessions.dropped.over_peer_capacity") == 40
        call = await asyncio.wait_for(real_call(server.port), 5)
        assert call[0] == b"GET DATA ivr/menu 5000 1\n"
        assert _delta(before, "agi.sessions.shed") == 0  # there was room: nobody shed
    await asyncio.wait_for(server.close(grace=0), 10)
    # the log stays bounded under the flood; the counters count every refusal
    dropped = [r for r in caplog.records if r.getMessage() == "agi.session.dropped"]
    assert len(dropped) == LOG_BURST < 40


def test_drop_log_budget_per_kind_and_window() -> None:
    budget = _LogBudget(burst=2, window=10)
    assert [budget.take("a", 0.0) for _ in range(5)] == [0, 0, None, None, None]
    assert budget.take("b", 1.0) == 0  # each kind its own budget
    assert budget.take("a", 9.9) is None
    assert budget.take("a", 10.0) == 4  # next window: says how many were left out
    assert budget.take("a", 10.1) == 0


async def test_stalled_sessions_are_shed_first_even_from_the_real_asteriskss_address(
) -> None:
    """Sessions that owe what a real Asterisk sends at once (the header block; the reply
    to ANSWER) are shed for a newcomer — also from the newcomer's own address (a flood
    from the Asterisk host itself), where the per-address limit alone would refuse it."""

    async def answer_first(ch: AGIChannel) -> None:
        await ch.answer()
        await menu(ch)

    before = METRICS.snapshot()
    server = await _server_with(answer_first, max_sessions=10, max_sessions_per_peer=6,
                                stall_after=0.0)
    assert server.port
    with flood_of(server.port) as flood:
        # four silent (no header) from 127.0.0.5, then six stuck on ANSWER from 127.0.0.1
        for _ in range(4):
            await flood.one("127.0.0.5", 0, send_header=False)
        assert await flood.many("127.0.0.1", 6) == [b"ANSWER\n"] * 6
        assert server.peer_sessions("127.0.0.5") == 4  # accepted before the ANSWERs
        call = await asyncio.wait_for(real_call(server.port), 5)  # 127.0.0.1: at its cap
        assert call == [b"ANSWER\n", b"GET DATA ivr/menu 5000 1\n",
                        b"SET VARIABLE IVR_NEXT 2\n"]
        assert _delta(before, "agi.sessions.shed") == 1
        assert server.peer_sessions("127.0.0.1") == 5
        assert await flood.one("127.0.0.1", 7) == b"ANSWER\n"  # full again: 6 + 4
        # from a third address: the global limit; the longest-stalled session goes,
        # a silent one (it has owed its header since before the ANSWERs were sent)
        call = await asyncio.wait_for(real_call(server.port, "127.0.0.9"), 5)
        assert call[0] == b"ANSWER\n"
        assert _delta(before, "agi.sessions.shed") == 2
        assert server.peer_sessions("127.0.0.5") == 3
        assert server.peer_sessions("127.0.0.1") == 6
    await asyncio.wait_for(server.close(grace=0), 10)
    assert _delta(before, "agi.sessions.completed") == 2


async def test_a_real_asterisk_is_not_shed_for_an_address_holding_fewer() -> None:
    """With nothing stalled, a newcomer only takes the slot of an address holding more
    sessions than its own: equal shares are kept, the newcomer is refused."""
    before = METRICS.snapshot()
    server = await _server_with(menu, max_sessions=4, max_sessions_per_peer=4)
    assert server.port
    with flood_of(server.port) as flood:
        assert await flood.many("127.0.0.1", 2) == [b"GET DATA ivr/menu 5000 1\n"] * 2
        assert await flood.many("127.0.0.2", 2) == [b"GET DATA ivr/menu 5000 1\n"] * 2
        assert await flood.one("127.0.0.2", 9) == b""  # 2 vs 2: refused
        assert _delta(before, "agi.sessions.dropped.over_capacity") == 1
        assert await flood.one("127.0.0.3", 9) == b"GET DATA ivr/menu 5000 1\n"  # 0 vs 2
        assert _delta(before, "agi.sessions.shed") == 1
    await asyncio.wait_for(server.close(grace=0), 10)
