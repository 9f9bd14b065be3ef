"""AMIClient event dispatch: the per-name handler cache stays right when handlers are
added or removed, and events are counted once per read over a real socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ivr.ami.backoff import Backoff
from ivr.ami.client import _DISPATCH_CACHE_MAX, AMIClient, AMISettings
from ivr.ami.messages import Event
from ivr.metrics import METRICS

from .ami_peer import AMIPeer


def ev(name: str) -> Event:
    return Event({"Event": name, "Uniqueid": "1.1"})


def test_handler_added_after_a_name_was_dispatched_is_called() -> None:
    ami = AMIClient(username="ivr", secret="x")
    got: list[str] = []
    ami.on_event("Queue*", lambda e: got.append("queue:" + e.name))
    assert ami.dispatch(ev("QueueCallerJoin")) == ["Queue*"]  # cached now
    ami.on_event("*", lambda e: got.append("all:" + e.name))
    assert ami.dispatch(ev("QueueCallerJoin")) == ["Queue*", "*"]
    assert got == ["queue:QueueCallerJoin", "queue:QueueCallerJoin", "all:QueueCallerJoin"]


def test_off_event_and_decorator_registration_refresh_the_cache() -> None:
    ami = AMIClient(username="ivr", secret="x")
    got: list[str] = []

    def h(e: Event) -> None:
        got.append("h")

    ami.on_event("Hangup", h)
    ami.dispatch(ev("Hangup"))
    ami.off_event("Hangup", h)
    assert ami.dispatch(ev("Hangup")) == []

    def deco(e: Event) -> None:
        got.append("deco")

    ami.register_event("Hang*")(deco)  # panoramisk's decorator form
    assert ami.dispatch(ev("Hangup")) == ["Hang*"]
    assert got == ["h", "deco"]


def test_returned_matches_are_a_copy() -> None:
    ami = AMIClient(username="ivr", secret="x")
    ami.on_event("*", lambda e: None)
    first = ami.dispatch(ev("Newexten"))
    first.append("tampered")
    assert ami.dispatch(ev("Newexten")) == ["*"]


def test_cache_stays_bounded_with_many_event_names() -> None:
    ami = AMIClient(username="ivr", secret="x")
    seen: list[str] = []
    ami.on_event("*", lambda e: seen.append(e.name))
    for i in range(_DISPATCH_CACHE_MAX + 10):
        ami.dispatch(ev(f"Custom{i}"))
    assert len(ami._dispatch_cache) <= _DISPATCH_CACHE_MAX
    assert len(seen) == _DISPATCH_CACHE_MAX + 10


@pytest.fixture
async def peer() -> AsyncIterator[AMIPeer]:
    async with AMIPeer() as p:
        yield p


async def test_events_over_a_socket_reach_handlers_in_order_and_are_counted(
    peer: AMIPeer,
) -> None:
    fast = AMISettings(auth="plain", ping_interval=0, backoff=Backoff(initial=0.01, cap=0.05))
    before = METRICS.get("ami.event")
    got: list[str] = []
    done = asyncio.Event()

    def on(e: Event) -> None:
        got.append(e.name)
        if e.name == "Last":
            done.set()

    async with AMIClient("127.0.0.1", peer.port, username="ivr", secret="ivrsecret",
                         settings=fast) as ami:
        ami.on_event("*", on)
        frames = b"".join(f"Event: E{i}\r\nUniqueid: 1.{i}\r\n\r\n".encode() for i in range(50))
        await peer.push(frames + b"Event: Last\r\n\r\n")
        await done.wait()
    assert got[-51:] == [f"E{i}" for i in range(50)] + ["Last"]
    assert METRICS.get("ami.event") - before >= 51
