"""FastAGI client replies for commands the traces do not cover."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ivr.sim import CallerScript, Emulator, EmulatorConfig
from ivr.sim.clock import VirtualClock


async def run_session(commands: list[str], script: CallerScript, *,
                      replies_for: dict[int, int] | None = None, **cfg: object
                      ) -> tuple[list[str], Emulator]:
    """Send each command and read its reply (``replies_for[i]`` replies for command i)."""
    replies: list[str] = []

    async def agi(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = b""
        while not head.endswith(b"\n\n"):
            head += await r.readexactly(1)
        for i, cmd in enumerate(commands):
            w.write(cmd.encode("utf-8", "surrogateescape") + b"\n")
            for _ in range((replies_for or {}).get(i, 1)):
                line = await r.readline()
                while line.startswith(b"520-") and b"\n520 " not in line:
                    line += await r.readline()
                replies.append(line.decode())
        w.close()

    srv = await asyncio.start_server(agi, "127.0.0.1", 0)
    emu = Emulator(EmulatorConfig(clock=VirtualClock(), agi_port=srv.sockets[0].getsockname()[1],
                                  **cfg))  # type: ignore[arg-type]
    async with emu:
        h = await emu.place_call(script)
        await asyncio.wait_for(h.wait(), 20)
    srv.close()
    await srv.wait_closed()
    return replies, emu


async def test_menu_commands_and_errors(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts" / "zh"
    prompts.mkdir(parents=True)
    from ivr.sim.mixmonitor import write_wav

    write_wav(prompts / "welcome.wav", 1.5)
    replies, _ = await run_session(
        ["ANSWER", "STREAM FILE welcome \"\"", "STREAM FILE missing \"\"",
         "WAIT FOR DIGIT 2000", "EXEC Read CHOICE,beep,2", "GET VARIABLE CHOICE",
         "SAY NUMBER 42 \"\"", "GET DATA beep 1000 3", "GET DATA", "NO SUCH THING",
         "EXEC NoSuchApp x", "SET MUSIC on", "CHANNEL STATUS"],
        CallerScript(exten="12345", menu_digits=["7", "42", ""]),
        prompts=tmp_path / "prompts", strict_prompts=True)
    assert replies[0] == "200 result=0\n"
    assert replies[1] == "200 result=0 endpos=12000\n"
    assert replies[2] == "200 result=-1 endpos=0\n"
    assert replies[3] == f"200 result={ord('7')}\n"
    assert replies[4] == "200 result=0\n"
    assert replies[5] == "200 result=1 (42)\n"
    assert replies[6] == "200 result=0\n"
    assert replies[7] == "200 result= (timeout)\n"
    assert replies[8].startswith("520-Invalid command syntax.  Proper usage follows:\n")
    assert replies[8].endswith("520 End of proper usage.\n")
    assert replies[9] == "510 Invalid or unknown command\n"
    assert replies[10] == "200 result=-2\n"
    assert replies[11] == "200 result=0\n"
    assert replies[12] == "200 result=6\n"


async def test_garbage_and_oversized_commands_are_answered_like_res_agi() -> None:
    # 20,006 bytes: res_agi reads 8191, 8191, then the last 3,624 (with the "\n") as
    # three commands: "NOOP xxx…", then two of x's (510 each); the session goes on.
    replies, emu = await run_session(
        ["\udcff\udcfe garbage", "ANSWER", "NOOP " + "x" * 20_000, "CHANNEL STATUS"],
        CallerScript(exten="12345"), replies_for={2: 3})
    assert replies[0] == "510 Invalid or unknown command\n"
    assert replies[1] == "200 result=0\n"
    assert replies[2:5] == ["200 result=0\n"] + ["510 Invalid or unknown command\n"] * 2
    assert replies[5] == "200 result=6\n"
    assert emu.summary().agi_failures == 0


