"""Dialplan execution as Asterisk 20.20.1 does it, over a real AMI socket: an unknown
application ends the channel's dialplan (main/pbx.c pbx_extension_helper), the ``h``
extension (ast_pbx_h_exten_run), ``i``/``e`` for an invalid extension (__ast_pbx_run),
Gosub arguments, LOCAL() and Return values (apps/app_stack.c), and AMI ListCommands
(main/manager.c action_listcommands)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from ivr.metrics import METRICS
from ivr.sim import CallerScript, Emulator, EmulatorConfig
from ivr.sim.actions import ACTIONS
from ivr.sim.clock import VirtualClock
from ivr.sim.emulator import DEFAULT_ETC

PLAN = """
[gaps-unknown]
exten => 1,1,NoOp(before)
 same => n,NoSuchApp(x)
 same => n,Set(AFTER=1)
exten => 2,1,Return()
 same => n,Set(AFTER_RETURN=1)

[gaps-h]
exten => 1,1,Answer()
 same => n,Set(BEFORE=yes)
 same => n,Wait(30)
 same => n,Set(NOT_REACHED=1)
exten => 2,1,Set(BEFORE=end)
exten => h,1,NoOp(in h ${EXTEN} ${BEFORE})
 same => n,Set(HSEEN=${BEFORE})
 same => n,Wait(5)
 same => n,Set(NEVER=1)

[gaps-i]
exten => 1,1,Goto(nowhere,1)
exten => i,1,NoOp(invalid ${INVALID_EXTEN})

[gaps-noi]
exten => 1,1,Goto(nowhere,1)

[gaps-e]
exten => 1,1,Goto(nowhere,1)
exten => e,1,Set(WHY=${EXCEPTION(reason)}-${EXCEPTION(exten)}-${EXCEPTION(priority)})

[gaps-gosub]
exten => 1,1,Set(ARG1=outer)
 same => n,Gosub(sub,s,1(a,"b,c"))
 same => n,Set(R=${GOSUB_RETVAL}-${ARG1}-${ARGC})
 same => n,Gosub(sub,s,nolabel)
 same => n,Set(NOT_REACHED=1)
[sub]
exten => s,1,Set(IN=${ARG1}|${ARG2}|${ARGC})
 same => n,Set(LOCAL(L)=loc)
 same => n,Gosub(sub2,s,1(z))
 same => n,Set(BACK=${GOSUB_RETVAL}|${ARG2}|${L})
 same => n,Return(done)
[sub2]
exten => s,1,Set(IN2=${ARG1}|${ARG2}|${ARGC}|${L}|${LOCAL(L)})
 same => n,Return()
"""

MANAGER_EXTRA = """
[limited]
secret = limitedsecret
read = all
write = call
"""

Frame = dict[str, str]


def _etc(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    shutil.copytree(DEFAULT_ETC, etc)
    conf = etc / "extensions.conf"
    conf.write_text(conf.read_text() + PLAN)
    manager = etc / "manager.conf"
    manager.write_text(manager.read_text() + MANAGER_EXTRA)
    return etc


class Ami:
    """A logged-in AMI client on the emulator's socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buf = bytearray()

    @classmethod
    async def login(cls, port: int, user: str = "ivr", secret: str = "ivrsecret") -> Ami:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        ami = cls(r, w)
        await ami.reader.readline()  # banner
        w.write(f"Action: Login\r\nActionID: l\r\nUsername: {user}\r\nSecret: {secret}"
                "\r\n\r\n".encode())
        assert b"Authentication accepted" in await ami.frame_raw()
        return ami

    async def frame_raw(self) -> bytes:
        while b"\r\n\r\n" not in self.buf:
            chunk = await asyncio.wait_for(self.reader.read(65536), 10)
            assert chunk, "AMI connection closed"
            self.buf += chunk
        end = self.buf.index(b"\r\n\r\n") + 4
        data = bytes(self.buf[:end])
        del self.buf[:end]
        return data

    async def response(self) -> list[str]:
        """The lines of the next response frame (events before it are skipped)."""
        while True:
            raw = await self.frame_raw()
            if raw.startswith(b"Response:"):
                return raw.decode().split("\r\n")

    async def until_hangup(self, channel: str) -> list[Frame]:
        """Every frame up to and including the ``Hangup`` event of ``channel``."""
        frames: list[Frame] = []
        while True:
            raw = await self.frame_raw()
            f = dict(line.split(": ", 1) for line in raw.decode().split("\r\n")
                     if ": " in line)
            frames.append(f)
            if f.get("Event") == "Hangup" and f.get("Channel") == channel:
                return frames

    def close(self) -> None:
        self.writer.close()


def _of(frames: list[Frame], channel: str) -> list[Frame]:
    return [f for f in frames if f.get("Channel") == channel and f.get("Event") != "CEL"]


def _varsets(frames: list[Frame]) -> list[tuple[str, str]]:
    return [(f["Variable"], f["Value"]) for f in frames if f.get("Event") == "VarSet"]


async def _call(emu: Emulator, ami: Ami, context: str, exten: str = "1",
                hangup_after: float | None = None) -> list[Frame]:
    h = await emu.place_call(CallerScript(context=context, exten=exten, talk_time=None,
                                          patience=None, hangup_after=hangup_after))
    frames = await ami.until_hangup(h.name)
    await asyncio.wait_for(h.wait(), 10)
    return _of(frames, h.name)


async def test_unknown_application_ends_the_dialplan(tmp_path: Path) -> None:
    unknown = METRICS.get("sim.unknown_app")
    async with Emulator(EmulatorConfig(etc=_etc(tmp_path), clock=VirtualClock())) as emu:
        ami = await Ami.login(emu.ami_port)
        frames = await _call(emu, ami, "gaps-unknown")
        # pbx_extension_helper: "No application 'NoSuchApp' for extension (…, 1, 2)",
        # returns -1 before pbx_exec: no Newexten for priority 2, nothing after it
        newexten = [(f["Priority"], f["Application"]) for f in frames
                    if f["Event"] == "Newexten"]
        assert newexten == [("1", "NoOp")]
        assert ("AFTER", "1") not in _varsets(frames)
        soft = next(f for f in frames if f["Event"] == "SoftHangupRequest")
        # ast_softhangup(APPUNLOAD = 0x10) publishes the snapshot last published (prio 1)
        assert (soft["Cause"], soft["Exten"], soft["Priority"]) == ("16", "1", "1")
        hangup = frames[-1]
        assert (hangup["Exten"], hangup["Priority"], hangup["Cause"]) == ("1", "2", "16")
        assert METRICS.get("sim.unknown_app") == unknown + 1

        # Return without Gosub returns -1: the channel hangs up there
        frames = await _call(emu, ami, "gaps-unknown", exten="2")
        assert [f["Application"] for f in frames if f["Event"] == "Newexten"] == ["Return"]
        assert ("AFTER_RETURN", "1") not in _varsets(frames)
        ami.close()


async def test_h_extension_runs_after_the_caller_hangs_up(tmp_path: Path) -> None:
    async with Emulator(EmulatorConfig(etc=_etc(tmp_path), clock=VirtualClock())) as emu:
        ami = await Ami.login(emu.ami_port)
        frames = await _call(emu, ami, "gaps-h", hangup_after=1.0)
        names = [f["Event"] for f in frames]
        # the caller's BYE, the end of the PBX run, then h (the channel is already soft-hung
        # up: Wait returns -1 at once and ends h), then the CDR and the Hangup
        start = names.index("HangupRequest")
        assert names[start:] == ["HangupRequest", "SoftHangupRequest", "Newexten", "Newexten",
                                 "VarSet", "Newexten", "Cdr", "Hangup"]
        soft = frames[start + 1]
        assert (soft["Exten"], soft["Priority"]) == ("1", "3")
        h = [(f["Context"], f["Extension"], f["Priority"], f["Application"], f["AppData"])
             for f in frames if f["Event"] == "Newexten" and f["Extension"] == "h"]
        assert h == [("gaps-h", "h", "1", "NoOp", "in h h yes"),
                     ("gaps-h", "h", "2", "Set", "HSEEN=yes"),
                     ("gaps-h", "h", "3", "Wait", "5")]
        assert ("HSEEN", "yes") in _varsets(frames)
        assert ("NEVER", "1") not in _varsets(frames)
        assert ("NOT_REACHED", "1") not in _varsets(frames)
        # cdr.conf endbeforehexten=yes: the CDR is the one from before the h extension
        cdr = next(f for f in frames if f["Event"] == "Cdr")
        assert (cdr["DestinationContext"], cdr["Destination"], cdr["LastApplication"],
                cdr["LastData"]) == ("gaps-h", "1", "Wait", "30")
        assert (frames[-1]["Exten"], frames[-1]["Priority"]) == ("h", "3")

        # the dialplan running out of priorities ends the PBX the same way: h runs
        frames = await _call(emu, ami, "gaps-h", exten="2")
        assert [f["Event"] for f in frames if f["Event"] != "VarSet"][-6:] == [
            "Newexten", "SoftHangupRequest", "Newexten", "Newexten", "Newexten", "Hangup"]
        assert ("HSEEN", "end") in _varsets(frames)
        ami.close()


async def test_invalid_extension_goes_to_i_or_e_or_hangs_up(tmp_path: Path) -> None:
    invalid = METRICS.get("sim.invalid_extension")
    async with Emulator(EmulatorConfig(etc=_etc(tmp_path), clock=VirtualClock())) as emu:
        ami = await Ami.login(emu.ami_port)
        frames = await _call(emu, ami, "gaps-i")
        var = next(f for f in frames if f.get("Variable") == "INVALID_EXTEN")
        # INVALID_EXTEN is set while the published snapshot is still the Goto's
        assert (var["Variable"], var["Value"], var["Exten"], var["Priority"]) == (
            "INVALID_EXTEN", "nowhere", "1", "1")
        newexten = [(f["Extension"], f["Priority"], f["Application"], f["AppData"])
                    for f in frames if f["Event"] == "Newexten"]
        assert newexten == [("1", "1", "Goto", "nowhere,1"),
                            ("i", "1", "NoOp", "invalid nowhere")]
        assert (frames[-1]["Exten"], frames[-1]["Priority"]) == ("i", "2")

        frames = await _call(emu, ami, "gaps-e")
        assert ("WHY", "INVALID-nowhere-1") in _varsets(frames)

        # neither i nor e: "sent to invalid extension but no invalid handler", PBX ends
        frames = await _call(emu, ami, "gaps-noi")
        soft = next(f for f in frames if f["Event"] == "SoftHangupRequest")
        assert (soft["Exten"], soft["Priority"]) == ("1", "1")
        assert (frames[-1]["Exten"], frames[-1]["Priority"]) == ("nowhere", "1")
        assert METRICS.get("sim.invalid_extension") == invalid + 1
        ami.close()


async def test_gosub_arguments_local_variables_and_return_value(tmp_path: Path) -> None:
    async with Emulator(EmulatorConfig(etc=_etc(tmp_path), clock=VirtualClock())) as emu:
        ami = await Ami.login(emu.ami_port)
        frames = await _call(emu, ami, "gaps-gosub")
        got = [v for v in _varsets(frames) if not v[0].startswith("SIP")]
        assert got == [
            ("ARG1", "outer"),
            # Gosub: AST_STANDARD_RAW_ARGS keeps the quotes; each frame variable is pushed
            # (no VarSet of its own) and announced as LOCAL(name)
            ("LOCAL(ARG1)", "a"), ("LOCAL(ARG2)", '"b,c"'), ("LOCAL(ARGC)", "2"),
            ("IN", 'a|"b,c"|2'),
            ("LOCAL(L)", "loc"),
            # a nested Gosub masks as many ARGn as the caller's frame had
            ("LOCAL(ARG1)", "z"), ("LOCAL(ARG2)", ""), ("LOCAL(ARGC)", "1"),
            ("IN2", "z||1|loc|"),
            # Return: the frame's variables unset newest first (VarSet "" only for the ones
            # that were not empty), then GOSUB_RETVAL (also when empty)
            ("ARGC", ""), ("ARG1", ""), ("GOSUB_RETVAL", ""),
            ("BACK", '|"b,c"|loc'),
            ("L", ""), ("ARGC", ""), ("ARG2", ""), ("ARG1", ""), ("GOSUB_RETVAL", "done"),
            # the caller's own ARG1 is visible again, ARGC is gone
            ("R", "done-outer-"),
        ]
        newexten = [(f["Context"], f["Priority"], f["Application"]) for f in frames
                    if f["Event"] == "Newexten"]
        # back from the subroutine at the priority after the Gosub; then a label that does
        # not exist: "Gosub address is invalid", -1, the channel hangs up
        assert newexten[-2:] == [("gaps-gosub", "3", "Set"), ("gaps-gosub", "4", "Gosub")]
        assert ("NOT_REACHED", "1") not in _varsets(frames)
        ami.close()


async def test_list_commands(tmp_path: Path) -> None:
    async with Emulator(EmulatorConfig(etc=_etc(tmp_path))) as emu:
        ami = await Ami.login(emu.ami_port)
        ami.writer.write(b"Action: ListCommands\r\nActionID: lc\r\n\r\n")
        lines = await ami.response()
        assert lines[:2] == ["Response: Success", "ActionID: lc"]
        assert lines[-2:] == ["", ""]
        body = lines[2:-2]
        names = [line.split(": ", 1)[0] for line in body]
        assert names == sorted(names, key=str.lower)  # registration order
        assert {n.lower() for n in names} == set(ACTIONS) | {"login", "challenge"}
        assert "Ping: Keepalive command.  (Priv: <none>)" in body
        assert "Hangup: Hangup channel.  (Priv: system,call)" in body
        assert "Reload: Send a reload event.  (Priv: system,config)" in body
        assert "QueueAdd: Add interface to queue.  (Priv: agent)" in body
        ami.close()

        # a user that may write only "call" sees the actions that need no class or "call"
        limited = await Ami.login(emu.ami_port, "limited", "limitedsecret")
        limited.writer.write(b"Action: ListCommands\r\n\r\n")
        lines = await limited.response()
        assert lines[0] == "Response: Success" and not lines[1].startswith("ActionID")
        body = lines[1:-2]
        assert "Hangup: Hangup channel.  (Priv: system,call)" in body
        assert "Ping: Keepalive command.  (Priv: <none>)" in body
        assert not any(line.startswith(("QueueAdd:", "Command:", "Originate:"))
                       for line in body)
        limited.close()
