"""AMI client against hostile or broken servers (issue 14 item 7), over real sockets on
127.0.0.1 with tests/ami_peer.py speaking the recorded Asterisk 20 bytes: sessions that
do not last are backed off, a list result that never completes is capped, a banner
timeout says what happened."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from ivr.ami.backoff import Backoff
from ivr.ami.client import AMIClient, AMISettings
from ivr.ami.codec import AMIParser
from ivr.ami.errors import AMIActionTimeout, AMIConnectionError, AMIListTooLarge
from ivr.ami.messages import Event, EventList, ProtocolIssue
from ivr.errors import ConfigError
from ivr.metrics import METRICS

from .ami_peer import AMIPeer, load_library, rewrite_id

FAST = Backoff(initial=0.01, factor=2, cap=10, jitter=0, reset_after=60)


class Records(logging.Handler):
    """Log records of ``ivr.ami.client`` with a given message, as they are emitted."""

    def __init__(self, message: str) -> None:
        super().__init__(logging.DEBUG)
        self.message = message
        self.queue: asyncio.Queue[logging.LogRecord] = asyncio.Queue()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == self.message:
            self.queue.put_nowait(record)

    async def next_fields(self) -> dict[str, object]:
        record = await self.queue.get()
        fields = record.fields  # type: ignore[attr-defined]
        assert isinstance(fields, dict)
        return fields


@pytest.fixture
def reconnect_waits() -> Iterator[Records]:
    handler = Records("ami.reconnect_wait")
    logger = logging.getLogger("ivr.ami.client")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def make(port: int, **kw: object) -> AMIClient:
    return AMIClient("127.0.0.1", port, username="ivr", secret="ivrsecret",
                     **kw)  # type: ignore[arg-type]


# -- sessions that do not last --------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_server_that_takes_the_login_and_closes_is_backed_off(
    reconnect_waits: Records,
) -> None:
    """Before: the back-off reset on each login, so such a server got a login (and the
    bridge's filter + CoreShowChannels) every `initial` seconds for ever."""
    clock = FakeClock()
    logins: asyncio.Queue[int] = asyncio.Queue()
    async with AMIPeer() as peer:
        ami = make(peer.port, settings=AMISettings(ping_interval=0, backoff=FAST),
                   on_connect=lambda c: logins.put_nowait(c.connects), clock=clock)
        async with ami:
            delays = []
            for n in range(1, 6):
                assert await logins.get() == n
                peer.drop()  # right after the login: the session did not last
                fields = await reconnect_waits.next_fields()
                assert "closed the connection" in str(fields["error"])
                delays.append(fields["delay"])
            assert delays == [0.01, 0.02, 0.04, 0.08, 0.16]  # 0.01 each before the fix
            # a session that lasted reset_after seconds resets the count
            assert await logins.get() == 6
            clock.now += 60
            peer.drop()
            assert (await reconnect_waits.next_fields())["delay"] == 0.01
            assert await logins.get() == 7
            peer.drop()
            assert (await reconnect_waits.next_fields())["delay"] == 0.02


def test_backoff_next_attempt_and_reset_after_validation() -> None:
    b = Backoff(reset_after=30)
    assert b.next_attempt(5, None) == 5  # no login at all
    assert b.next_attempt(5, 29.9) == 5
    assert b.next_attempt(5, 30.0) == 0
    assert Backoff().reset_after == 30.0  # longer than ping_interval + ping_timeout (25 s)
    with pytest.raises(ConfigError, match="reset_after"):
        Backoff(reset_after=-1)


# -- a banner that never comes ---------------------------------------------------------------


async def test_banner_timeout_says_what_happened(reconnect_waits: Records) -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)  # accepts, never writes the banner

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ami = make(port, settings=AMISettings(ping_interval=0, connect_timeout=0.05,
                                          backoff=FAST))
    starting = asyncio.create_task(ami.start())
    try:
        fields = await asyncio.wait_for(reconnect_waits.next_fields(), 5)
        error = str(fields["error"])
        assert error != "TimeoutError: "  # what it logged before
        assert f"connected to 127.0.0.1:{port} but no AMI banner came within 0.05s" in error
        assert "未收到 AMI 欢迎行" in error
    finally:
        await ami.close()
        with pytest.raises(AMIConnectionError, match="closed"):
            await starting
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


# -- a list result that never completes --------------------------------------------------------


@pytest.fixture
async def list_peer() -> AsyncIterator[AMIPeer]:
    """Trace 02's peer; the first CoreShowChannels is left to the test to answer."""
    seen = {"n": 0}

    def policy(_i: int, action: object) -> str:
        if getattr(action, "name", "") == "CoreShowChannels":
            seen["n"] += 1
            return "ignore" if seen["n"] == 1 else "reply"
        return "reply"

    async with AMIPeer(load_library("01-login-and-basics", "02-ivr-queue-record-threeway"),
                       policy=policy) as peer:
        yield peer


async def _list_started(peer: AMIPeer) -> tuple[str, bytes, bytes, bytes]:
    """(ActionID of the CoreShowChannels sent, its start response, one CoreShowChannel
    event, the Complete event), from the trace, ActionID rewritten."""
    while True:
        _, action = await peer.received.get()
        if action.name == "CoreShowChannels":
            break
    aid = action.action_id
    assert aid is not None
    entry = peer.lib.find(action)
    assert entry is not None
    start, event, complete = entry.frames[0], entry.frames[1], entry.frames[-1]
    assert b"EventList: start" in start and b"EventList: Complete" in complete
    return aid, rewrite_id(start, aid), rewrite_id(event, aid), rewrite_id(complete, aid)


@pytest.mark.parametrize("cap", ["events", "bytes"])
async def test_a_list_over_the_cap_fails_its_action_and_the_connection_goes_on(
    list_peer: AMIPeer, cap: str
) -> None:
    before = METRICS.get("ami.eventlist.too_large")
    limits = {"max_list_events": 100} if cap == "events" else {"max_list_bytes": 8192}
    dispatched: list[Event] = []
    ami = make(list_peer.port, settings=AMISettings(ping_interval=0, backoff=FAST,
                                                    action_timeout=30, **limits))  # type: ignore[arg-type]
    ami.on_event("CoreShowChannel*", dispatched.append)
    async with ami:
        listing = asyncio.ensure_future(ami.send_action("CoreShowChannels"))
        aid, start, event, complete = await _list_started(list_peer)
        # the server streams events of that list and never completes it (96 MB seen)
        await list_peer.push(start + event * 150)
        with pytest.raises(AMIListTooLarge, match="CoreShowChannels") as info:
            await asyncio.wait_for(listing, 5)  # at once, not after action_timeout (30 s)
        assert aid in str(info.value) and "max_list_events / max_list_bytes" in str(info.value)
        assert ("more than 100 events" if cap == "events" else "over 8192 bytes") in str(
            info.value)
        await list_peer.push(event * 1000)  # the rest is neither held nor dispatched
        assert ami.connected and len(list_peer.conns) == 1
        listed = await ami.send_action("CoreShowChannels")  # same connection, in order
        conn = ami._conn
        assert conn is not None and conn.parser.held_list_bytes == 0
        assert isinstance(listed, EventList) and listed.finished
        assert len(listed.events) == int(listed.complete["ListItems"])  # type: ignore[index]
        await list_peer.push(complete)  # the given-up list ends: discarding stops
        assert (await ami.send_action("Ping")).success  # type: ignore[union-attr]
    assert dispatched == []
    assert METRICS.get("ami.eventlist.too_large") == before + 1


async def test_a_list_whose_action_timed_out_is_not_held(list_peer: AMIPeer) -> None:
    async with make(list_peer.port, settings=AMISettings(ping_interval=0, backoff=FAST)) as ami:
        listing = asyncio.ensure_future(ami.send_action("CoreShowChannels", timeout=0.2))
        _, start, event, _ = await _list_started(list_peer)
        await list_peer.push(start + event * 10)
        with pytest.raises(AMIActionTimeout):
            await listing
        await list_peer.push(event * 10)
        assert (await ami.send_action("Ping")).success  # type: ignore[union-attr]
        conn = ami._conn
        assert conn is not None and conn.parser.held_list_bytes == 0


def test_parser_list_caps_without_io() -> None:
    lib = load_library("02-ivr-queue-record-threeway")
    entry = next(e for e in lib.entries if e.action.name == "CoreShowChannels")
    start, event, complete = entry.frames[0], entry.frames[1], entry.frames[-1]
    parser = AMIParser(expect_banner=False, max_list_events=3)
    assert parser.feed(start + event * 3) == []
    (over,) = parser.feed(event)
    assert isinstance(over, EventList) and over.overflow == "more than 3 events"
    assert over.events == [] and over.complete is None and parser.held_list_bytes == 0
    assert parser.feed(event * 5) == []
    (done,) = parser.feed(complete)
    assert isinstance(done, ProtocolIssue) and "9 of its events were discarded" in done.reason
    (again,) = parser.feed(event)  # after its Complete, that ActionID is an event again
    assert isinstance(again, Event)
    # a list within the caps is unchanged
    parser = AMIParser(expect_banner=False)
    (whole,) = parser.feed(b"".join(entry.frames))
    assert isinstance(whole, EventList) and whole.finished and whole.overflow is None
    assert parser.held_list_bytes == 0
    # abandon() only touches a list that started (a plain ActionID's events still pass)
    parser.abandon("nosuch")
    (again,) = parser.feed(event)
    assert isinstance(again, Event)
