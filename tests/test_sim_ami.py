"""AMI server: MD5 login, bad input isolation, regex Hangup."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from ivr.ami.codec import AMIParser
from ivr.ami.messages import Event, Response
from ivr.sim import CallerScript, Emulator, EmulatorConfig
from ivr.sim.clock import VirtualClock
from tests.conftest import TRACES
from tests.sim_trace_tools import read_until


async def login(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytearray]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    buf = bytearray()
    w.write(b"Action: Login\r\nActionID: l\r\nUsername: ivr\r\nSecret: ivrsecret\r\n\r\n")
    await read_until(r, buf, b"Authentication accepted")
    return r, w, buf


async def test_md5_challenge_login_and_bad_secret() -> None:
    async with Emulator(EmulatorConfig()) as emu:
        r, w = await asyncio.open_connection("127.0.0.1", emu.ami_port)
        buf = bytearray()
        w.write(b"Action: Challenge\r\nActionID: c\r\nAuthType: MD5\r\n\r\n")
        await read_until(r, buf, b"\r\n\r\n")
        p = AMIParser()
        ch = next(m for m in p.feed(bytes(buf)) if isinstance(m, Response))
        key = hashlib.md5((ch["Challenge"] + "ivrsecret").encode()).hexdigest()
        w.write(f"Action: Login\r\nActionID: l\r\nUsername: ivr\r\nAuthType: MD5\r\n"
                f"Key: {key}\r\n\r\n".encode())
        await read_until(r, buf, b"Authentication accepted")
        w.close()
        r2, w2 = await asyncio.open_connection("127.0.0.1", emu.ami_port)
        w2.write(b"Action: Login\r\nActionID: x\r\nUsername: ivr\r\nSecret: wrong\r\n\r\n")
        data = await asyncio.wait_for(r2.read(), 5)  # the server closes, as in trace 01
        recorded = (TRACES / "01-login-and-basics" / "ami-badlogin.server.raw").read_bytes()
        assert data == recorded.replace(b"cap-1", b"x")
        w2.close()


async def test_garbage_huge_frames_and_disconnects_do_not_disturb_others() -> None:
    async with Emulator(EmulatorConfig(speed=5)) as emu:  # real time: the call lasts
        r, w, buf = await login(emu.ami_port)
        call = await emu.place_call(CallerScript(exten="6001", talk_time=None, patience=None,
                                                 hangup_after=2.0))  # a call in progress
        # a vandal: garbage, an oversized frame, bad UTF-8, then vanishing mid-action
        vr, vw = await asyncio.open_connection("127.0.0.1", emu.ami_port)
        vw.write(b"\xff\xfe garbage without colon\r\n\r\n" + b"X: " + b"a" * 200_000 + b"\r\n")
        vw.write(b"Action: Originate\r\nChannel: Local/6001@from-pstn\r\nApplica")
        await vw.drain()
        vw.close()
        w.write(b"Action: Ping\r\nActionID: p\r\n\r\n")
        await read_until(r, buf, b"Ping: Pong")
        await asyncio.wait_for(call.wait(), 10)
        await read_until(r, buf, f"Event: Hangup\r\nPrivilege: call,all\r\nChannel: {call.name}"
                         .encode())
        w.close()
    assert call.channel.variables.get("AGISTATUS") is None  # 6001 ran Answer/Wait only
    assert b"Authentication failed" not in buf


async def test_regex_hangup_lists_channels() -> None:
    async with Emulator(EmulatorConfig(clock=VirtualClock())) as emu:
        r, w, buf = await login(emu.ami_port)
        w.write(b"Action: Originate\r\nActionID: o\r\nChannel: Local/6001@from-pstn\r\n"
                b"Application: Wait\r\nData: 60\r\nAsync: true\r\n\r\n")
        await read_until(r, buf, b"Event: OriginateResponse")
        w.write(b"Action: Hangup\r\nActionID: h\r\nChannel: /^Local\\/6001@from-pstn/\r\n\r\n")
        await read_until(r, buf, b"ChannelsHungupListComplete")
        w.close()
        items = AMIParser(group_lists=False).feed(bytes(buf))
        hung = [m["Channel"] for m in items if isinstance(m, Event) and m.name == "ChannelHungup"]
        assert sorted(hung) == [f"Local/6001@from-pstn-00000000;{i}" for i in (1, 2)]


async def test_broken_reload_keeps_the_old_dialplan(tmp_path: Path) -> None:
    import shutil

    from ivr.metrics import METRICS
    from ivr.sim.emulator import DEFAULT_ETC

    etc = tmp_path / "etc"
    shutil.copytree(DEFAULT_ETC, etc)
    async with Emulator(EmulatorConfig(etc=etc)) as emu:
        r, w, buf = await login(emu.ami_port)
        (etc / "extensions.conf").write_text("[from-pstn\nexten => oops\n")
        before = METRICS.get("sim.reload_failed")
        w.write(b"Action: Command\r\nActionID: c\r\nCommand: dialplan reload\r\n\r\n"
                b"Action: Ping\r\nActionID: p\r\n\r\n")
        await read_until(r, buf, b"Ping: Pong")
        w.close()
        assert buf.count(b"ActionID: c\r\n") == 1
        assert METRICS.get("sim.reload_failed") == before + 1
        assert emu.pbx.dialplan.step("from-pstn", "12345", 1) is not None


async def test_sync_originate_that_is_never_answered_fails() -> None:
    async with Emulator(EmulatorConfig(clock=VirtualClock())) as emu:
        r, w, buf = await login(emu.ami_port)
        w.write(b"Action: Originate\r\nActionID: o\r\nChannel: Local/1099@agent-local\r\n"
                b"Application: Wait\r\nData: 5\r\nTimeout: 3000\r\n\r\n")
        await read_until(r, buf, b"ActionID: o\r\nMessage: Originate failed")
        await read_until(r, buf, b"Event: Hangup\r\n")
        w.close()
        items = AMIParser(group_lists=False).feed(bytes(buf))
        # manager.c publishes OriginateResponse for an Async Originate only: the
        # synchronous one's answer is the Error alone (trace 10 cap-5); it rang
        names = [m.name for m in items if isinstance(m, Event)]
        assert "OriginateResponse" not in names and "DialState" in names


async def test_timestampevents_adds_timestamp_after_privilege(tmp_path: Path) -> None:
    import shutil
    import time

    from ivr.sim.emulator import DEFAULT_ETC

    etc = tmp_path / "etc"
    shutil.copytree(DEFAULT_ETC, etc)
    conf = etc / "manager.conf"
    conf.write_text(conf.read_text().replace("[general]\n", "[general]\ntimestampevents = yes\n"))
    async with Emulator(EmulatorConfig(etc=etc, clock=VirtualClock())) as emu:
        r, w, buf = await login(emu.ami_port)
        t0 = time.time()
        call = await emu.place_call(CallerScript(exten="6001", talk_time=None, patience=None,
                                                 hangup_after=1.0))
        await call.wait()
        await read_until(r, buf, b"Event: Hangup\r\nPrivilege: call,all\r\n")
        w.close()
    frames = [f for f in bytes(buf).split(b"\r\n\r\n") if b"Uniqueid: " in f]
    assert frames
    for frame in frames:  # Event, Privilege, Timestamp: as manager.c writes them
        lines = frame.split(b"\r\n")
        assert lines[0].startswith(b"Event: ") and lines[1].startswith(b"Privilege: ")
        name, _, value = lines[2].partition(b": ")
        assert name == b"Timestamp" and abs(float(value) - t0) < 60


async def test_auth_limit_and_auth_timeout_as_manager_conf_says(tmp_path: Path) -> None:
    """Asterisk's manager.c: past ``authlimit`` sessions not logged in, a new connection
    is closed before the banner; a session not logged in within ``authtimeout`` seconds
    of connecting is closed.  Before, the emulator kept every such connection forever."""
    import shutil

    from ivr.sim.emulator import DEFAULT_ETC

    etc = tmp_path / "etc"
    shutil.copytree(DEFAULT_ETC, etc)
    conf = (etc / "manager.conf").read_text()
    (etc / "manager.conf").write_text(
        conf.replace("[general]\n", "[general]\nauthtimeout = 1\nauthlimit = 3\n", 1))
    async with Emulator(EmulatorConfig(etc=etc)) as emu:
        r, w, buf = await login(emu.ami_port)  # logged in: neither limit applies to it
        idle = [await asyncio.open_connection("127.0.0.1", emu.ami_port) for _ in range(3)]
        for ir, _ in idle:
            assert await ir.readline() == b"Asterisk Call Manager/9.0.0\r\n"
        r4, w4 = await asyncio.open_connection("127.0.0.1", emu.ami_port)
        assert await r4.read() == b""  # over authlimit: closed at once, no banner
        w4.close()
        for ir, iw in idle:  # closed by the server after authtimeout, with nothing said
            assert await ir.read() == b""
            iw.close()
        assert emu.ami.unauth == 0
        w.write(b"Action: Ping\r\nActionID: p\r\n\r\n")  # still served past authtimeout
        await read_until(r, buf, b"Ping: Pong")
        w.close()


async def test_invalid_auth_settings_keep_asterisks_defaults(tmp_path: Path) -> None:
    import shutil

    from ivr.sim.emulator import DEFAULT_ETC

    etc = tmp_path / "etc"
    shutil.copytree(DEFAULT_ETC, etc)
    conf = (etc / "manager.conf").read_text()
    (etc / "manager.conf").write_text(
        conf.replace("[general]\n", "[general]\nauthtimeout = 0\nauthlimit = x\n", 1))
    async with Emulator(EmulatorConfig(etc=etc)) as emu:
        assert (emu.ami.auth_timeout, emu.ami.auth_limit) == (30, 50)
