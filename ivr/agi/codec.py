"""FastAGI wire format without I/O.

* :class:`HeaderParser` reads the ``agi_*`` block Asterisk sends first (capped in size).
* :class:`ReplyParser` turns Asterisk's reply lines into :class:`Reply` objects and
  :data:`ASYNC_HANGUP` markers: ``200 result=N (data) endpos=M``, ``510``, ``511``,
  multi-line ``520-`` usage errors, ``100 Trying``, and the unsolicited ``HANGUP`` line
  Asterisk writes when the caller hangs up (it is *not* the reply to any command).
* :func:`encode_command` quotes arguments the way Asterisk's ``parse_args()`` in
  ``res_agi.c`` reads them, so no caller-controlled string can end one command and
  start another.

Parsers return values or raise :class:`AGIProtocolError` (or its subclass
:class:`AGIHeaderError`); any other exception is a bug.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from ivr.agi.errors import AGIArgumentError, AGIHeaderError, AGIProtocolError

MAX_HEADER_BLOCK = 16 * 1024
MAX_REPLY_LINE = 64 * 1024
MAX_USAGE_LINES = 200
# res_agi.c reads a command with fgets() into ``char buf[AGI_BUF_LEN]`` (8192): a longer
# line is cut there and its tail runs as the *next* command, so longer lines are refused.
AGI_BUF_LEN = 8192
MAX_COMMAND_LINE = AGI_BUF_LEN - 1  # bytes, including the final "\n"
# res_agi.c ``MAX_ARGS`` (128): parse_args() silently drops words past MAX_ARGS - 1.
MAX_ARGS = 128


@dataclass(frozen=True, slots=True)
class AGIEnvironment:
    """The ``agi_*`` header block of one FastAGI session."""

    headers: Mapping[str, str]
    args: tuple[str, ...] = ()
    issues: tuple[str, ...] = field(default=())

    def get(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)

    @property
    def channel(self) -> str:
        return self.get("agi_channel")

    @property
    def uniqueid(self) -> str:
        return self.get("agi_uniqueid")

    @property
    def callerid(self) -> str:
        return self.get("agi_callerid")

    @property
    def calleridname(self) -> str:
        return self.get("agi_calleridname")

    @property
    def language(self) -> str:
        return self.get("agi_language")

    @property
    def context(self) -> str:
        return self.get("agi_context")

    @property
    def extension(self) -> str:
        return self.get("agi_extension")

    @property
    def network_script(self) -> str:
        """``ivr?entry=main`` for ``agi://host:4573/ivr?entry=main``."""
        return self.get("agi_network_script")

    @property
    def script_path(self) -> str:
        """The script without its query string: ``ivr``."""
        return self.network_script.partition("?")[0].strip("/")

    @property
    def query(self) -> dict[str, str]:
        """The script's query parameters: ``{"entry": "main"}``."""
        return dict(parse_qsl(self.network_script.partition("?")[2], keep_blank_values=True))


def parse_header_block(block: str) -> AGIEnvironment:
    """Parse a complete header block (without the final blank line)."""
    headers: dict[str, str] = {}
    issues: list[str] = []
    for line in block.split("\n"):
        if not line:
            continue
        key, sep, value = line.partition(": ")
        if not sep:
            key, sep, value = line.partition(":")
        if not sep or not key.startswith("agi_"):
            issues.append(f"not an agi_* header: {line[:80]!r}")
            continue
        headers[key] = value
    if not headers:
        raise AGIHeaderError("empty AGI header block")
    if "agi_network_script" not in headers and "agi_request" not in headers:
        raise AGIHeaderError("AGI header block has neither agi_network_script nor agi_request")
    args: list[str] = []
    n = 1
    while (arg := headers.get(f"agi_arg_{n}")) is not None:
        args.append(arg)
        n += 1
    return AGIEnvironment(headers=headers, args=tuple(args), issues=tuple(issues))


class HeaderParser:
    """Collect bytes until the blank line that ends the ``agi_*`` block."""

    def __init__(self, max_bytes: int = MAX_HEADER_BLOCK) -> None:
        self._buf = bytearray()
        self._max = max_bytes
        self.leftover = b""

    def feed(self, data: bytes) -> AGIEnvironment | None:
        """The environment once the block is complete, else ``None``."""
        start = max(0, len(self._buf) - 1)
        self._buf += data
        head = bytes(self._buf[:4])
        if not b"agi_".startswith(head) and not head.startswith(b"agi_"):
            # Asterisk always starts with ``agi_network: yes``: fail fast on anything else
            # (an HTTP health check ends with \r\n\r\n and would otherwise wait for the timeout).
            raise AGIHeaderError(f"not an AGI header block: starts with {head!r}")
        end = self._buf.find(b"\n\n", start)
        if end < 0:
            if len(self._buf) > self._max:
                raise AGIHeaderError(
                    f"AGI header block larger than {self._max} bytes without its blank line"
                )
            return None
        if end > self._max:
            raise AGIHeaderError(f"AGI header block larger than {self._max} bytes")
        block = bytes(self._buf[:end]).decode("utf-8", "replace").replace("\r", "")
        self.leftover = bytes(self._buf[end + 2 :])
        self._buf.clear()
        return parse_header_block(block)

    def feed_eof(self) -> None:
        raise AGIHeaderError(
            f"connection closed after {len(self._buf)} bytes, before the end of the AGI "
            "header block"
        )


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply to an AGI command."""

    code: int
    text: str  # everything after the code (all lines for a multi-line 520)
    result: str | None = None  # the raw value after ``result=`` (may be empty)
    data: str | None = None  # the text in parentheses
    endpos: int | None = None

    @property
    def ok(self) -> bool:
        return self.code == 200

    @property
    def value(self) -> int | None:
        """``result=`` as an int, ``None`` when absent or empty."""
        if self.result is None:
            return None
        try:
            return int(self.result)
        except ValueError:
            return None


class AsyncHangup:
    """The unsolicited ``HANGUP`` line."""

    _instance: AsyncHangup | None = None

    def __new__(cls) -> AsyncHangup:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ASYNC_HANGUP"


ASYNC_HANGUP = AsyncHangup()

_ENDPOS_RE = re.compile(r"\s*endpos=(-?[0-9]+)\s*$")


_CODE_RE = re.compile(r"[0-9]{3}", re.ASCII)


def parse_reply_line(line: str) -> Reply:
    """Parse one single-line reply (``200 result=…``, ``510 …``, ``511 …``, ``520 …``)."""
    if not _CODE_RE.match(line) or (len(line) > 3 and line[3] not in " -"):
        raise AGIProtocolError(f"not an AGI reply: {line[:80]!r}")
    code = int(line[:3])
    text = line[4:]
    if code != 200 or not text.startswith("result="):
        return Reply(code=code, text=text)
    rest = text[7:]
    result, _, rest = rest.partition(" ")
    endpos: int | None = None
    m = _ENDPOS_RE.search(rest)
    if m and not (rest.startswith("(") and rest.endswith(")")):
        endpos = int(m.group(1))
        rest = rest[: m.start()]
    data: str | None = None
    rest = rest.strip(" ")
    if rest.startswith("(") and rest.endswith(")"):
        data = rest[1:-1]
    elif rest:
        data = rest
    return Reply(code=code, text=text, result=result, data=data, endpos=endpos)


class ReplyParser:
    """Incremental parser of what Asterisk writes after the header block."""

    def __init__(self, max_line: int = MAX_REPLY_LINE) -> None:
        self._buf = bytearray()
        self._max = max_line
        self._usage: list[str] | None = None  # lines of a 520- block in progress
        self._usage_code = 0

    def feed(self, data: bytes) -> list[Reply | AsyncHangup]:
        self._buf += data
        out: list[Reply | AsyncHangup] = []
        buf = self._buf
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > self._max:
                    raise AGIProtocolError(f"AGI reply line longer than {self._max} bytes")
                return out
            line = bytes(buf[:nl]).decode("utf-8", "replace").rstrip("\r")
            del buf[: nl + 1]
            item = self._line(line)
            if item is not None:
                out.append(item)

    def feed_eof(self) -> None:
        if self._buf or self._usage is not None:
            raise AGIProtocolError("connection closed in the middle of an AGI reply")

    def _line(self, line: str) -> Reply | AsyncHangup | None:
        if self._usage is not None:
            code = f"{self._usage_code} "
            if line.startswith(code):
                self._usage.append(line[4:])
                text = "\n".join(self._usage)
                self._usage = None
                return Reply(code=self._usage_code, text=text)
            if len(self._usage) >= MAX_USAGE_LINES:
                raise AGIProtocolError("AGI usage message longer than 200 lines")
            self._usage.append(line)
            return None
        if line == "HANGUP":
            return ASYNC_HANGUP
        if not line:
            return None
        if len(line) > 3 and _CODE_RE.match(line) and line[3] == "-":
            self._usage = [line[4:]]
            self._usage_code = int(line[:3])
            return None
        return parse_reply_line(line)


_COMMAND_RE = re.compile(r"[A-Z]+( [A-Z]+)*\Z")
_SAFE_RE = re.compile(r"[A-Za-z0-9_\-./:@()#*+=,|%]+\Z")


def quote_arg(arg: str | int) -> str:
    """One argument as Asterisk's ``parse_args()`` will read it back, unchanged.

    Plain tokens go as they are; anything else is wrapped in double quotes with ``\\``
    and ``"`` escaped.  A line break or NUL can't be carried by AGI at all (a command
    is one line), so it raises :class:`AGIArgumentError` instead of being sent.
    """
    s = str(arg)
    if _SAFE_RE.match(s):
        return s
    if "\n" in s or "\r" in s or "\0" in s:
        raise AGIArgumentError(
            f"AGI argument contains a line break or NUL and cannot be sent: {s[:60]!r}"
        )
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode_command(command: str, *args: str | int) -> bytes:
    """``command`` (upper-case words such as ``STREAM FILE``) with quoted ``args``."""
    if not _COMMAND_RE.match(command):
        raise AGIArgumentError(f"invalid AGI command name {command!r}")
    parts = [command]
    parts.extend(quote_arg(a) for a in args)
    words = len(command.split()) + len(args)
    if words > MAX_ARGS - 1:
        raise AGIArgumentError(
            f"AGI command {command!r} has {words} words; Asterisk keeps only {MAX_ARGS - 1}"
        )
    return _check_length(command, _utf8(" ".join(parts) + "\n"))


def _utf8(line: str) -> bytes:
    try:
        return line.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate (e.g. from surrogateescape)
        raise AGIArgumentError(f"AGI command is not valid Unicode text: {exc}") from None


def _check_length(what: str, line: bytes) -> bytes:
    if len(line) > MAX_COMMAND_LINE:
        raise AGIArgumentError(
            f"AGI command {what[:40]!r} is {len(line)} bytes; Asterisk reads at most "
            f"{MAX_COMMAND_LINE} and would run the rest as another command"
        )
    return line


def encode_raw(line: str) -> bytes:
    """A raw command line (escape hatch): refused if it holds a line break or NUL."""
    if "\n" in line or "\r" in line or "\0" in line:
        raise AGIArgumentError(f"raw AGI command contains a line break or NUL: {line[:60]!r}")
    if not line.strip():
        raise AGIArgumentError("empty AGI command")
    return _check_length(line, _utf8(line + "\n"))


def parse_args(line: str, max_args: int = MAX_ARGS) -> list[str]:
    """Split a command line the way Asterisk's ``parse_args()`` does (used by the
    emulator and by tests that prove :func:`quote_arg` round-trips).

    Like the C code it stops at a NUL (C string) and drops words past ``max_args - 1``.
    """
    line = line.partition("\0")[0]
    argv: list[str] = []
    cur: list[str] = []
    quoted = escaped = False
    whitespace = True
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and whitespace:
                argv.append("")
                cur = []
                whitespace = False
            escaped = False
            continue
        if ch in " \t" and not quoted and not escaped:
            if not whitespace:
                argv[-1] = "".join(cur)
                cur = []
            whitespace = True
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        if whitespace:
            if len(argv) >= max_args - 1:
                continue  # "Too many arguments, truncating"
            argv.append("")
            cur = []
            whitespace = False
        cur.append(ch)
        escaped = False
    if argv and not whitespace:
        argv[-1] = "".join(cur)
    return argv
