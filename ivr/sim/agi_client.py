"""The AGI() application: a FastAGI client session to the bridge's FastAGI server.

It sends the same ``agi_*`` header block as Asterisk 20 (traces 02/06/08), answers
commands (see :mod:`ivr.sim.agi_commands`), sends the unsolicited ``HANGUP`` line
once the caller is gone, then answers 511 to commands that need a live channel.
AGISTATUS as res_agi sets it: ``HANGUP`` when the channel was hung up; ``FAILURE`` when
the server is unreachable, or when a command failed on the live channel during the
session (RESULT_FAILURE: a ``result=-1`` reply of ANSWER, STREAM FILE, WAIT FOR DIGIT,
SAY… — e.g. STREAM FILE of a missing prompt, why trace 02 ends with FAILURE; not GET
DATA or EXEC, which answer -1 with RESULT_SUCCESS); ``SUCCESS`` when the server simply
closes the session.  Command lines are read as res_agi's fgets() into an 8192-byte
buffer does: a longer line is cut after 8191 bytes and the rest runs as the next command.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ivr.agi.codec import parse_args
from ivr.asterisk.appargs import split_app_args
from ivr.log import event as log_event
from ivr.metrics import METRICS
from ivr.sim.agi_commands import DEAD, INVALID, find_command, is_failure, result_fields
from ivr.sim.model import Channel, ChannelHungUp, Redirected

if TYPE_CHECKING:
    from ivr.sim.pbx import Pbx

log = logging.getLogger("ivr.sim.agi")

# res_agi.c run_agi reads a command with fgets() into ``char buf[AGI_BUF_LEN]`` (8192):
# a longer line is cut after 8191 bytes and its tail is read as the next command(s).
AGI_BUF_LEN = 8192
# res_agi.c launch_netscript/handle_connection: a FastAGI connect waits MAX_AGI_CONNECT
# (2000 ms) per address; refused or timed out, AGI() sets AGISTATUS=FAILURE and returns 0
# (the dialplan goes on: to the second FastAGI server or the static fallback)
CONNECT_TIMEOUT = 2.0


class CommandReader:
    """Command lines as res_agi reads them: up to ``AGI_BUF_LEN - 1`` bytes each (a
    whole line with its ``\\n``, or the first 8191 bytes of a longer one); a last
    partial line at end of stream is returned as is; ``b""`` at end of stream."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buf = bytearray()

    async def next(self) -> bytes:
        cap = AGI_BUF_LEN - 1
        while True:
            nl = self.buf.find(b"\n", 0, cap)
            if nl >= 0:
                return self._take(nl + 1)
            if len(self.buf) >= cap:
                return self._take(cap)
            data = await self.reader.read(65536)  # cancellation-safe: nothing lost
            if not data:
                return self._take(len(self.buf))
            self.buf += data

    def _take(self, n: int) -> bytes:
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


def header_block(pbx: Pbx, ch: Channel, url: str, args: list[str]) -> bytes:
    parts = urlsplit(url)
    script = parts.path.lstrip("/") + (f"?{parts.query}" if parts.query else "")
    num = "unknown" if ch.cid_num == "<unknown>" else ch.cid_num
    name = "unknown" if ch.cid_name == "<unknown>" else ch.cid_name
    lines = [
        ("agi_network", "yes"), ("agi_network_script", script), ("agi_request", url),
        ("agi_channel", ch.name), ("agi_language", ch.language), ("agi_type", ch.tech),
        ("agi_uniqueid", ch.uniqueid), ("agi_version", "20.20.1"), ("agi_callerid", num),
        ("agi_calleridname", name), ("agi_callingpres", "0"), ("agi_callingani2", "0"),
        ("agi_callington", "0"), ("agi_callingtns", "0"),
        ("agi_dnid", ch.variables.get("__SIM_DNID", "unknown")), ("agi_rdnis", "unknown"),
        ("agi_context", ch.context), ("agi_extension", ch.exten),
        ("agi_priority", str(ch.priority)), ("agi_enhanced", "0.0"),
        ("agi_accountcode", ch.accountcode), ("agi_threadid", str(threading.get_ident())),
    ]
    lines += [(f"agi_arg_{i}", a) for i, a in enumerate(args, 1)]
    text = "".join(f"{k}: {v.replace(chr(10), ' ')}\n" for k, v in lines) + "\n"
    return text.encode()


async def agi_app(pbx: Pbx, ch: Channel, data: str) -> None:
    args = split_app_args(data, max_args=128) or [""]  # AST_APP_ARG(arg)[MAX_ARGS]
    url = args[0].strip()
    parts = urlsplit(url)
    if parts.scheme != "agi":
        log_event(log, logging.WARNING, "sim.agi_unsupported",
                  detail=f"only agi:// (FastAGI) is emulated, got {url!r}")
        pbx.set_var(ch, "AGISTATUS", "FAILURE")
        return
    host = pbx.options.agi_host or parts.hostname or "127.0.0.1"
    port = pbx.options.agi_port or parts.port or 4573
    try:
        with pbx.clock.holding():  # a virtual clock stands still while we connect
            async with asyncio.timeout(CONNECT_TIMEOUT):  # no extra task, unlike wait_for
                reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        METRICS.inc("sim.agi_connect_failed")
        log_event(log, logging.WARNING, "sim.agi_connect_failed", channel=ch.name,
                  host=host, port=port, error=str(exc))
        pbx.set_var(ch, "AGISTATUS", "FAILURE")
        rec = pbx.records.get(ch.uniqueid)
        if rec is not None:
            rec.agi_status = "FAILURE"
        return
    status = "FAILURE"
    try:
        writer.write(header_block(pbx, ch, url, [a for a in args[1:]]))
        status = await _session(pbx, ch, reader, writer)
    except (OSError, ConnectionError) as exc:
        log_event(log, logging.WARNING, "sim.agi_io_error", channel=ch.name, error=str(exc))
        status = "HANGUP" if ch.hungup else "FAILURE"
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ConnectionError):
            pass
    pbx.set_var(ch, "AGISTATUS", status)
    rec = pbx.records.get(ch.uniqueid)
    if rec is not None:
        rec.agi_status = status
    if status == "HANGUP":
        raise ChannelHungUp(ch.name)
    ch.check()


async def _session(pbx: Pbx, ch: Channel, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> str:
    sent_hangup = False
    failed = False

    async def notify_hangup() -> None:
        nonlocal sent_hangup
        if ch.hungup and not sent_hangup:
            sent_hangup = True
            writer.write(b"HANGUP\n")
            await writer.drain()

    lines = CommandReader(reader)
    while True:
        read = asyncio.ensure_future(lines.next())
        with pbx.clock.holding():  # the server owes the next command: virtual time waits
            if not ch.hungup:
                await _read_or_wake(ch, read)
                if not read.done():
                    if ch.redirect is not None:
                        read.cancel()
                        raise Redirected(ch.name)
                    await notify_hangup()
            raw = await read
        if not raw:
            return "HANGUP" if ch.hungup else "FAILURE" if failed else "SUCCESS"
        if not raw.endswith(b"\n") and len(raw) == AGI_BUF_LEN - 1:
            METRICS.inc("sim.agi_line_cut")
            log_event(log, logging.WARNING, "sim.agi_line_cut", channel=ch.name,
                      detail=f"command line longer than {AGI_BUF_LEN - 1} bytes: cut there "
                             "as res_agi does; the rest runs as the next command")
        # run_agi strips only the final "\n"; a blank line is a command too (510).
        line = raw.decode("utf-8", "replace").removesuffix("\n").rstrip("\r")
        reply, failure = await _run_command(pbx, ch, line, dead=sent_hangup or ch.hungup)
        if failure and not ch.hungup:
            failed = True  # RESULT_FAILURE on a live channel: AGISTATUS=FAILURE at the end
        writer.write(reply.encode())
        await writer.drain()
        await notify_hangup()


async def _read_or_wake(ch: Channel, read: asyncio.Future[bytes]) -> None:
    """Wait until the next command line is read or the channel is woken (hang-up,
    redirect): one future, no task for the wake."""
    either: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def done(_f: object) -> None:
        if not either.done():
            either.set_result(None)
    read.add_done_callback(done)
    ch.wake.watch(either)
    try:
        await either
    finally:
        ch.wake.unwatch(either)
        read.remove_done_callback(done)


@lru_cache(maxsize=1024)  # a pure function of the line; IVRs send the same lines again
def _parse_args(line: str) -> tuple[str, ...]:
    return tuple(parse_args(line))


async def _run_command(pbx: Pbx, ch: Channel, line: str, dead: bool) -> tuple[str, bool]:
    argv = list(_parse_args(line))
    cid = str(random.randint(100000000, 2147483647))
    pbx.bus.chan("AGIExecStart", "agi", ch, f"CommandId: {cid}\r\nCommand: {line}\r\n")
    found = find_command(argv) if argv else None
    if found is None:
        reply = INVALID
    else:
        handler, dead_ok, args = found
        if dead and not dead_ok:
            reply = DEAD
        else:
            try:
                reply = await handler(pbx, ch, args)
            except ChannelHungUp:
                reply = "200 result=-1\n"
            except Redirected:
                reply = "200 result=-1\n"
    failure = is_failure(argv, reply)
    code, text = result_fields(reply, failure, argv)
    pbx.bus.chan("AGIExecEnd", "agi", ch,
                 f"CommandId: {cid}\r\nCommand: {line}\r\nResultCode: {code}\r\n"
                 f"Result: {text}\r\n")
    return reply, failure
