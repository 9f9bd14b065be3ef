"""Emulator fidelity checked against Asterisk 20's source: MSet, ExecIf (both syntaxes),
the channel language in later events and AGI sessions, VarSet names with ``_``/``__``,
``&`` prompt lists (Read, Background, GET DATA), and 8191-byte AGI command lines."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from ivr.metrics import METRICS
from ivr.sim import CallerScript, Emulator, EmulatorConfig
from ivr.sim.clock import VirtualClock
from ivr.sim.emulator import DEFAULT_ETC
from ivr.sim.mixmonitor import write_wav


def fields(body: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in body.split("\r\n") if ": " in line)


@dataclass
class Seen:
    """Every event the emulator emitted: (name, headers)."""

    events: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def __call__(self, name: str, body: str) -> None:
        self.events.append((name, fields(body)))

    def named(self, name: str) -> list[dict[str, str]]:
        return [f for n, f in self.events if n == name]

    def varsets(self) -> dict[str, str]:
        return {f["Variable"]: f["Value"] for f in self.named("VarSet")}

    def index(self, name: str, **match: str) -> int:
        for i, (n, f) in enumerate(self.events):
            if n == name and all(f.get(k) == v for k, v in match.items()):
                return i
        raise AssertionError(f"no {name} {match}")


class Agi:
    """The FastAGI server side of one session."""

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, head: bytes,
                 emu: Emulator) -> None:
        self.r, self.w, self.emu = r, w, emu
        self.env = dict(line.split(": ", 1) for line in head.decode().splitlines() if line)

    async def reply(self) -> str:
        line = (await self.r.readline()).decode()
        while line.startswith("520-") and "\n520 " not in line:
            line += (await self.r.readline()).decode()
        return line

    async def cmd(self, text: str | bytes) -> str:
        self.w.write(text if isinstance(text, bytes) else text.encode() + b"\n")
        return await self.reply()


Script = Callable[[Agi], Awaitable[None]]


async def run(tmp_path: Path, plan: str, scripts: list[Script], caller: CallerScript,
              **cfg: object) -> tuple[Seen, Emulator, list[Agi]]:
    """Run ``caller`` through ``plan``; the n-th AGI() session runs ``scripts[n]``."""
    etc = tmp_path / "etc"
    shutil.copytree(DEFAULT_ETC, etc)
    conf = etc / "extensions.conf"
    conf.write_text(conf.read_text() + plan)
    sessions: list[Agi] = []
    errors: list[BaseException] = []
    holder: list[Emulator] = []

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        agi = Agi(r, w, await r.readuntil(b"\n\n"), holder[0])
        sessions.append(agi)
        try:
            await scripts[len(sessions) - 1](agi)
        except BaseException as exc:  # reported by the test, not lost in the server
            errors.append(exc)
        finally:
            w.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    seen = Seen()
    config = EmulatorConfig(etc=etc, agi_port=srv.sockets[0].getsockname()[1],
                            **cfg)  # type: ignore[arg-type]
    async with Emulator(config) as emu:
        holder.append(emu)
        emu.bus.tap.append(seen)
        h = await emu.place_call(caller)
        await asyncio.wait_for(h.wait(), 30)
    srv.close()
    await srv.wait_closed()
    if errors:
        raise errors[0]
    return seen, emu, sessions


# ------------------------------------------------------------------ MSet, language

AGI_PLAN = """
[t]
exten => 1,1,Answer()
 same => n,AGI(agi://127.0.0.1:4573/first)
 same => n,AGI(agi://127.0.0.1:4573/second)
 same => n,NoOp(after ${IVR_NEXT})
 same => n,Dial(Local/2@t2,5)
[t2]
exten => 2,1,Set(GOT=${IVR_LANGUAGE}/${ONCE})
 same => n,Answer()
 same => n,Wait(1)
"""


async def test_mset_over_agi_sets_like_set_and_the_language_follows(tmp_path: Path) -> None:
    got: dict[str, str] = {}

    async def first(agi: Agi) -> None:
        got["mset"] = await agi.cmd(
            'EXEC MSet "IVR_NEXT=queue,__IVR_LANGUAGE=zh,CHANNEL(language)=zh,EQ=a=b,'
            '_ONCE=1,noequals"')
        got["lang"] = await agi.cmd("GET VARIABLE IVR_LANGUAGE")
        got["eq"] = await agi.cmd("GET VARIABLE EQ")
        got["chlang"] = await agi.cmd("GET VARIABLE CHANNEL(language)")
        got["set"] = await agi.cmd("SET VARIABLE CHANNEL(language) en")
        ch = agi.emu.pbx.find(agi.env["agi_channel"])
        assert ch is not None
        got["dest"] = ch.block("Dest")  # the header block as a Dest party of an event
        got["noop"] = await agi.cmd("NOOP marker")

    async def second(agi: Agi) -> None:
        got["noop2"] = await agi.cmd("NOOP second")

    seen, emu, sessions = await run(tmp_path, AGI_PLAN, [first, second],
                                    CallerScript(context="t", exten="1", language="fr"),
                                    clock=VirtualClock())
    assert got["mset"] == "200 result=0\n"  # found, not -2 any more
    assert got["lang"] == "200 result=1 (zh)\n"
    assert got["eq"] == "200 result=1 (a=b)\n"  # split on the first '=' only
    assert got["chlang"] == "200 result=1 (zh)\n"
    assert got["set"] == "200 result=1\n"
    assert got["noop"] == got["noop2"] == "200 result=0\n"
    v = seen.varsets()
    # one VarSet per variable, named as written (leading underscores kept), as Set does
    assert v["IVR_NEXT"] == "queue" and v["__IVR_LANGUAGE"] == "zh" and v["EQ"] == "a=b"
    assert v["_ONCE"] == "1"
    assert "IVR_LANGUAGE" not in v and "CHANNEL(language)" not in v and "noequals" not in v
    # the language in every later event: after MSet zh, after SET VARIABLE en
    starts = seen.named("AGIExecStart")
    assert starts[0]["Command"].startswith("EXEC MSet") and starts[0]["Language"] == "fr"
    assert starts[1]["Command"] == "GET VARIABLE IVR_LANGUAGE" and starts[1]["Language"] == "zh"
    assert starts[5]["Command"] == "NOOP marker" and starts[5]["Language"] == "en"
    # … and in the next AGI session's header
    assert sessions[0].env["agi_language"] == "fr"
    assert sessions[1].env["agi_language"] == "en"
    # the dialplan sees the variables; __ reaches the Local leg, _ too (one level)
    assert "DestLanguage: en\r\n" in got["dest"]
    noop = next(f for f in seen.named("Newexten") if f["Application"] == "NoOp")
    assert noop["AppData"] == "after queue" and noop["Language"] == "en"
    assert v["GOT"] == "zh/1"
    dial = next(f for f in seen.named("DialBegin"))
    assert dial["Language"] == "en"  # the caller's language in the two-channel event too


DP_PLAN = """
[u]
exten => 1,1,MSet(A=1,_B=two,CHANNEL(language)=zh,"Q=x,y")
 same => n,Set(__A=3)
 same => n,Set(AFTER=${A})
 same => n,ExecIf($[${A} = 3]?Set(P=yes):Set(P=no))
 same => n,ExecIf(0?Set(Q2=yes):Set(Q2=no))
 same => n,ExecIf(1?MSet(R=1,S=2))
 same => n,ExecIf(1?Set(T=a:b))
 same => n,ExecIf(1,Set,DEP=old,style)
 same => n,ExecIf(0?Set(N=1))
 same => n,ExecIf(abc?Set(STR=true))
 same => n,Set(LANG=${CHANNEL(language)})
 same => n,ExecIf(1?NoSuchApp(x):Set(F=1))
 same => n,Set(NOTREACHED=1)
"""


async def test_mset_and_execif_in_the_dialplan(tmp_path: Path) -> None:
    unknown = METRICS.get("sim.unknown_app")
    seen, _, _ = await run(tmp_path, DP_PLAN, [], CallerScript(context="u", exten="1"),
                           clock=VirtualClock())
    v = seen.varsets()
    assert v["A"] == "1" and v["_B"] == "two" and v["Q"] == "x,y"  # quotes removed
    assert v["__A"] == "3" and v["AFTER"] == "3"  # Set(__A) replaced A
    assert v["P"] == "yes" and v["Q2"] == "no"  # preferred syntax, both branches
    assert v["R"] == "1" and v["S"] == "2"
    assert v["T"] == "a:b"  # ':' inside the parentheses is not the branch separator
    assert v["DEP"] == "old,style"  # deprecated ExecIf(expr,app,args): the rest is args
    assert "N" not in v and v["STR"] == "true"  # pbx_checkcondition: strings are true
    assert v["LANG"] == "zh"
    # an application ExecIf cannot find returns -1: the channel hangs up there
    assert "NOTREACHED" not in v and "F" not in v
    assert METRICS.get("sim.unknown_app") == unknown + 1
    after = seen.index("Newexten", Application="Set", AppData="__A=3")
    assert seen.events[after][1]["Language"] == "zh"


# --------------------------------------------------------------------- prompt lists

def prompts(tmp_path: Path) -> Path:
    base = tmp_path / "prompts"
    (base / "en").mkdir(parents=True)
    write_wav(base / "en" / "p1.wav", 1.0)
    write_wav(base / "en" / "p2.wav", 1.0)
    return base


def streams_during(seen: Seen, command: str) -> list[str]:
    """The CEL STREAM_BEGIN events between a command's AGIExecStart and AGIExecEnd."""
    start = seen.index("AGIExecStart", Command=command)
    end = seen.index("AGIExecEnd", Command=command)
    return [f["EventName"] for n, f in seen.events[start:end]
            if n == "CEL" and f["EventName"] == "STREAM_BEGIN"]


GD_PLAN = """
[g]
exten => 1,1,Answer()
 same => n,AGI(agi://127.0.0.1:4573/gd)
"""


async def test_get_data_plays_an_ampersand_list(tmp_path: Path) -> None:
    """The opt-in deviation ``getdata_split_prompts=True`` (the default answers as Asterisk
    20 does: see the next test)."""
    got: dict[str, str] = {}
    times: dict[str, float] = {}

    async def gd(agi: Agi) -> None:
        clock = agi.emu.clock
        t0 = clock.now()
        got["none"] = await agi.cmd("GET DATA p1&p2 3000 2")  # nothing pressed
        times["none"] = clock.now() - t0
        got["digit"] = await agi.cmd("GET DATA p1&p2 3000 1")  # '5' during p1
        got["hash"] = await agi.cmd("GET DATA p1&p2 3000 4")  # '7#' during p1
        got["missing_mid"] = await agi.cmd("GET DATA p1&missing&p2 100 1")
        got["missing_last"] = await agi.cmd("GET DATA p1&missing 100 1")
        got["single_missing"] = await agi.cmd("GET DATA missing 100 1")

    seen, emu, _ = await run(
        tmp_path, GD_PLAN, [gd],
        CallerScript(context="g", exten="1", menu_digits=["", "5", "7#", "", "", ""]),
        prompts=prompts(tmp_path), strict_prompts=True, clock=VirtualClock(), cel=True,
        getdata_split_prompts=True)
    assert got["none"] == "200 result= (timeout)\n"
    # p1 (1 s) + 50 ms for a first digit + p2 (1 s) + the 3 s timeout
    assert 5.05 <= times["none"] < 6.0, times
    assert streams_during(seen, "GET DATA p1&p2 3000 2") == ["STREAM_BEGIN"] * 2
    assert got["digit"] == "200 result=5\n"
    assert streams_during(seen, "GET DATA p1&p2 3000 1") == ["STREAM_BEGIN"]  # p2 skipped
    assert got["hash"] == "200 result=7\n"
    # a missing prompt is skipped; missing as the last one, the result is -1
    assert got["missing_mid"] == "200 result= (timeout)\n"
    assert streams_during(seen, "GET DATA p1&missing&p2 100 1") == ["STREAM_BEGIN"] * 2
    assert got["missing_last"] == "200 result=-1\n"
    assert got["single_missing"] == "200 result=-1\n"
    # GET DATA's -1 is RESULT_SUCCESS in res_agi: the session still ends in SUCCESS
    assert seen.varsets()["AGISTATUS"] == "SUCCESS"
    end = seen.index("AGIExecEnd", Command="GET DATA missing 100 1")
    assert seen.events[end][1]["ResultCode"] == "200"
    assert emu.summary().agi_failures == 0


async def test_get_data_ampersand_as_asterisk_20_answers(tmp_path: Path) -> None:
    """res_agi's handle_getdata calls ast_app_getdata_full(), which opens "p1&p2" as ONE
    file: with ``getdata_split_prompts=False`` the emulator answers as Asterisk does."""
    got: list[str] = []
    warned = METRICS.get("sim.agi_getdata_ampersand")

    async def gd(agi: Agi) -> None:
        got.append(await agi.cmd("GET DATA p1&p2 100 1"))
        got.append(await agi.cmd("GET DATA p1 100 1"))

    _, _, _ = await run(tmp_path, GD_PLAN, [gd], CallerScript(context="g", exten="1"),
                        prompts=prompts(tmp_path), clock=VirtualClock(),
                        getdata_split_prompts=False)
    assert got == ["200 result=-1\n", "200 result= (timeout)\n"]
    assert METRICS.get("sim.agi_getdata_ampersand") == warned


RB_PLAN = """
[r]
exten => 1,1,Answer()
 same => n,Read(D1,p1&p2,1,,1,2)
 same => n,Read(D2,p1&p2,1,,1,2)
 same => n,Read(D3,p1&missing,1,,1,2)
 same => n,Background(p1&missing&p2)
 same => n,Set(BG1=${BACKGROUNDSTATUS})
 same => n,Background(p1&p2)
 same => n,Set(NOJUMP=1)
exten => 4,1,Set(JUMPED=${BACKGROUNDSTATUS})
"""


async def test_read_and_background_play_ampersand_lists(tmp_path: Path) -> None:
    seen, _, _ = await run(
        tmp_path, RB_PLAN, [],
        CallerScript(context="r", exten="1", menu_digits=["", "3", "", "", "4"]),
        prompts=prompts(tmp_path), strict_prompts=True, clock=VirtualClock(), cel=True)
    v = seen.varsets()
    sets = [f for f in seen.named("VarSet") if f["Variable"] in ("D1", "D2", "D3")]
    assert [(f["Variable"], f["Value"]) for f in sets] == [("D1", ""), ("D2", "3"), ("D3", "")]
    statuses = [f["Value"] for f in seen.named("VarSet") if f["Variable"] == "READSTATUS"]
    assert statuses == ["TIMEOUT", "OK", "ERROR"]  # p1&missing: the last prompt failed
    assert v["BG1"] == "FAILED"  # Background stops at the missing file
    assert v["JUMPED"] == "SUCCESS" and "NOJUMP" not in v  # '4' during p1 → exten 4
    begins = [f for n, f in seen.events if n == "CEL" and f["EventName"] == "STREAM_BEGIN"]
    # Read 1: p1,p2; Read 2: p1 (digit); Read 3: p1; Background 1: p1; Background 2: p1
    assert len(begins) == 6


# -------------------------------------------------------------- long command lines

async def test_command_lines_are_cut_at_8191_bytes_like_res_agi(tmp_path: Path) -> None:
    got: list[str] = []
    value = "a" * (8191 - len("SET VARIABLE V "))
    cut = METRICS.get("sim.agi_line_cut")

    async def long(agi: Agi) -> None:
        # 8191 bytes, then "NOOP\n": res_agi's fgets() stops at 8191 and reads the tail
        # as the next command, so this one write gets two replies.
        got.append(await agi.cmd(f"SET VARIABLE V {value}NOOP\n".encode()))
        got.append(await agi.reply())
        # exactly 8191 bytes before the "\n": the lone "\n" is an empty command (510)
        got.append(await agi.cmd(f"SET VARIABLE W {value}\n".encode()))
        got.append(await agi.reply())
        got.append(await agi.cmd("NOOP done"))

    seen, emu, _ = await run(tmp_path, GD_PLAN, [long], CallerScript(context="g", exten="1"),
                             clock=VirtualClock())
    assert got == ["200 result=1\n", "200 result=0\n", "200 result=1\n",
                   "510 Invalid or unknown command\n", "200 result=0\n"]
    v = seen.varsets()
    assert v["V"] == value and v["W"] == value
    commands = [f["Command"] for f in seen.named("AGIExecStart")]
    assert commands[1] == "NOOP" and commands[3] == "" and commands[4] == "NOOP done"
    assert METRICS.get("sim.agi_line_cut") == cut + 2
    assert v["AGISTATUS"] == "SUCCESS" and emu.summary().agi_failures == 0


# ------------------------------------------------------- Read when the caller hangs up
READ_HANGUP_PLAN = """
[rh]
exten => 1,1,Answer()
 same => n,Read(D,p1&p2,1,,1,5)
 same => n,GotoIf($["${READSTATUS}" = "HANGUP"]?gone)
 same => n,Set(AFTER_READ=1)
 same => n(gone),Hangup()
"""


async def test_read_reports_hangup_like_app_read(tmp_path: Path) -> None:
    """app_read.c: a hang-up during Read sets READSTATUS=HANGUP (the rendered 12345
    greeting relies on it not to call AGI for a caller who is gone)."""
    seen, _, _ = await run(
        tmp_path, READ_HANGUP_PLAN, [],
        CallerScript(context="rh", exten="1", hangup_after=0.5),
        prompts=prompts(tmp_path), strict_prompts=True, clock=VirtualClock(), cel=True)
    statuses = [f["Value"] for f in seen.named("VarSet") if f["Variable"] == "READSTATUS"]
    assert statuses == ["HANGUP"]
    assert "AFTER_READ" not in seen.varsets()
