"""The dialplan executor: inheritance, Gosub/Return, ExecIf, Goto, Dial (unknown apps:
test_sim_dialplan_gaps)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from ivr.sim import CallerScript, Emulator, EmulatorConfig
from ivr.sim.clock import VirtualClock
from ivr.sim.emulator import DEFAULT_ETC

PLAN = """
[t]
exten => 1,1,Set(__INH=deep)
 same => n,Set(_ONE=once)
 same => n,Gosub(sub,s,1)
 same => n,ExecIf($["${SUBBED}" = "yes"]?Set(AFTER=ok))
 same => n,Goto(end)
 same => n,Set(SKIPPED=1)
 same => n(end),Dial(Local/2@t2,5)
 same => n,Hangup()
[sub]
exten => s,1,Set(SUBBED=yes)
 same => n,Return()
[t2]
exten => 2,1,Set(GOT=${INH}-${ONE})
 same => n,Dial(Local/3@t3,5)
[t3]
exten => 3,1,Set(GOT3=${INH}-${ONE})
 same => n,Answer()
 same => n,Wait(1)
"""


async def test_executor(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    shutil.copytree(DEFAULT_ETC, etc)
    conf = etc / "extensions.conf"
    conf.write_text(conf.read_text() + PLAN)
    seen: dict[str, str] = {}

    def tap(name: str, body: str) -> None:
        if name == "VarSet":
            fields = dict(line.split(": ", 1) for line in body.split("\r\n") if ": " in line)
            seen[fields["Variable"]] = fields["Value"]

    async with Emulator(EmulatorConfig(etc=etc, clock=VirtualClock())) as emu:
        emu.bus.tap.append(tap)
        h = await emu.place_call(CallerScript(context="t", exten="1"))
        await asyncio.wait_for(h.wait(), 10)
    assert seen["SUBBED"] == "yes" and seen["AFTER"] == "ok"
    assert "SKIPPED" not in seen
    assert seen["GOT"] == "deep-once"      # _ONE reaches the first Local leg …
    assert seen["GOT3"] == "deep-"         # … but not the second; __INH goes all the way
    assert seen["DIALSTATUS"] == "ANSWER"
