"""A minimal Asterisk stand-in for one FastAGI session: it connects to a FastAGI
server, sends the ``agi_*`` header block (as in trace 02), answers each command the way
Asterisk 20 does (trace 02/06/08), and plays a scripted caller.  Used by the IVR tests
and ``bench/ivr_agi.py``; the full emulator is :mod:`ivr.sim`.

Commands understood: ``GET DATA`` (ONE file name, as res_agi's ``handle_getdata`` →
``ast_app_getdata_full`` plays it: ``a&b`` or a missing prompt answers ``200 result=-1``
with the channel still up), ``EXEC Read`` (the ``&`` list, ``READSTATUS``, as
apps/app_read.c: a missing prompt is skipped, a missing last one gives ``ERROR``; Read
answers ``result=0`` even on a hang-up), ``EXEC MSet/Set/Playback/…``, ``SET VARIABLE``,
``GET VARIABLE``, ``GET FULL VARIABLE`` (``${NAME}`` substituted), ``ANSWER``,
``STREAM FILE``; anything else answers ``510``.  A scripted hang-up answers (``200
result=-1`` for GET DATA, ``200 result=0`` for Read), then writes the unsolicited
``HANGUP`` line; later commands that need a live channel answer ``511`` while
``GET/SET VARIABLE`` keep working (trace 06).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ivr.agi.codec import parse_args

HANGUP = "<hangup>"
"""Script item: the caller hangs up during this command."""

DEAD = b"511 Command Not Permitted on a dead channel or intercept routine\n"


def header_block(network_script: str, *, callerid: str = "13800138000",
                 calleridname: str = "张三", extension: str = "12345",
                 uniqueid: str = "1795883958.2", language: str = "zh",
                 extra: Mapping[str, str] | None = None) -> bytes:
    headers = {
        "agi_network": "yes",
        "agi_network_script": network_script,
        "agi_request": f"agi://127.0.0.1:4573/{network_script}",
        "agi_channel": f"Local/{extension}@from-pstn-00000000;2",
        "agi_language": language,
        "agi_type": "Local",
        "agi_uniqueid": uniqueid,
        "agi_version": "20.20.1",
        "agi_callerid": callerid,
        "agi_calleridname": calleridname,
        "agi_callingpres": "0",
        "agi_callingani2": "0",
        "agi_callington": "0",
        "agi_callingtns": "0",
        "agi_dnid": "unknown",
        "agi_rdnis": "unknown",
        "agi_context": "from-pstn",
        "agi_extension": extension,
        "agi_priority": "4",
        "agi_enhanced": "0.0",
        "agi_accountcode": "",
        "agi_threadid": "139655443318464",
        **(extra or {}),
    }
    return ("".join(f"{k}: {v}\n" for k, v in headers.items()) + "\n").encode("utf-8")


@dataclass
class CallRecord:
    """What Asterisk saw during one session."""

    commands: list[str] = field(default_factory=list)
    collects: list[list[str]] = field(default_factory=list)  # prompts of each GET DATA/Read
    failed: list[str] = field(default_factory=list)  # GET DATA prompts that could not play
    variables: dict[str, str] = field(default_factory=dict)
    hung_up: bool = False

    @property
    def round_trips(self) -> int:
        return len(self.commands)


def _split_app_args(data: str) -> list[str]:
    return data.split(",") if data else []


_VAR = re.compile(r"\$\{([^}]*)\}")


class FakeAsterisk:
    """One scripted session.  ``script`` holds, per ``GET DATA`` / ``Read`` that reads
    digits, the caller's digits (``""`` = no key before the timeout, ``"#"`` = just the
    pound key) or :data:`HANGUP`.  ``before_reply(n)`` is awaited before answering the
    n-th of them (tests use it to reload a definition while a call is in a menu).
    ``missing_prompts``: file names that do not exist on this PBX."""

    def __init__(self, script: Sequence[str] = (), *,
                 before_reply: Callable[[int], Awaitable[None]] | None = None,
                 missing_apps: Sequence[str] = (),
                 missing_prompts: Sequence[str] = ()) -> None:
        self.script = list(script)
        self.before_reply = before_reply
        self.missing_apps = {a.lower() for a in missing_apps}
        self.missing_prompts = set(missing_prompts)
        self.record = CallRecord()

    async def run(self, host: str, port: int, network_script: str, *,
                  callerid: str = "13800138000", extension: str = "12345",
                  uniqueid: str = "1795883958.2") -> CallRecord:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(header_block(network_script, callerid=callerid, extension=extension,
                                      uniqueid=uniqueid))
            await writer.drain()
            while True:
                line = await reader.readline()
                if not line:
                    break
                text = line.decode("utf-8").rstrip("\n")
                self.record.commands.append(text)
                writer.write(await self._answer(parse_args(text)))
                await writer.drain()
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass
        return self.record

    async def _answer(self, argv: list[str]) -> bytes:
        rec = self.record
        cmd = " ".join(argv[:2]).upper()
        word = argv[0].upper() if argv else ""
        if cmd == "GET FULL" and len(argv) == 4:
            full = _VAR.sub(lambda mo: rec.variables.get(mo.group(1), ""), argv[3])
            return f"200 result=1 ({full})\n".encode()
        if cmd == "GET VARIABLE":
            value = rec.variables.get(argv[2]) if len(argv) > 2 else None
            return b"200 result=0\n" if value is None else f"200 result=1 ({value})\n".encode()
        if cmd == "SET VARIABLE" and len(argv) == 4:
            rec.variables[argv[2]] = argv[3]
            return b"200 result=1\n"
        if rec.hung_up:
            return DEAD
        if cmd == "GET DATA" and len(argv) >= 3:
            if "&" in argv[2] or argv[2] in self.missing_prompts:
                rec.failed.append(argv[2])  # ONE file name, not found: channel still up
                return b"200 result=-1\n"
            rec.collects.append([argv[2]])
            press = await self._press()
            if press == HANGUP:
                rec.hung_up = True
                return b"200 result=-1\nHANGUP\n"
            if press == "#":
                return b"200 result=\n"
            if not press:
                return b"200 result= (timeout)\n"
            return f"200 result={press}\n".encode()
        if word == "EXEC" and len(argv) >= 2:
            app, data = argv[1].lower(), (argv[2] if len(argv) > 2 else "")
            if app in self.missing_apps:
                return b"200 result=-2\n"
            if app == "read":
                return await self._read(data)
            if app in ("mset", "set"):
                for pair in _split_app_args(data) if app == "mset" else [data]:
                    name, _, value = pair.partition("=")
                    rec.variables[name.lstrip("_")] = value
            return b"200 result=0\n"
        if word == "ANSWER":
            return b"200 result=0\n"
        if cmd == "STREAM FILE":
            return b"200 result=0 endpos=8000\n"
        return b"510 Invalid or unknown command\n"

    async def _press(self) -> str:
        if self.before_reply is not None:
            await self.before_reply(len(self.record.collects))
        return self.script.pop(0) if self.script else ""

    async def _read(self, data: str) -> bytes:
        """Read(var,p1&p2,maxdigits,options,attempts,timeout) as apps/app_read.c."""
        rec = self.record
        var, prompts, maxd, *_ = [*_split_app_args(data), "", "", ""]
        names = prompts.split("&")
        rec.collects.append(names)
        rec.variables["READSTATUS"] = "ERROR"
        if names[-1] in self.missing_prompts:  # nothing read after a missing last prompt
            rec.variables[var] = ""
            return b"200 result=0\n"
        press = await self._press()
        if press == HANGUP:
            rec.hung_up = True
            rec.variables.update({var: "", "READSTATUS": "HANGUP"})
            return b"200 result=0\nHANGUP\n"
        limit = int(maxd) if maxd.isdigit() and 0 < int(maxd) <= 255 else 255
        rec.variables[var] = "" if press == "#" else press[:limit]
        rec.variables["READSTATUS"] = "OK" if press else "TIMEOUT"
        return b"200 result=0\n"
