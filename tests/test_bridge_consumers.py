"""The bridge's AMI consumers (:class:`ivr.bridge.AmiConsumer`): each declares the AMI
events (and ``VarSet`` variables) it reads; the bridge passes it exactly those, in wire
order; the AMI event filter it asks for is the union of the declarations; every
consumer's ``resync`` runs after every (re)connect.  Over a real socket with
tests/ami_peer.py speaking the recorded Asterisk 20 bytes of trace 02."""

from __future__ import annotations

import asyncio

from ivr.agents.state import CONSUMED_AMI_EVENTS as QUEUE_EVENTS
from ivr.agi.channel import AGIChannel
from ivr.ami.backoff import Backoff
from ivr.ami.client import AMIClient, AMISettings
from ivr.ami.include_filter import include_filter
from ivr.ami.messages import Action, Event
from ivr.bridge import AmiConsumer, Bridge, consumer_filter
from ivr.callstats import CallStats
from ivr.config import Settings
from ivr.events.builder import CONSUMED_AMI_EVENTS, CONSUMED_VARIABLES
from ivr.sim.eventfilter import FilterSet, parse_filter

from .ami_peer import AMIPeer, load_library, parse_one

FAST = AMISettings(ping_interval=0, action_timeout=5,
                   backoff=Backoff(initial=0.01, factor=2, cap=0.05, jitter=0.5))
TRACE = "02-ivr-queue-record-threeway"


class Recorder:
    """A consumer that writes what it gets into a log shared with the others."""

    def __init__(self, name: str, events: set[str], log: list[tuple[str, int]],
                 variables: frozenset[str] = frozenset()) -> None:
        self.name = name
        self.consumed_ami_events = frozenset(events)
        self.consumed_variables = variables
        self.log = log
        self.got: list[Event] = []
        self.resyncs = 0
        self.resynced = asyncio.Event()
        self.pinged: list[bool] = []
        self.stop_at = -1  # the wire position whose event sets ``reached``
        self.reached = asyncio.Event()

    def on_ami_event(self, event: Event) -> None:
        self.got.append(event)
        seq = int(event.get("Seq") or -1)
        self.log.append((self.name, seq))
        if seq == self.stop_at:
            self.reached.set()

    async def resync(self, client: AMIClient) -> bool:
        reply = await client.send_action("Ping")  # what Asterisk lists, via the client
        self.pinged.append(bool(getattr(reply, "success", False)))
        self.resyncs += 1
        self.resynced.set()
        return True


class Failing(Recorder):
    async def resync(self, client: AMIClient) -> bool:
        raise RuntimeError("boom")


def _settings(port: int) -> Settings:
    return Settings(ami_host="127.0.0.1", ami_port=port, ami_secret="ivrsecret",
                    agi_host="127.0.0.1", agi_port=0)


async def _no_ivr(channel: AGIChannel) -> None:
    raise AssertionError("no FastAGI in this test")


def _numbered(frames: list[bytes]) -> list[bytes]:
    """Each frame with a ``Seq: n`` header (its wire position) to check the order."""
    return [f[:-2] + f"Seq: {i}\r\n\r\n".encode() for i, f in enumerate(frames)]


async def _filter_action(peer: AMIPeer, conn: int) -> Action:
    """The next ``Filter`` action the peer received on connection ``conn``."""
    while True:
        index, action = await peer.received.get()
        if index == conn and action.name == "Filter":
            return action


def test_filter_is_the_union_of_what_the_consumers_declare() -> None:
    log: list[tuple[str, int]] = []
    a = Recorder("a", {"Newchannel", "Hangup"}, log)
    b = Recorder("b", {"Hangup", "BridgeEnter", "VarSet"}, log, frozenset({"IVR_LANG"}))
    c = Recorder("c", {"VarSet"}, log, frozenset({"IVR_QUEUE"}))
    assert consumer_filter([a, b, c]) == include_filter(
        {"Newchannel", "Hangup", "BridgeEnter", "VarSet"}, {"IVR_LANG", "IVR_QUEUE"})
    # a consumer reading every VarSet (no variable named) widens it to every VarSet
    d = Recorder("d", {"VarSet"}, log)
    fs = FilterSet([parse_filter("eventfilter", consumer_filter([b, d]))])
    assert fs.allows(b"Event: VarSet\r\nVariable: ANYTHING\r\n\r\n")
    assert not FilterSet([parse_filter("eventfilter", consumer_filter([b, c]))]).allows(
        b"Event: VarSet\r\nVariable: ANYTHING\r\n\r\n")
    # declared twice (Newchannel, Hangup) is asked for once
    real: list[AmiConsumer] = [CallStats(), a]
    assert consumer_filter(real) == include_filter(
        CallStats.CONSUMED_AMI_EVENTS | a.consumed_ami_events)


async def test_events_reach_each_consumer_in_wire_order_and_filter_is_the_union() -> None:
    lib = load_library("01-login-and-basics", TRACE)
    frames = _numbered([f for f in lib.events if f.startswith(b"Event: ")])
    names = [parse_one(f).get("Event") for f in frames]
    log: list[tuple[str, int]] = []
    a = Recorder("a", {"Newchannel", "Hangup", "QueueCallerJoin"}, log)
    b = Recorder("b", {"Hangup", "AgentConnect", "VarSet"}, log,
                 frozenset(CONSUMED_VARIABLES))
    want_a = [i for i, n in enumerate(names) if n in a.consumed_ami_events]
    want_b = [i for i, n in enumerate(names) if n in b.consumed_ami_events]
    assert max(want_a) <= max(want_b)  # b gets the last event either reads, after a
    async with AMIPeer(lib) as peer:
        bridge = Bridge(_settings(peer.port), ivr_handler=_no_ivr, consumers=[a, b],
                        ami_settings=FAST)
        async with bridge:
            flt = await _filter_action(peer, 0)
            assert flt.get("Operation") == "Add"
            assert flt.get("Filter") == include_filter(
                {"Newchannel", "Hangup", "QueueCallerJoin", "AgentConnect", "VarSet"},
                CONSUMED_VARIABLES)
            assert a.resyncs == b.resyncs == 1  # the first resync ran before start returned
            b.stop_at = want_b[-1]
            await peer.push(b"".join(frames))
            async with asyncio.timeout(5):
                await b.reached.wait()
    assert want_a and want_b and set(want_a) & set(want_b)  # Hangups go to both
    assert [int(e.get("Seq") or -1) for e in a.got] == want_a
    assert [int(e.get("Seq") or -1) for e in b.got] == want_b
    # one event at a time, to each consumer that reads it in registration order
    expected = [(name, i) for i, n in enumerate(names) for name, c in (("a", a), ("b", b))
                if n in c.consumed_ami_events]
    assert log == expected


async def test_every_consumer_resyncs_after_a_reconnect_with_the_filter_again() -> None:
    log: list[tuple[str, int]] = []
    a = Recorder("a", {"Newchannel"}, log)
    broken = Failing("broken", {"Hangup"}, log)
    b = Recorder("b", {"Hangup"}, log)
    async with AMIPeer(load_library("01-login-and-basics")) as peer:
        bridge = Bridge(_settings(peer.port), ivr_handler=_no_ivr,
                        consumers=[a, broken, b], ami_settings=FAST)
        async with bridge:
            await _filter_action(peer, 0)
            assert (a.resyncs, b.resyncs) == (1, 1)  # a failing resync stops no other one
            a.resynced.clear()
            b.resynced.clear()
            peer.drop(0)
            async with asyncio.timeout(5):
                flt = await _filter_action(peer, 1)  # the filter again on the new session
                await a.resynced.wait()
                await b.resynced.wait()
            assert flt.get("Filter") == include_filter({"Newchannel", "Hangup"})
            assert (a.resyncs, b.resyncs) == (2, 2)
            assert a.pinged == [True, True]  # each resync talked to Asterisk


def test_the_application_filter_covers_every_slice() -> None:
    """The figures, the call-event pipeline and the queues, as ivr/app.py registers them:
    the filter is exactly the union of their declarations."""
    from ivr.agents.monitor import QueueMonitor

    class Feed:  # the call-event feed's declaration without a pipeline
        consumed_ami_events = CONSUMED_AMI_EVENTS
        consumed_variables = CONSUMED_VARIABLES

        def on_ami_event(self, event: Event) -> None: ...

        async def resync(self, client: AMIClient) -> bool:
            return True

    consumers: list[AmiConsumer] = [CallStats(), Feed(), QueueMonitor()]
    assert consumer_filter(consumers) == include_filter(
        CallStats.CONSUMED_AMI_EVENTS | CONSUMED_AMI_EVENTS | QUEUE_EVENTS, CONSUMED_VARIABLES)
