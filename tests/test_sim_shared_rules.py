"""The emulator reads config, expressions and application arguments through
:mod:`ivr.asterisk` (one implementation, checked against Asterisk's C source): template
categories, ``pbx_find_extension``'s priority lookup, ``ast_app_separate_args`` for
application arguments (quotes, backslashes, the raw remainder), ``pbx_checkcondition``."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from ivr.errors import ConfigError
from ivr.sim import CallerScript, Emulator, EmulatorConfig
from ivr.sim.clock import VirtualClock
from ivr.sim.emulator import DEFAULT_ETC


def copy_etc(tmp_path: Path, plan: str = "") -> Path:
    etc = tmp_path / "etc"
    shutil.copytree(DEFAULT_ETC, etc)
    conf = etc / "extensions.conf"
    conf.write_text(conf.read_text() + plan)
    return etc


async def varsets(etc: Path, caller: CallerScript, **cfg: object) -> dict[str, str]:
    """Place one call; the VarSet events it caused, by variable name."""
    seen: dict[str, str] = {}

    def tap(name: str, body: str) -> None:
        if name == "VarSet":
            f = dict(line.split(": ", 1) for line in body.split("\r\n") if ": " in line)
            seen[f["Variable"]] = f["Value"]

    config = EmulatorConfig(etc=etc, clock=VirtualClock(), **cfg)  # type: ignore[arg-type]
    async with Emulator(config) as emu:
        emu.bus.tap.append(tap)
        h = await emu.place_call(caller)
        await asyncio.wait_for(h.wait(), 30)
    return seen


PRIORITY_PLAN = """
[p]
exten => _1X,1,Set(ONE=pattern)
 same => 2,Set(TWO=pattern)
 same => 3,Set(THREE=pattern)
 same => 4,Goto(12,here)
 same => 5,Set(LABEL=pattern)
 same => 6,Hangup()
exten => 12,2,Set(TWO=exact)
 same => 5(here),Set(LABEL=exact)
"""


async def test_each_priority_comes_from_the_first_matching_extension_that_has_it(
        tmp_path: Path) -> None:
    # pbx_find_extension (main/pbx.c, default linear search): a matching extension that
    # lacks the priority is skipped, the next match in sort order is tried.
    v = await varsets(copy_etc(tmp_path, PRIORITY_PLAN), CallerScript(context="p", exten="12"))
    assert v["ONE"] == "pattern"  # "12" has no priority 1
    assert v["TWO"] == "exact"  # the exact "12" sorts before "_1X"
    assert v["THREE"] == "pattern"
    assert v["LABEL"] == "exact"  # labels are looked up the same way


ARGS_PLAN = """
[a]
exten => 1,1,ExecIf((0?1)?Set(PAREN=yes):Set(PAREN=no))
 same => n,ExecIf(1?Set(Q="x:y"):Set(Q=no))
 same => n,ExecIf(00?Set(Z=yes):Set(Z=no))
 same => n,ExecIf( 0x?Set(HEX=yes):Set(HEX=no))
 same => n,Set(IF1=${IF(00?yes:no)})
 same => n,Set(IF2=${IF("a:b"?"c:d":no)})
 same => n,GotoIf($[1 = 1]?ok:bad)
 same => n(bad),Set(GOTO=bad)
 same => n(ok),Set(GOTO=ok)
 same => n,AGI(agi://127.0.0.1:4573/args,"a,b",c\\,d,(e,f),"")
"""


async def test_application_arguments_split_as_ast_app_separate_args(tmp_path: Path) -> None:
    headers: list[dict[str, str]] = []

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = (await r.readuntil(b"\n\n")).decode()
        headers.append(dict(line.split(": ", 1) for line in head.splitlines() if line))
        w.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        v = await varsets(copy_etc(tmp_path, ARGS_PLAN), CallerScript(context="a", exten="1"),
                          agi_port=srv.sockets[0].getsockname()[1])
    finally:
        srv.close()
        await srv.wait_closed()
    # ExecIf splits on '?' outside parentheses (AST_NONSTANDARD_RAW_ARGS): the condition
    # is "(0?1)", a string, so true
    assert v["PAREN"] == "yes"
    assert v["Q"] == '"x:y"'  # raw split: the quoted ':' does not split, quotes stay
    assert v["Z"] == "no" and v["HEX"] == "no"  # pbx_checkcondition: leading integer 0
    assert v["IF1"] == "no"
    assert v["IF2"] == "c:d"  # IF() removes quotes (AST_NONSTANDARD_APP_ARGS)
    assert v["GOTO"] == "ok"
    # AGI(): standard splitting — quotes removed, "\," literal, (…) kept whole
    (env,) = headers
    assert env["agi_arg_1"] == "a,b"
    assert env["agi_arg_2"] == "c,d"
    assert env["agi_arg_3"] == "(e,f)"
    assert env["agi_arg_4"] == ""
    assert "agi_arg_5" not in env


async def test_functions_outside_a_channel_use_the_shared_builtins(tmp_path: Path) -> None:
    async with Emulator(EmulatorConfig(etc=copy_etc(tmp_path))) as emu:
        get = emu.pbx.get_var
        assert get(None, "IF(00?yes:no)") == "no"  # not "yes": pbx_checkcondition
        assert get(None, "IF(2abc?yes:no)") == "yes"
        assert get(None, "LEN(abc)") == "3"
        assert get(None, "ISNULL()") == "1"
        assert get(None, "EXISTS(x)") == "1"
        assert get(None, "IF(no question mark)") == ""  # bad IF(): empty, logged
        assert get(None, "NOSUCH(x)") == ""


QUEUES_WITH_TEMPLATE = """
[tpl](!)
strategy = leastrecent
timeout = 7
ringinuse = no
[support](tpl)
timeout = 9
member => Local/1001@agent-local/n,2,"Agent, Senior",Local/1001@agent-local
"""

MANAGER_WITH_TEMPLATE = """
[users](!)
read = call,agent
write = all
[monitor](users)
secret = s3
"""


async def test_templates_are_not_categories_and_their_items_are_inherited(
        tmp_path: Path) -> None:
    etc = copy_etc(tmp_path)
    (etc / "queues.conf").write_text((etc / "queues.conf").read_text() + QUEUES_WITH_TEMPLATE)
    (etc / "manager.conf").write_text(
        (etc / "manager.conf").read_text() + MANAGER_WITH_TEMPLATE)
    async with Emulator(EmulatorConfig(etc=etc)) as emu:
        queues = emu.queues.queues
        assert "tpl" not in queues
        q = queues["support"]
        assert (q.config.strategy, q.config.timeout, q.config.ringinuse) == (
            "leastrecent", 9, False)
        (m,) = q.members
        # member => is split like application arguments: quotes removed
        assert (m.interface, m.penalty, m.name) == ("Local/1001@agent-local/n", 2,
                                                    "Agent, Senior")
        # queues.conf without ringinuse: app_queue's default (yes)
        assert queues["english"].config.ringinuse is True
        assert "users" not in emu.users
        assert emu.users["monitor"].secret == "s3"
        assert emu.users["monitor"].read == {"call", "agent"}
        # AMI GetConfig lists what Asterisk's browse does: no template, inherited items
        cats = dict(emu.read_conf("queues.conf") or [])
        assert "tpl" not in cats
        assert cats["support"][:3] == [("strategy", "leastrecent"), ("timeout", "7"),
                                       ("ringinuse", "no")]


async def test_a_bad_queues_conf_names_file_and_line(tmp_path: Path) -> None:
    etc = copy_etc(tmp_path)
    (etc / "queues.conf").write_text("[q]\nstrategy = fastest\n")
    with pytest.raises(ConfigError, match=r"queues\.conf:2:.*unknown queue strategy"):
        Emulator(EmulatorConfig(etc=etc))
    (etc / "queues.conf").write_text("[q]\nstrategy ringall\n")
    with pytest.raises(ConfigError, match=r"queues\.conf:2:"):
        Emulator(EmulatorConfig(etc=etc))
