"""The typed AGI channel IVR code talks to: one FastAGI session, one command at a time.

Every command is encoded with :func:`ivr.agi.codec.encode_command` (so no caller-controlled
string can end one command and start another) and every reply is read with
:class:`ivr.agi.codec.ReplyParser`.  The unsolicited ``HANGUP`` line Asterisk writes when
the caller hangs up is never taken as a reply: it only sets :attr:`AGIChannel.hung_up`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from ivr.agi.codec import (
    AGIEnvironment,
    AsyncHangup,
    Reply,
    ReplyParser,
    encode_command,
    encode_raw,
)
from ivr.agi.errors import (
    AGIArgumentError,
    AGICommandError,
    AGIConnectionClosed,
    AGIError,
    AGIHangup,
    AGIProtocolError,
    AGITimeout,
)
from ivr.log import event
from ivr.metrics import METRICS

log = logging.getLogger(__name__)

# Per-command reply deadlines (docs/agi.md "Timeouts").  A command that only asks Asterisk
# something (ANSWER, SET/GET VARIABLE, EXEC MSet…) is answered in milliseconds; one that
# plays prompts or waits for digits is bounded by what it can take: each prompt file at
# most DEFAULT_PROMPT_SECONDS (what `ivr prompts import` keeps of a recording,
# ivr.prompts.convert.MAX_PROMPT_SECONDS), plus its own digit timeouts, plus a margin.
DEFAULT_COMMAND_TIMEOUT = 10.0
DEFAULT_PROMPT_SECONDS = 120.0
DEFAULT_DEADLINE_MARGIN = 5.0
# Asterisk's wait for a digit when the command gives none (a PBX's response timeout, 10 s)
_DEFAULT_DIGIT_WAIT = 10.0
DEFAULT_HANGUP_GRACE = 0.3
_READ_SIZE = 65536

# AGI commands that play one prompt file (and wait for nothing else)
_PLAYBACK_COMMANDS = frozenset({
    "STREAM FILE", "CONTROL STREAM FILE", "SAY DIGITS", "SAY NUMBER", "SAY ALPHA",
    "SAY PHONETIC", "SAY DATE", "SAY TIME", "SAY DATETIME",
})
# Dialplan applications that play the ``&`` list of files of their first argument
_PLAYBACK_APPS = frozenset({
    "playback", "background", "controlplayback", "saydigits", "saynumber", "sayalpha",
    "sayphonetic",
})


@dataclass(frozen=True, slots=True)
class StreamResult:
    """Result of ``STREAM FILE``: the digit that interrupted playback (or ``None``), the
    sample position reached, and ``failed`` when the prompt could not be played."""

    digit: str | None
    endpos: int
    failed: bool


@dataclass(frozen=True, slots=True)
class DataResult:
    """Result of ``GET DATA`` / :meth:`AGIChannel.read_digits`: the digits entered (may be
    empty), whether the caller stopped typing before ``max_digits`` / ``#`` (Asterisk's
    ``(timeout)``), and ``failed`` when the prompt could not be played on a live channel
    (no digits were read)."""

    digits: str
    timed_out: bool
    failed: bool = False


# Characters that would change how Read's argument parser (ast_app_separate_args: ``,``
# quotes, brackets, backslash) or the ``&`` list split (ast_strsep) sees a prompt name, or
# that AGIEXECFULL would substitute (``$``).
_READ_UNSAFE = frozenset(',&"\'()[]{}$|')
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class AGIChannel:
    """One FastAGI session.  Commands are serialised: a second coroutine calling a command
    waits for the first one's reply."""

    def __init__(
        self,
        env: AGIEnvironment,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        leftover: bytes = b"",
        default_timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        hangup_grace: float = DEFAULT_HANGUP_GRACE,
        prompt_seconds: float = DEFAULT_PROMPT_SECONDS,
        deadline_margin: float = DEFAULT_DEADLINE_MARGIN,
    ) -> None:
        self.env = env
        self.hung_up = False
        self.commands_sent = 0
        self.default_timeout = default_timeout
        self.hangup_grace = hangup_grace
        self.prompt_seconds = prompt_seconds
        self.deadline_margin = deadline_margin
        # (loop time the reply has been awaited since, whether the command waits for the
        # caller) while a reply is awaited, else None: the server sheds stalled sessions
        self.waiting: tuple[float, bool] | None = None
        self._reader = reader
        self._writer = writer
        self._parser = ReplyParser()
        self._pending: deque[Reply] = deque()
        self._lock = asyncio.Lock()
        self._stale = 0  # replies still owed to commands that timed out
        self._eof = False
        self._broken: AGIProtocolError | None = None
        if leftover:
            self._absorb(leftover)

    def __repr__(self) -> str:
        return f"<AGIChannel {self.env.channel!r} hung_up={self.hung_up}>"

    # -- generic commands -------------------------------------------------------------

    # ``timeout`` is part of the fixed channel API (a per-command reply deadline that also
    # keeps the session in step afterwards), hence the ASYNC109 exemptions.
    async def command(
        self, command: str, *args: str | int, timeout: float | None = None  # noqa: ASYNC109
    ) -> Reply:
        """Send ``command`` with quoted ``args`` and return its ``200`` reply.

        Raises :class:`AGICommandError` on ``510``/``520``/other codes, :class:`AGIHangup`
        on ``511`` or when the socket closes, :class:`AGITimeout` when no reply comes in
        time, :class:`AGIArgumentError` (before sending anything) for an argument that
        cannot be carried safely.
        """
        line = encode_command(command, *args)
        limit, caller = self.deadline(command, *args)
        if timeout is not None:  # the caller's own bound (EXEC Queue, Dial…)
            plain = self.default_timeout
            caller = caller or plain is None or timeout > plain
            limit = timeout
        return await self._roundtrip(command, line, limit, caller)

    async def raw(self, line: str, timeout: float | None = None) -> Reply:  # noqa: ASYNC109
        """Send ``line`` as it is (escape hatch; refused if it holds a line break/NUL).
        Without ``timeout`` the plain :attr:`default_timeout` applies."""
        data = encode_raw(line)
        limit = self.default_timeout if timeout is None else timeout
        return await self._roundtrip(line[:40], data, limit, False)

    def deadline(self, command: str, *args: str | int) -> tuple[float | None, bool]:
        """:func:`command_deadline` with this channel's settings."""
        return command_deadline(command, args, plain=self.default_timeout,
                                prompt_seconds=self.prompt_seconds,
                                margin=self.deadline_margin)

    # -- typed commands ---------------------------------------------------------------

    async def answer(self) -> None:
        reply = await self.command("ANSWER")
        if reply.value == -1:
            self._mark_hung_up("ANSWER result=-1")
            raise AGIHangup(f"ANSWER failed on {self.env.channel}: channel gone")

    async def hangup(self, channel: str | None = None) -> None:
        reply = await (self.command("HANGUP", channel) if channel else self.command("HANGUP"))
        if reply.value == -1:
            raise AGICommandError("HANGUP", reply.code, f"no such channel: {channel}")

    async def stream_file(self, name: str, escape_digits: str = "") -> StreamResult:
        reply = await self.command("STREAM FILE", name, escape_digits)
        value = _need_int(reply, "STREAM FILE")
        endpos = reply.endpos or 0
        if value == -1:
            if await self._gone_after_failure():
                raise AGIHangup(f"caller hung up during STREAM FILE {name} on {self.env.channel}")
            return StreamResult(digit=None, endpos=endpos, failed=True)
        return StreamResult(digit=_digit(value), endpos=endpos, failed=False)

    async def get_data(
        self, prompt: str, timeout_ms: int = 5000, max_digits: int = 1
    ) -> DataResult:
        """``GET DATA prompt timeout_ms max_digits``: ``prompt`` is ONE file name (res_agi
        ``handle_getdata`` → ``ast_app_getdata_full``, no ``&`` list: see
        :meth:`read_digits`).  ``result=-1`` is a hang-up or a prompt that cannot be
        played: :class:`AGIHangup` if Asterisk's ``HANGUP`` line follows within
        ``hangup_grace`` s, else a ``failed`` result."""
        reply = await self.command("GET DATA", prompt, timeout_ms, max_digits)
        if reply.result is None:
            raise AGIProtocolError(f"GET DATA reply without result=: {reply.text[:80]!r}")
        if reply.result == "-1":
            if await self._gone_after_failure():
                raise AGIHangup(f"caller hung up during GET DATA on {self.env.channel}")
            self._prompt_failed("GET DATA", prompt)
            return DataResult(digits="", timed_out=False, failed=True)
        return DataResult(digits=reply.result, timed_out=reply.data == "timeout")

    async def read_digits(
        self,
        prompts: Sequence[str],
        timeout_ms: int = 5000,
        max_digits: int = 1,
        variable: str = "IVR_DIGITS",
    ) -> DataResult:
        """Play several prompts, any digit interrupting them, and read digits: the
        ``Read`` application (apps/app_read.c, whose ``ast_app_getdata_terminator`` splits
        the ``&`` list) then one ``GET FULL VARIABLE`` for ``READSTATUS`` and the digits —
        two round trips::

            EXEC Read IVR_DIGITS,p1&p2&p3,<max_digits>,,1,<timeout_ms / 1000>
            GET FULL VARIABLE ${READSTATUS},${IVR_DIGITS}

        ``READSTATUS``: ``OK`` (digits, or ``#`` alone → empty), ``TIMEOUT``, ``HANGUP``
        (→ :class:`AGIHangup`), ``ERROR`` (the last prompt could not be played; Read skips
        missing prompts before it → a ``failed`` result).  Read itself answers
        ``result=0`` even when the caller hangs up (the ``HANGUP`` line follows)."""
        if not prompts:
            raise AGIArgumentError("read_digits: at least one prompt is needed")
        for name in prompts:
            bad = sorted(set(name) & _READ_UNSAFE)
            if not name.strip() or bad:
                raise AGIArgumentError(
                    f"read_digits: prompt {name!r} cannot be passed to Read "
                    f"(empty, or holds {''.join(bad)!r})")
        if not _VARIABLE_NAME.match(variable):
            raise AGIArgumentError(f"read_digits: bad variable name {variable!r}")
        if not 1 <= max_digits <= 255:
            raise AGIArgumentError(f"read_digits: max_digits {max_digits} not in 1..255")
        joined = "&".join(prompts)
        value = await self.exec("Read", variable, joined, str(max_digits), "", "1",
                                _seconds(timeout_ms))
        if value < 0:  # not Asterisk 20's Read (it returns 0), but a -1 means the same
            if await self._gone_after_failure():
                raise AGIHangup(f"caller hung up during Read on {self.env.channel}")
            self._prompt_failed("Read", joined)
            return DataResult(digits="", timed_out=False, failed=True)
        got = await self.get_full_variable(f"${{READSTATUS}},${{{variable}}}")
        status, _, digits = (got or "").partition(",")
        if status == "HANGUP":
            self._mark_hung_up("READSTATUS=HANGUP")
            raise AGIHangup(f"caller hung up during Read on {self.env.channel}")
        if status == "OK":
            return DataResult(digits=digits, timed_out=False)
        if status == "TIMEOUT":
            return DataResult(digits=digits, timed_out=True)
        if self.hung_up:
            raise AGIHangup(f"caller hung up during Read on {self.env.channel}")
        self._prompt_failed("Read", joined, status=status)
        return DataResult(digits="", timed_out=False, failed=True)

    def _prompt_failed(self, command: str, prompt: str, status: str = "") -> None:
        METRICS.inc("agi.prompt_failed")
        event(log, logging.WARNING, "agi.prompt_failed", command=command, prompt=prompt[:200],
              status=status, channel=self.env.channel)

    async def get_variable(self, name: str) -> str | None:
        reply = await self.command("GET VARIABLE", name)
        return (reply.data or "") if reply.value == 1 else None

    async def get_full_variable(self, expression: str) -> str | None:
        """``expression`` is evaluated by Asterisk (``${…}``): it must be trusted text,
        never caller input."""
        reply = await self.command("GET FULL VARIABLE", expression)
        return (reply.data or "") if reply.value == 1 else None

    async def set_variable(self, name: str, value: str) -> None:
        await self.command("SET VARIABLE", name, value)

    async def exec(
        self, app: str, *app_args: str, timeout: float | None = None  # noqa: ASYNC109
    ) -> int:
        """``EXEC app "a,b,c"``; returns the application's result.  Commas inside one
        ``app_args`` item split it in the application, as in the dialplan."""
        args = (app, ",".join(app_args)) if app_args else (app,)
        reply = await self.command("EXEC", *args, timeout=timeout)
        value = _need_int(reply, "EXEC")
        if value == -2:
            raise AGICommandError("EXEC", reply.code, f"application not found: {app}")
        return value

    async def say_digits(self, digits: str, escape_digits: str = "") -> str | None:
        return await self._say("SAY DIGITS", digits, escape_digits)

    async def say_number(self, number: int, escape_digits: str = "") -> str | None:
        return await self._say("SAY NUMBER", number, escape_digits)

    async def channel_status(self) -> int:
        return _need_int(await self.command("CHANNEL STATUS"), "CHANNEL STATUS")

    async def set_language(self, lang: str) -> None:
        await self.set_variable("CHANNEL(language)", lang)

    async def _say(self, command: str, what: str | int, escape_digits: str) -> str | None:
        value = _need_int(await self.command(command, what, escape_digits), command)
        if value == -1:
            self._mark_hung_up(f"{command} result=-1")
            raise AGIHangup(f"caller hung up during {command} on {self.env.channel}")
        return _digit(value)

    # -- I/O --------------------------------------------------------------------------

    async def _roundtrip(
        self, name: str, data: bytes, limit: float | None, caller: bool
    ) -> Reply:
        async with self._lock:
            if self._broken is not None:
                raise AGIProtocolError(
                    f"AGI session on {self.env.channel} unusable after: {self._broken}"
                )
            if self._eof:
                raise AGIConnectionClosed(f"AGI socket of {self.env.channel} is closed")
            try:
                self._writer.write(data)
            except (ConnectionError, OSError) as exc:
                self._closed("write failed")
                raise AGIConnectionClosed(
                    f"AGI socket of {self.env.channel} closed while sending {name!r}: {exc}"
                ) from exc
            self.commands_sent += 1
            answered = False
            self.waiting = (asyncio.get_running_loop().time(), caller)
            try:
                async with asyncio.timeout(limit):
                    await self._writer.drain()
                    reply = await self._next_reply()
                answered = True
            except TimeoutError:
                METRICS.inc("agi.commands.timeout")
                event(
                    log, logging.WARNING, "agi.command.timeout",
                    command=name, timeout=limit, channel=self.env.channel,
                )
                raise AGITimeout(
                    f"no reply to {name!r} within "
                    f"{'no limit' if limit is None else format(limit, 'g')} s "
                    f"on {self.env.channel}"
                ) from None
            except (ConnectionError, OSError) as exc:
                self._closed("write failed")
                raise AGIConnectionClosed(
                    f"AGI socket of {self.env.channel} closed while sending {name!r}: {exc}"
                ) from exc
            finally:
                self.waiting = None
                if not answered and not self._eof:
                    # timed out, or cancelled by the caller's own timeout: the reply
                    # still comes and must not be taken for the next command's
                    self._stale += 1
        if reply.code == 200:
            return reply
        if reply.code == 511:
            self._mark_hung_up("511")
            raise AGIHangup(f"{name!r} refused on dead channel {self.env.channel}: {reply.text}")
        raise AGICommandError(name, reply.code, reply.text)

    async def _next_reply(self) -> Reply:
        while True:
            while self._pending:
                reply = self._pending.popleft()
                if reply.code == 100:  # "100 Trying…": the real reply follows
                    continue
                if self._stale:
                    self._stale -= 1
                    continue
                return reply
            if self._eof:
                raise AGIConnectionClosed(f"AGI socket of {self.env.channel} closed")
            await self._read_more()

    async def _read_more(self) -> None:
        try:
            data = await self._reader.read(_READ_SIZE)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self._closed("eof")
            return
        self._absorb(data)

    def _absorb(self, data: bytes) -> None:
        try:
            items = self._parser.feed(data)
        except AGIProtocolError as exc:
            self._broken = exc
            METRICS.inc("agi.protocol_errors")
            raise
        for item in items:
            if isinstance(item, AsyncHangup):
                self._mark_hung_up("HANGUP line")
            else:
                self._pending.append(item)

    def _closed(self, why: str) -> None:
        self._eof = True
        self._mark_hung_up(why)
        try:
            self._parser.feed_eof()
        except AGIProtocolError:
            METRICS.inc("agi.protocol_errors")

    def _mark_hung_up(self, why: str) -> None:
        if not self.hung_up:
            self.hung_up = True
            event(log, logging.INFO, "agi.channel.hangup", reason=why, channel=self.env.channel)

    async def _gone_after_failure(self) -> bool:
        """After ``result=-1``, tell a missing prompt from a hang-up: Asterisk writes its
        ``HANGUP`` line right after the reply, so wait ``hangup_grace`` s for it."""
        if self.hung_up:
            return True
        async with self._lock:
            try:
                async with asyncio.timeout(self.hangup_grace):
                    while not self.hung_up and not self._eof:
                        await self._read_more()
            except TimeoutError:
                pass
            except AGIError:
                return self.hung_up
        return self.hung_up


def command_deadline(
    command: str,
    args: Sequence[str | int],
    *,
    plain: float | None = DEFAULT_COMMAND_TIMEOUT,
    prompt_seconds: float = DEFAULT_PROMPT_SECONDS,
    margin: float = DEFAULT_DEADLINE_MARGIN,
) -> tuple[float | None, bool]:
    """How long ``command args`` may take to be answered, and whether it waits for the
    caller (plays prompts / reads digits):

    * ``GET DATA file t max``: one prompt + ``max`` × ``t`` ms (``t`` ≤ 0: 10 s);
    * ``STREAM FILE``, ``CONTROL STREAM FILE``, ``SAY …``: one prompt;
    * ``GET OPTION file digits t``: one prompt + ``t`` ms;
    * ``WAIT FOR DIGIT t``: ``t`` ms (``-1``, for ever: ``plain``);
    * ``EXEC Read var,files,max,opts,attempts,t``: ``attempts`` × (a prompt per file +
      ``max`` × ``t`` s); ``EXEC Playback/Background/Say…``: a prompt per file;
    * anything else (ANSWER, GET/SET VARIABLE, EXEC MSet…): ``plain``.

    A prompt is ``prompt_seconds``; ``margin`` is added to what waits for the caller.
    Pass ``timeout=`` to a command for what this cannot know (``EXEC Queue``/``Dial``)."""
    name = " ".join(command.upper().split())
    argv = [str(a) for a in args]
    files = 0
    wait = 0.0
    if name == "GET DATA":
        files = 1
        wait = _int_arg(argv, 2, 1024) * _digit_wait(_int_arg(argv, 1, 0) / 1000)
    elif name in _PLAYBACK_COMMANDS:
        files = 1
    elif name == "GET OPTION":
        files = 1
        wait = _digit_wait(_int_arg(argv, 2, 0) / 1000)
    elif name == "WAIT FOR DIGIT":
        ms = _int_arg(argv, 0, -1)
        if ms < 0:
            return plain, True
        wait = ms / 1000
    elif name == "EXEC" and argv:
        app = argv[0].lower()
        app_args = argv[1].split(",") if len(argv) > 1 else []
        first = app_args[0] if app_args else ""
        if app in _PLAYBACK_APPS:
            files = len(first.split("&")) if first else 1
        elif app == "read":
            prompts = app_args[1] if len(app_args) > 1 else ""
            files = len(prompts.split("&")) if prompts else 0
            digits = _int_arg(app_args, 2, 0) or 255
            attempts = max(1, _int_arg(app_args, 4, 1))
            per_digit = _digit_wait(_float_arg(app_args, 5, 0.0))
            return attempts * (files * prompt_seconds + digits * per_digit) + margin, True
    if not files and not wait:
        return plain, False
    return files * prompt_seconds + wait + margin, True


def _int_arg(argv: Sequence[str], index: int, default: int) -> int:
    try:
        return int(argv[index].strip())
    except (IndexError, ValueError):
        return default


def _float_arg(argv: Sequence[str], index: int, default: float) -> float:
    try:
        value = float(argv[index].strip())
    except (IndexError, ValueError):
        return default
    return value if value == value and value not in (float("inf"), float("-inf")) else default


def _digit_wait(seconds: float) -> float:
    """Asterisk's wait for one digit given ``seconds`` (≤ 0: its default)."""
    return seconds if seconds > 0 else _DEFAULT_DIGIT_WAIT


def _need_int(reply: Reply, command: str) -> int:
    value = reply.value
    if value is None:
        raise AGIProtocolError(f"{command} reply without a numeric result: {reply.text[:80]!r}")
    return value


def _seconds(ms: int) -> str:
    """Milliseconds as Read's ``timeout`` argument: seconds, a decimal (``atof``) — at
    least 1 ms (0 would mean the dialplan's default of 10 s)."""
    text = f"{max(1, ms) / 1000:.3f}".rstrip("0").rstrip(".")
    return text


def _digit(value: int) -> str | None:
    if value <= 0:
        return None
    try:
        return chr(value)
    except (ValueError, OverflowError):
        return None
