"""The recordings worker in the application object: an emulated call recorded by
MixMonitor (r()/t() legs) is archived after it ends and its ``recording.ready``
(``stage: archived``) reaches the ticket backend after ``call.ended``, in seq order."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from ivr.ami.client import AMISettings
from ivr.app import BRIDGE, RECORDINGS, AppOptions, build_app, running
from ivr.config import Settings, load_settings
from ivr.demo import SIM_AMI_SECRET, SIM_AMI_USER
from ivr.sim.callers import CallerScript
from ivr.sim.emulator import Emulator, EmulatorConfig
from ivr.ticketsink.server import TicketSink

FAST = AMISettings(ping_interval=0)


def settings_for(emu: Emulator, sink: TicketSink, redis_url: str, **changes: Any) -> Settings:
    base = replace(load_settings(env={}), ami_host="127.0.0.1", ami_port=emu.ami_port,
                   ami_user=SIM_AMI_USER, ami_secret=SIM_AMI_SECRET, agi_host="127.0.0.1",
                   agi_port=0, redis_url=redis_url, **changes)
    return replace(base, events=base.events.with_(
        ticket_url=sink.events_url, secret="s3cret",
        stream_prefix=f"test:rec:{uuid.uuid4().hex[:8]}"))


def archived(store: Any) -> list[tuple[Any, dict[str, Any]]]:
    return [(t, e) for t in store.tickets.values() for e in t.events
            if e["type"] == "recording.ready" and e["data"].get("stage") == "archived"]


async def test_no_recordings_dir_no_worker(redis_url: str) -> None:
    async with Emulator(EmulatorConfig()) as emu, TicketSink(b"s3cret") as sink:
        app = build_app(settings_for(emu, sink, redis_url), AppOptions(watch_s=None, ami=FAST))
        assert "_recordings" not in [f.__name__ for f in app.cleanup_ctx]


async def test_emulated_recorded_call_is_archived_and_delivered(
        redis_url: str, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    spool = tmp_path / "spool"
    spool.mkdir()
    async with Emulator(EmulatorConfig(speed=20)) as emu, TicketSink(b"s3cret") as sink:
        settings = settings_for(emu, sink, redis_url, recordings_dir=archive)
        app = build_app(settings, AppOptions(watch_s=None, ami=FAST))
        async with running(app):
            assert app[RECORDINGS].config.dir == archive
            call = await emu.place_call(CallerScript(number="13900139000", exten="6001",
                                                     talk_time=None, patience=None))
            stem = spool / "rec"
            reply = await app[BRIDGE].ami.send_action("MixMonitor", {
                "Channel": call.channel.name, "File": f"{stem}.wav",
                "Options": f"r({stem}-in.wav)t({stem}-out.wav)"})
            assert reply.success, reply
            await emu.clock.sleep(3.0)  # three emulated seconds are recorded
            emu.pbx.request_hangup(call.channel, 16)
            await call.wait()
            async with asyncio.timeout(30):
                await sink.wait_for(lambda store: bool(archived(store)))
        ((ticket, ev),) = archived(sink.store)
    types = [e["type"] for e in ticket.events]
    assert types[-3:] == ["recording.ready", "call.ended", "recording.ready"]
    assert [e["seq"] for e in ticket.events] == list(range(1, len(types) + 1))
    data = ev["data"]
    path = archive / data["location"]
    assert path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == data["sha256"]
    assert data["channels"] == 2 and data["format"] == "mp3"
    assert 2.5 <= data["duration_s"] <= 4.0
    assert not stem.with_suffix(".wav").exists()  # archived, verified, delivered: raw gone
