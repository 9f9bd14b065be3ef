"""The composition root (ivr.app): parts start in order, stop in reverse, and a start-up
that fails part-way stops exactly what had started; the HTTP site is optional."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from dataclasses import replace

import aiohttp
import pytest

from ivr.ami.client import AMISettings
from ivr.ami.errors import AMIAuthError
from ivr.app import (
    BRIDGE,
    CALL_EVENTS,
    IVR,
    PIPELINE,
    PUSHER,
    QUEUES,
    STATS,
    AppOptions,
    build_app,
    running,
)
from ivr.callbacks.service import CALLBACKS
from ivr.config import Settings, load_settings
from ivr.demo import SIM_AMI_SECRET, SIM_AMI_USER
from ivr.errors import ConfigError
from ivr.sim.callers import CallerScript
from ivr.sim.emulator import Emulator, EmulatorConfig
from ivr.ticketsink.server import TicketSink

FAST = AMISettings(ping_interval=0)


def for_emulator(emu: Emulator, **changes: object) -> Settings:
    base = replace(load_settings(env={}), ami_host="127.0.0.1", ami_port=emu.ami_port,
                   ami_user=SIM_AMI_USER, ami_secret=SIM_AMI_SECRET, agi_host="127.0.0.1",
                   agi_port=0)
    return replace(base, **changes)  # type: ignore[arg-type]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_parts_start_in_order_deliver_a_call_and_stop(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with Emulator(EmulatorConfig()) as emu, TicketSink(b"s3cret") as sink:
        settings = for_emulator(emu, redis_url=redis_url)
        settings = replace(settings, events=settings.events.with_(
            ticket_url=sink.events_url, secret="s3cret",
            stream_prefix=f"test:app:{uuid.uuid4().hex[:8]}"))
        app = build_app(settings, AppOptions(watch_s=None, ami=FAST))
        assert [f.__name__ for f in app.cleanup_ctx] == [
            "_pipeline", "_pusher", "_quality", "_callbacks", "_stats", "_call_events", "_ivr",
            "_queues", "_feed", "_transfers", "_threeway", "_supervision", "_bridge", "_agents",
            "_api"]
        async with running(app) as runner:
            assert runner.addresses == []  # no [http] port: no listener
            bridge = app[BRIDGE]
            assert app[CALL_EVENTS].pipeline is app[PIPELINE] and app[IVR] and app[PUSHER]
            # the bridge's AMI consumers, registered by their parts, fed in this order
            consumers = list(bridge.consumers)
            assert consumers[:4] == [app[CALLBACKS], app[STATS], app[CALL_EVENTS], app[QUEUES]]
            assert [type(c).__name__ for c in consumers[4:]] == [
                "FeedConsumer", "TransferService", "ThreeWayService", "SupervisionService"]
            assert app[STATS].calls is app[PIPELINE].builder.calls  # one Linkedid tracker
            agi_port = bridge.agi_port
            call = await emu.place_call(CallerScript(number="13900139000", exten="6001",
                                                     talk_time=None, patience=None))
            emu.pbx.request_hangup(call.channel, 16)
            await call.wait()
            async with asyncio.timeout(30):
                await sink.wait_for(lambda store: len(store.tickets) == 1 and all(
                    t.status != "open" for t in store.tickets.values()))
        assert not bridge.ami.connected and port_is_free(agi_port)
    order = [r.getMessage() for r in caplog.records
             if r.getMessage() in ("events.pipeline.resumed", "bridge.resync", "app.started",
                                   "app.stopping", "ami.closed", "app.stopped")]
    assert order == ["events.pipeline.resumed", "bridge.resync", "app.started", "app.stopping",
                     "ami.closed", "app.stopped"]


async def test_failed_start_stops_exactly_what_had_started(redis_url: str) -> None:
    async with Emulator(EmulatorConfig()) as emu, TicketSink(b"s3cret") as sink:
        agi_port = socket.socket()
        agi_port.bind(("127.0.0.1", 0))
        port = agi_port.getsockname()[1]
        agi_port.close()
        settings = for_emulator(emu, redis_url=redis_url, ami_secret="wrong", agi_port=port)
        settings = replace(settings, events=settings.events.with_(
            ticket_url=sink.events_url, secret="s3cret",
            stream_prefix=f"test:app:{uuid.uuid4().hex[:8]}"))
        app = build_app(settings, AppOptions(watch_s=None, ami=FAST))
        before = asyncio.all_tasks()
        with pytest.raises(AMIAuthError):
            async with running(app):
                raise AssertionError("started with a wrong AMI secret")
        # the pipeline and the pusher had started and were stopped: no task of theirs
        # is left, the FastAGI port the bridge had opened is free again
        assert app[PIPELINE] and app[PUSHER]
        assert BRIDGE not in app
        assert asyncio.all_tasks() <= before
        assert port_is_free(port)


async def test_http_site_only_when_a_port_is_set() -> None:
    async with Emulator(EmulatorConfig()) as emu:
        app = build_app(for_emulator(emu, http_port=0),
                        AppOptions(events=False, watch_s=None, ami=FAST))
        async with running(app) as runner:
            (host, port), = runner.addresses
            async with aiohttp.ClientSession() as http, \
                    http.get(f"http://127.0.0.1:{port}/nothing-here") as resp:
                assert resp.status == 404  # the application answers; routes come later
        assert port_is_free(port)


def test_missing_settings_stop_before_anything_starts() -> None:
    with pytest.raises(ConfigError, match=r"\[ami\] secret"):
        build_app(Settings())
    with pytest.raises(ConfigError, match=r"\[redis\] url"):
        build_app(Settings(ami_secret="x"))
    with pytest.raises(ConfigError, match=r"\[tickets\] url"):
        build_app(Settings(ami_secret="x", redis_url="redis://127.0.0.1:9/0"))
    # without a pusher, the ticket backend is not needed here
    build_app(Settings(ami_secret="x", redis_url="redis://127.0.0.1:9/0"),
              AppOptions(pusher=False))
