"""A minimal Asterisk stand-in for one FastAGI session: it connects to a FastAGI
server, sends the ``agi_*`` header block (as in trace 02), answers each command the way
Asterisk 20 does (trace 02/06/08), and plays a scripted caller.  Used by the IVR tests
and ``bench/ivr_agi.py``; the full emulator is :mod:`ivr.sim`.

Commands understood: ``GET DATA`` (prompts joined with ``&`` as ``ast_app_getdata``
plays them), ``EXEC MSet/Set/Playback/…``, ``SET VARIABLE``, ``GET VARIABLE``,
``ANSWER``, ``STREAM FILE``; anything else answers ``510``.  A scripted hang-up answers
``200 result=-1``, then writes the unsolicited ``HANGUP`` line; later commands that need
a live channel answer ``511`` while ``GET/SET VARIABLE`` keep working (trace 06).
"""

from __future__ import annotations

import asyncio
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
    collects: list[list[str]] = field(default_factory=list)  # prompts of each GET DATA
    variables: dict[str, str] = field(default_factory=dict)
    hung_up: bool = False

    @property
    def round_trips(self) -> int:
        return len(self.commands)


def _split_app_args(data: str) -> list[str]:
    return data.split(",") if data else []


class FakeAsterisk:
    """One scripted session.  ``script`` holds, per ``GET DATA``, the caller's digits
    (``""`` = no key before the timeout, ``"#"`` = just the pound key) or
    :data:`HANGUP`.  ``before_reply(n)`` is awaited before answering the n-th GET DATA
    (tests use it to reload a definition while a call is in a menu)."""

    def __init__(self, script: Sequence[str] = (), *,
                 before_reply: Callable[[int], Awaitable[None]] | None = None,
                 missing_apps: Sequence[str] = ()) -> None:
        self.script = list(script)
        self.before_reply = before_reply
        self.missing_apps = {a.lower() for a in missing_apps}
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
        if cmd in ("GET VARIABLE", "GET FULL"):
            value = rec.variables.get(argv[2]) if len(argv) > 2 else None
            return b"200 result=0\n" if value is None else f"200 result=1 ({value})\n".encode()
        if cmd == "SET VARIABLE" and len(argv) == 4:
            rec.variables[argv[2]] = argv[3]
            return b"200 result=1\n"
        if rec.hung_up:
            return DEAD
        if cmd == "GET DATA" and len(argv) >= 3:
            prompts = argv[2].split("&")
            rec.collects.append(prompts)
            n = len(rec.collects)
            if self.before_reply is not None:
                await self.before_reply(n)
            press = self.script.pop(0) if self.script else ""
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
