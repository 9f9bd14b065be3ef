"""One regression test per panoramisk 1.4 pitfall that the AMI layer replaces
(/work/shared/design/known-pitfalls.md, panoramisk 1, 4, 5, 6, 7, 8, 9)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from panoramisk.ami_protocol import AMIProtocol

from ivr.ami.backoff import Backoff
from ivr.ami.client import AMIClient, AMISettings
from ivr.ami.codec import AMIParser
from ivr.ami.errors import AMIActionNotRetried, AMIActionTimeout
from ivr.ami.messages import Action, Event, EventList, Response
from ivr.ami.safety import is_resend_safe
from ivr.metrics import METRICS

from .ami_peer import AMIPeer, load_library

FAST = AMISettings(ping_interval=0, action_timeout=5,
                   backoff=Backoff(initial=0.01, cap=0.05, jitter=0.5))
TRACE02 = load_library("02-ivr-queue-record-threeway")
AGENT_CONNECT = next(f for f in TRACE02.events if f.startswith(b"Event: AgentConnect"))


class _PanoramiskFactory:
    """The least a panoramisk AMIProtocol needs to parse and dispatch."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.forgetable_actions = ("ping", "login")
        self.awaiting_actions: list[Any] = []
        self.save_stream = None

    def dispatch(self, message: Any) -> None:
        self.events.append(message)


class _Transport:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def _client(peer: AMIPeer, **kw: Any) -> AMIClient:
    return AMIClient("127.0.0.1", peer.port, username="ivr", secret="ivrsecret", **kw)


@pytest.fixture
async def peer() -> AsyncIterator[AMIPeer]:
    async with AMIPeer() as p:
        yield p


# 1. Chinese text silently lost when a UTF-8 character is split across TCP reads. ------


@pytest.mark.parametrize("offset", [1, 2])
def test_pitfall_1_chinese_split_across_reads(offset: int) -> None:
    cut = AGENT_CONNECT.index("张".encode()) + offset
    parser = AMIParser(expect_banner=False)
    assert parser.feed(AGENT_CONNECT[:cut]) == []
    (event,) = parser.feed(AGENT_CONNECT[cut:])
    assert isinstance(event, Event)
    assert event["CallerIDName"] == "张三"
    # What panoramisk 1.4 does with the same two reads (the bug this replaces):
    proto = AMIProtocol()
    proto.connection_made(_Transport())
    proto.factory = _PanoramiskFactory()
    proto.encoding = "utf8"
    proto.data_received(AGENT_CONNECT[:cut])
    proto.data_received(AGENT_CONNECT[cut:])
    assert proto.factory.events[0]["CallerIDName"] == "三"


# 4. A raising event handler kills the connection and loses the rest of the chunk. -----


async def test_pitfall_4_raising_handler_keeps_connection_and_chunk(peer: AMIPeer) -> None:
    got: list[str] = []
    last = asyncio.Event()

    def bad(_e: Event) -> None:
        raise KeyError("bug")

    def good(e: Event) -> None:
        got.append(e.name)
        if e.name == "Last":
            last.set()

    before = METRICS.get("ami.handler_error")
    async with _client(peer, settings=FAST) as ami:
        ami.on_event("AgentConnect", bad)
        ami.on_event("*", good)
        await peer.push(AGENT_CONNECT + b"Event: Last\r\n\r\n")  # one write, one chunk
        await last.wait()
        assert ami.connected and ami.connects == 1
    assert got == ["AgentConnect", "Last"]
    assert METRICS.get("ami.handler_error") == before + 1


def test_pitfall_4_dispatch_isolates_handlers_without_a_loop() -> None:
    ami = AMIClient(username="ivr", secret="x")
    calls: list[str] = []
    ami.on_event("Queue*", lambda e: calls.append("first") or 1 / 0)  # type: ignore[func-returns-value]
    ami.on_event("Queue*", lambda e: calls.append("second"))
    ami.on_event("Agent*", lambda e: calls.append("never"))
    matched = ami.dispatch(Event({"Event": "QueueMemberAdded"}))
    assert matched == ["Queue*"] and calls == ["first", "second"]


# 5. Ping never checks for the reply: a half-open connection is never noticed. ---------


async def test_pitfall_5_unanswered_ping_declares_connection_dead(peer: AMIPeer) -> None:
    # The peer keeps talking (events) but never answers Ping on the first connection.
    peer.policy = lambda i, a: "ignore" if (i == 0 and a.name == "Ping") else "reply"
    connects: asyncio.Queue[int] = asyncio.Queue()
    pings: list[int] = []

    def on_ping_seen(_e: Event) -> None:
        pings.append(1)

    ami = _client(peer, settings=AMISettings(
        ping_interval=0.05, ping_timeout=0.15,
        backoff=Backoff(initial=0.01, cap=0.05)),
        on_connect=lambda c: connects.put_nowait(c.connects))
    async with ami:
        assert await connects.get() == 1
        idx, ping = await _next(peer, "Ping")
        assert idx == 0
        await peer.push(b"Event: Heartbeat\r\n\r\n", conn=0)  # traffic is not a Pong
        assert await connects.get() == 2
    pinged = [a for a in peer.conns[0].actions if a.name == "Ping"]
    assert pinged and ping.action_id == pinged[0].action_id


# 6. Actions have no timeout; an action cut by a disconnect may never resolve. ---------


async def test_pitfall_6_every_action_resolves(peer: AMIPeer) -> None:
    peer.policy = lambda i, a: "ignore" if (i == 0 and a.name in ("Getvar", "Redirect")) \
        else "reply"
    async with _client(peer, settings=FAST) as ami:
        with pytest.raises(AMIActionTimeout):
            await ami.send_action("Getvar", {"Variable": "GLOBAL(FASTAGI)"}, timeout=0.05)
        redirect = asyncio.ensure_future(ami.send_action("Redirect", {
            "Channel": "SIP/nobody-00000000", "Context": "conf", "Exten": "1",
            "Priority": "1"}))
        getvar = asyncio.ensure_future(ami.send_action("Getvar",
                                                       {"Variable": "GLOBAL(FASTAGI)"}))
        await _next(peer, "Getvar")
        await _next(peer, "Getvar")
        peer.drop(0)
        with pytest.raises(AMIActionNotRetried):
            await redirect
        reply = await getvar  # safe: re-sent on the new connection and answered there
        assert isinstance(reply, Response) and reply["Value"] == "agi://127.0.0.1:4573"


# 7. Unanswered actions are re-sent after reconnect (Originate twice = two calls). -----


@pytest.mark.parametrize(("action", "fields", "safe"), [
    ("Ping", {}, True),
    ("QueueStatus", {"Queue": "hotline"}, True),
    ("CoreShowChannels", {}, True),
    ("Getvar", {"Variable": "X"}, True),
    ("Command", {"Command": "core show channels"}, True),
    ("Command", {"Command": "  Core   Show version"}, True),
    ("Command", {"Command": "core stop now"}, False),
    ("Command", {"Command": "channel request hangup all"}, False),
    ("Originate", {"Channel": "Local/1@x"}, False),
    ("Redirect", {}, False),
    ("Hangup", {"Channel": "/^Local/"}, False),
    ("QueueAdd", {}, False),
    ("QueueRemove", {}, False),
    ("QueuePause", {}, False),
    ("MixMonitor", {}, False),
    ("BlindTransfer", {}, False),
    ("Atxfer", {}, False),
    ("PlayDTMF", {}, False),
    ("Setvar", {}, False),
    ("ConfbridgeKick", {}, False),
    ("SomeFutureAction", {}, False),
])
def test_pitfall_7_resend_policy(action: str, fields: dict[str, str], safe: bool) -> None:
    assert is_resend_safe(action, fields) is safe
    assert is_resend_safe(action.upper(), fields) is safe


async def test_pitfall_7_originate_in_flight_is_not_sent_again(peer: AMIPeer) -> None:
    peer.policy = lambda i, a: "drop" if (i == 0 and a.name == "Originate") else "reply"
    connects: asyncio.Queue[int] = asyncio.Queue()
    async with _client(peer, settings=FAST,
                       on_connect=lambda c: connects.put_nowait(c.connects)) as ami:
        assert await connects.get() == 1
        with pytest.raises(AMIActionNotRetried, match="not re-sent"):
            await ami.send_action("Originate", {"Channel": "Local/12345@from-pstn",
                                                "Application": "Wait", "Data": "90"})
        assert await connects.get() == 2
        reply = await ami.send_action("Ping")
        assert isinstance(reply, Response) and reply.success
    originates = [a for c in peer.conns for a in c.actions if a.name == "Originate"]
    assert len(originates) == 1


# 8. List replies guessed from message text; repeated headers list-or-str. -------------


def test_pitfall_8_lists_detected_by_eventlist_header_not_text() -> None:
    parser = AMIParser(expect_banner=False)
    items = parser.feed(
        b"Response: Success\r\nActionID: a\r\nMessage: Channels will follow\r\n\r\n"
        b"Response: Success\r\nActionID: b\r\nEventList: start\r\nMessage: ok\r\n\r\n"
        b"Event: X\r\nActionID: b\r\n\r\n"
        b"Event: XComplete\r\nActionID: b\r\nEventList: Complete\r\nListItems: 1\r\n\r\n")
    assert isinstance(items[0], Response) and items[0].action_id == "a"
    assert isinstance(items[1], EventList) and [e.name for e in items[1].events] == ["X"]
    assert len(items) == 2


def test_pitfall_8_getall_is_always_a_list() -> None:
    (one, many) = AMIParser(expect_banner=False).feed(
        b"Response: Success\r\nActionID: 1\r\nOutput: only line\r\n\r\n"
        b"Response: Success\r\nActionID: 2\r\nOutput: a\r\nOutput: \r\nOutput: c\r\n\r\n")
    assert isinstance(one, Response) and isinstance(many, Response)
    assert one.getall("Output") == ["only line"]
    assert many.getall("Output") == ["a", "", "c"]
    assert one.getall("Missing") == [] and many.get("Output") == "a"


# 9. asyncio.get_event_loop() at construction. -------------------------------------------


def test_pitfall_9_construction_needs_no_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*_a: object) -> None:
        raise AssertionError("event loop touched at construction")

    monkeypatch.setattr(asyncio, "get_event_loop", forbidden)
    monkeypatch.setattr(asyncio, "get_running_loop", forbidden)
    monkeypatch.setattr(asyncio, "new_event_loop", forbidden)
    ami = AMIClient("127.0.0.1", 5038, username="ivr", secret="x")
    ami.on_event("*", lambda e: None)
    assert not ami.connected
    assert not hasattr(ami, "connect")  # no panoramisk connect() (get_event_loop) to call


def test_pitfall_9_client_built_outside_runs_inside_a_loop() -> None:
    lib = load_library("01-login-and-basics")

    async def use(ami: AMIClient) -> Response | EventList:
        async with AMIPeer(lib) as peer:
            ami.port = peer.port
            async with ami:
                return await ami.send_action("Ping")

    ami = AMIClient("127.0.0.1", 1, username="ivr", secret="ivrsecret", settings=FAST)
    reply = asyncio.run(use(ami))
    assert isinstance(reply, Response) and reply.success


async def _next(peer: AMIPeer, name: str) -> tuple[int, Action]:
    while True:
        idx, action = await peer.received.get()
        if action.name == name:
            return idx, action
