"""Emulator conformance of MixMonitorMute (issue 11, recording hooks): the errors of
app_mixmonitor.c manager_mute_mixmonitor in its order, the MixMonitorMute event as in
trace 02, and muted spans written as silence in the leg of their direction."""

from __future__ import annotations

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
