"""Emulator conformance of what three-way calls and recording hooks drive beyond the
traces (issue 11): MixMonitorMute — the errors of app_mixmonitor.c
manager_mute_mixmonitor in its order, the event as in trace 02, muted spans written as
silence in the leg of their direction — and ConfbridgeKick's answers (app_confbridge.c)."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

from ivr.ami.client import AMIClient, AMISettings
from ivr.ami.messages import Response
from ivr.sim import CallerScript, Emulator, EmulatorConfig
from ivr.sim.clock import VirtualClock
from ivr.sim.synth_calls import load_trace
from tests.conftest import TRACES


def _silent_seconds(path: Path) -> int:
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        data = w.readframes(w.getnframes())
    samples = memoryview(data).cast("h")
    return sum(1 for i in range(0, len(samples) - rate + 1, rate)
               if max(abs(x) for x in samples[i:i + rate]) == 0)


async def test_mixmonitor_mute_errors_event_and_silence(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with Emulator(EmulatorConfig(clock=clock, record_dir=tmp_path)) as emu:
        client = AMIClient("127.0.0.1", emu.ami_port, username="ivr", secret="ivrsecret",
                           settings=AMISettings(ping_interval=0))
        await client.start()
        try:
            events: list[dict[str, str]] = []
            client.on_event("MixMonitorMute", lambda e: events.append(dict(e.items())))
            call = await emu.place_call(CallerScript(exten="6001", talk_time=None,
                                                     patience=None))
            name = call.channel.name

            async def mute(**fields: str) -> str:
                with clock.holding():
                    reply = await client.send_action("MixMonitorMute", fields)
                assert isinstance(reply, Response)
                return "Success" if reply.success else reply.message

            # manager_mute_mixmonitor: direction, channel, state, then the audiohook
            assert await mute(Channel=name, State="1") == (
                "No direction specified. Must be read, write or both")
            assert await mute(Channel=name, Direction="up", State="1") == (
                "Invalid direction specified. Must be read, write or both")
            assert await mute(Direction="read", State="1") == "No channel specified"
            assert await mute(Channel=name, Direction="read") == "No state specified"
            assert await mute(Channel="SIP/nobody-1", Direction="read", State="1") == (
                "No such channel")
            assert await mute(Channel=name, Direction="read", State="1") == (
                "Cannot set mute flag")  # no recording on it
            with clock.holding():
                await client.send_action("MixMonitor", {
                    "Channel": name, "File": "rec.wav",
                    "Options": "r(rec-in.wav)t(rec-out.wav)"}, check=True)
            await clock.sleep(2.0)
            assert await mute(Channel=name, Direction="read", State="1") == "Success"
            await clock.sleep(3.0)
            assert await mute(Channel=name, Direction="read", State="0") == "Success"
            await clock.sleep(2.0)
            with clock.holding():
                await client.send_action("StopMixMonitor", {"Channel": name}, check=True)
            emu.pbx.request_hangup(call.channel, 16)
            await call.wait()
        finally:
            await client.close()
    # the event as Asterisk sends it (trace 02): the channel's block, Direction, State
    recorded = next(e for e in load_trace(
        next(TRACES.glob("02*")) / "ami.server.raw") if e.name == "MixMonitorMute")
    assert [e["State"] for e in events] == ["1", "0"]
    assert [e["Direction"] for e in events] == ["read", "read"]
    assert list(events[0]) == [k for k, _ in recorded.items()]
    # 7 s recorded; the caller's own voice (r(): read) silent for the 3 muted seconds
    assert _silent_seconds(tmp_path / "rec-in.wav") == 3
    assert _silent_seconds(tmp_path / "rec-out.wav") == 0
    assert _silent_seconds(tmp_path / "rec.wav") == 0  # only both muted silences the mix


async def test_confbridge_kick_answers_as_app_confbridge() -> None:
    """action_confbridgekick: its checks in order, and what it answers for a channel that
    is not in the conference and for ``participants`` (trace 12 has 'User kicked' and
    'All participants kicked')."""
    clock = VirtualClock()
    async with Emulator(EmulatorConfig(clock=clock)) as emu:
        client = AMIClient("127.0.0.1", emu.ami_port, username="ivr", secret="ivrsecret",
                           settings=AMISettings(ping_interval=0))
        await client.start()
        try:
            async def kick(**fields: str) -> str:
                with clock.holding():
                    reply = await client.send_action("ConfbridgeKick", fields)
                assert isinstance(reply, Response)
                return reply.message

            assert await kick(Channel="all") == "No Conference name provided."
            assert await kick(Conference="9009", Channel="all") == "No active conferences."
            joined: list[str] = []
            both_in = asyncio.Event()

            def tap(name: str, body: str) -> None:
                if name == "ConfbridgeJoin":
                    joined.append(body)
                    if len(joined) == 2:
                        both_in.set()

            emu.bus.tap.append(tap)
            calls = [await emu.place_call(CallerScript(exten="6001", talk_time=None,
                                                       patience=None)) for _ in range(2)]
            for call in calls:
                with clock.holding():
                    await client.send_action("Redirect", {
                        "Channel": call.channel.name, "Context": "conf", "Exten": "9009",
                        "Priority": "1"}, check=True)
            async with asyncio.timeout(20):
                await both_in.wait()
            assert await kick(Conference="9010", Channel="all") == (
                "No Conference by that name found.")
            assert await kick(Conference="9009", Channel="SIP/nobody-1") == (
                "No Channel by that name found in Conference.")
            assert await kick(Conference="9009") == (
                "No Channel by that name found in Conference.")
            assert await kick(Conference="9009", Channel=calls[0].channel.name.upper()) == (
                "User kicked")
            assert await kick(Conference="9009", Channel="participants") == "User kicked"
            for call in calls:
                await call.wait()
        finally:
            await client.close()
