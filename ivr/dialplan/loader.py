"""Load ``dialplans/*.yaml`` into a :class:`~ivr.dialplan.model.Definition`.

Parsing works on YAML *nodes* (``yaml.compose``), never on ``yaml.safe_load`` output, so
every problem carries the file, line and column of the node at fault, and YAML 1.1
surprises (``17:30`` read as the integer 1050, ``no`` as False, ``0800`` as octal) cannot
slip in: strings are taken from the scalar's source text.

Several files may share the definition: each has ``version: 1``; mapping sections
(``languages``, ``queues``, ``departments``, ``emergency``, ``interpreters``,
``partners``, ``hours``, ``calendar``, ``flows``, ``entries``) are merged
by key (a key defined twice is an error), list sections (``priority``, ``overrides``)
are concatenated, ``settings`` and ``surge`` may appear once.

:func:`load_definition` raises :class:`~ivr.dialplan.errors.DialplanError` listing every
structural problem; graph and cross-reference checks are in :mod:`ivr.dialplan.validate`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ivr.dialplan import model as m
from ivr.dialplan.errors import DialplanError, Problem

T = TypeVar("T")

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"

_DAY_NAMES = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}
# Every pattern is matched with ``fullmatch`` (whole value): ``$`` would accept a trailing
# newline, which then breaks the rendered Asterisk config or a transfer at run time.
_TIME_RE = re.compile(r"([01]\d|2[0-4]):([0-5]\d)")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_NUMBER_RE = re.compile(r"[0-9*#+]{1,20}")
# a host name or IPv4 address, or an IPv6 address in brackets ([::1]): the rendered
# dialplan writes agi://HOST:PORT/ivr, where a bare IPv6 address would be misread
_HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\]")
# Tech/resource (PJSIP/1001, Local/1001@agents/n, SIP/peer): queues.conf reads
# ``member => interface,penalty,membername,state_interface,...``, so a comma would add
# fields, ``;`` starts a comment, and spaces or quotes are not part of an interface
_MEMBER_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*/[A-Za-z0-9_.@:+*#/-]+")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_HOST_KIND = ("a host name, an IPv4 address or an IPv6 address in brackets ([::1]) / "
              "主机名或地址无效")
_MEMBER_KIND = ("a queue member interface (Tech/resource such as PJSIP/1001 or "
                "Local/1001@agents/n; no commas, spaces or ';') / 队列成员接口格式无效")
_CJK_RE = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")

_TOP_KEYS = (
    "version",
    "settings",
    "languages",
    "queues",
    "departments",
    "priority",
    "hours",
    "overrides",
    "surge",
    "calendar",
    "flows",
    "entries",
    "pause_reasons",
    "recordings",
    "emergency",
    "interpreters",
    "partners",
)


def _show(s: str) -> str:
    """A value quoted for a message: as written, or escaped when it holds a line break or
    another invisible character (``'12345\\n'``), so the message stays one clear line."""
    return f"'{s}'" if s.isprintable() else repr(s)


def _type_name(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    assert isinstance(node, ScalarNode)
    if node.tag == _NULL:
        return "nothing (null)"
    kinds = {_BOOL: "boolean", _INT: "integer", _FLOAT: "number", _TIMESTAMP: "date"}
    return f"{kinds.get(node.tag, 'string')} '{node.value}'"


@dataclass
class _Reader:
    """Typed reads from YAML nodes; each failure becomes a Problem, never an exception."""

    file: str
    problems: list[Problem] = field(default_factory=list)

    def where(self, node: Node) -> m.Where:
        mark = node.start_mark
        return m.Where(self.file, mark.line + 1, mark.column + 1)

    def err(self, node: Node, message: str) -> None:
        self.problems.append(Problem(self.where(node), message))

    # ----------------------------------------------------------- containers

    def mapping(
        self,
        node: Node,
        what: str,
        allowed: tuple[str, ...],
        required: tuple[str, ...] = (),
    ) -> dict[str, Node] | None:
        """A mapping with known keys; reports unknown, duplicate and missing keys."""
        if not isinstance(node, MappingNode):
            self.err(node, f"{what} must be a mapping, got {_type_name(node)}")
            return None
        out: dict[str, Node] = {}
        for knode, vnode in node.value:
            key = str(knode.value) if isinstance(knode, ScalarNode) else None
            if key is None:
                self.err(knode, f"{what}: keys must be plain names")
                continue
            if key in out:
                self.err(knode, f"duplicate key '{key}' in {what}")
                continue
            if key not in allowed:
                self.err(
                    knode,
                    f"unknown key '{key}' in {what} (expected one of: {', '.join(allowed)})",
                )
                continue
            out[key] = vnode
        for key in required:
            if key not in out:
                self.err(node, f"{what} is missing required key '{key}'")
        return out

    def named_mapping(self, node: Node, what: str) -> list[tuple[str, Node, Node]]:
        """A mapping of free names (ids, numbers, digits) → nodes: (name, key, value)."""
        if not isinstance(node, MappingNode):
            self.err(node, f"{what} must be a mapping, got {_type_name(node)}")
            return []
        out: list[tuple[str, Node, Node]] = []
        seen: set[str] = set()
        for knode, vnode in node.value:
            if not isinstance(knode, ScalarNode) or knode.tag in (_NULL, _BOOL):
                self.err(knode, f"{what}: keys must be names, got {_type_name(knode)}")
                continue
            name = str(knode.value)
            if name in seen:
                self.err(knode, f"duplicate key '{name}' in {what}")
                continue
            seen.add(name)
            out.append((name, knode, vnode))
        return out

    def seq(self, node: Node, what: str) -> list[Node]:
        if isinstance(node, SequenceNode):
            return list(node.value)
        self.err(node, f"{what} must be a list, got {_type_name(node)}")
        return []

    # ----------------------------------------------------------- scalars

    def string(self, node: Node, what: str) -> str | None:
        """Any string-like scalar, taken from its source text (numbers stay as written)."""
        if isinstance(node, ScalarNode) and node.tag in (_STR, _INT, _TIMESTAMP):
            return str(node.value)
        if isinstance(node, ScalarNode) and node.tag == _FLOAT and node.style is None:
            return str(node.value)
        self.err(node, f"{what} must be a string, got {_type_name(node)}")
        return None

    def name(self, node: Node, what: str) -> str | None:
        s = self.string(node, what)
        if s is not None and not _NAME_RE.fullmatch(s):
            self.err(node, f"{what} {_show(s)} is not a valid name (letters, digits, _ . -)")
            return None
        return s

    def pattern(self, node: Node, what: str, rx: re.Pattern[str], kind: str) -> str | None:
        s = self.string(node, what)
        if s is not None and not rx.fullmatch(s):
            self.err(node, f"{what} {_show(s)} is not {kind}")
            return None
        return s

    def url(self, node: Node, what: str) -> str | None:
        """An http:// or https:// URL with a host (no other scheme: file://, ftp://…)."""
        s = self.string(node, what)
        if s is None:
            return None
        try:
            parts = urlsplit(s)
            parts.port  # noqa: B018  (raises on a port that is not a number)
        except ValueError:
            parts = None
        if (parts is None or parts.scheme.lower() not in ("http", "https")
                or not parts.hostname or not s.isprintable() or " " in s):
            self.err(node, f"{what} {_show(s)} is not an http:// or https:// URL with a host "
                     "(e.g. http://127.0.0.1:8080/api) / 须为 http:// 或 https:// 地址")
            return None
        return s

    def timezone(self, node: Node, what: str) -> str | None:
        s = self.string(node, what)
        if s is None:
            return None
        try:
            ZoneInfo(s)
        except (ZoneInfoNotFoundError, ValueError):
            self.err(node, f"{what}: unknown time zone '{s}' (e.g. Asia/Shanghai)")
            return None
        return s

    def number(self, node: Node, what: str) -> str | None:
        s = self.string(node, what)
        if s is not None and not _NUMBER_RE.fullmatch(s):
            self.err(node, f"{what} {_show(s)} is not a phone number (digits, * # +)")
            return None
        return s

    def digit(self, node: Node, what: str) -> str | None:
        s = self.string(node, what)
        if s is not None and s not in m.DTMF_DIGITS:
            self.err(node, f"{what} '{s}' is not a DTMF digit (0-9, *, #)")
            return None
        return s

    def integer(self, node: Node, what: str, lo: int | None = None, hi: int | None = None
                ) -> int | None:
        if not (isinstance(node, ScalarNode) and node.tag == _INT):
            self.err(node, f"{what} must be an integer, got {_type_name(node)}")
            return None
        try:
            value = int(str(node.value).replace("_", ""), 0)
        except ValueError:
            self.err(node, f"{what} must be a decimal integer, got '{node.value}'")
            return None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.err(node, f"{what} must be between {lo} and {hi}, got {value}")
            return None
        return value

    def seconds(self, node: Node, what: str) -> float | None:
        if not (isinstance(node, ScalarNode) and node.tag in (_INT, _FLOAT)):
            self.err(node, f"{what} must be a number of seconds, got {_type_name(node)}")
            return None
        try:
            value = float(str(node.value).replace("_", ""))
        except ValueError:
            self.err(node, f"{what} must be a number of seconds, got '{node.value}'")
            return None
        if not 0 < value <= 3600:
            self.err(node, f"{what} must be between 0 and 3600 seconds, got {node.value}")
            return None
        return value

    def boolean(self, node: Node, what: str) -> bool | None:
        if isinstance(node, ScalarNode) and node.tag == _BOOL:
            return str(node.value).lower() in ("true", "yes", "on", "y")
        self.err(node, f"{what} must be true or false, got {_type_name(node)}")
        return None

    def choice(self, node: Node, what: str, choices: tuple[str, ...]) -> str | None:
        s = self.string(node, what) if not (
            isinstance(node, ScalarNode) and node.tag == _BOOL
        ) else None
        if s is None:
            if isinstance(node, ScalarNode) and node.tag == _BOOL:
                self.err(node, f"{what} must be one of: {', '.join(choices)}, got "
                         f"{_type_name(node)} (quote it)")
            return None
        if s not in choices:
            self.err(node, f"{what} must be one of: {', '.join(choices)}, got '{s}'")
            return None
        return s

    def strings(self, node: Node, what: str, item: Callable[[Node, str], str | None] | None = None
                ) -> tuple[str, ...]:
        read = item or self.string
        if isinstance(node, ScalarNode) and node.tag != _NULL:
            one = read(node, what)
            return () if one is None else (one,)
        out = [read(n, f"{what} item") for n in self.seq(node, what)]
        return tuple(x for x in out if x is not None)

    def time(self, node: Node, what: str) -> tuple[dt.time, bool] | None:
        """HH:MM (24:00 allowed, as end of day) → (time, end_of_day)."""
        if isinstance(node, ScalarNode) and node.tag == _INT and ":" in str(node.value):
            text = str(node.value)  # unquoted 9:00 is a YAML 1.1 sexagesimal int
        else:
            s = self.string(node, what)
            if s is None:
                return None
            text = s
        match = _TIME_RE.fullmatch(text)
        if not match or (match.group(1) == "24" and match.group(2) != "00"):
            self.err(node, f"invalid time '{text}' for {what} (expected HH:MM, 00:00-24:00)")
            return None
        hour, minute = int(match.group(1)), int(match.group(2))
        if hour == 24:
            return dt.time(23, 59, 59, 999999), True
        return dt.time(hour, minute), False

    def date(self, node: Node, what: str) -> dt.date | None:
        text = str(node.value) if isinstance(node, ScalarNode) else ""
        try:
            if _DATE_RE.fullmatch(text):
                return dt.date.fromisoformat(text)
        except ValueError as exc:
            self.err(node, f"date '{text}' for {what} does not exist ({exc}) / 日期不存在")
            return None
        self.err(node, f"invalid date '{text}' for {what} (expected YYYY-MM-DD)")
        return None

    def datetime(self, node: Node, what: str) -> dt.datetime | None:
        text = str(node.value) if isinstance(node, ScalarNode) else ""
        try:
            return dt.datetime.fromisoformat(text)
        except ValueError:
            self.err(node, f"invalid date-time '{text}' for {what} (expected YYYY-MM-DD HH:MM)")
            return None

    def days(self, node: Node, what: str) -> frozenset[int] | None:
        """mon-fri, [mon, wed], [1, 2, 3], daily."""
        items: list[Node] = (
            [node] if isinstance(node, ScalarNode) else self.seq(node, what)
        )
        days: set[int] = set()
        for item in items:
            text = str(item.value).strip().lower() if isinstance(item, ScalarNode) else ""
            if text in ("daily", "all"):
                days.update(range(1, 8))
                continue
            parts = [p.strip() for p in text.split("-")]
            try:
                nums = [int(p) if p.isdigit() else _DAY_NAMES[p[:3]] for p in parts]
            except (KeyError, IndexError):
                nums = []
            if len(nums) == 1 and 1 <= nums[0] <= 7:
                days.add(nums[0])
            elif len(nums) == 2 and all(1 <= n <= 7 for n in nums) and nums[0] <= nums[1]:
                days.update(range(nums[0], nums[1] + 1))
            else:
                self.err(item, f"invalid days '{text}' for {what} "
                         "(expected mon..sun, 1..7, a range like mon-fri, or daily)")
                return None
        return frozenset(days)


# =========================================================================== sections


def _opt(r: _Reader, d: Mapping[str, Node], key: str, read: Callable[[Node, str], T | None],
         what: str, default: T) -> T:
    node = d.get(key)
    if node is None:
        return default
    value = read(node, f"'{key}' of {what}")
    return default if value is None else value


def _req(r: _Reader, d: Mapping[str, Node], key: str, read: Callable[[Node, str], T | None],
         what: str) -> T | None:
    node = d.get(key)
    if node is None:
        return None  # reported by mapping(required=...)
    return read(node, f"'{key}' of {what}")


def _settings(r: _Reader, node: Node) -> m.Settings:
    d = r.mapping(node, "settings", ("default_language", "general_queue", "dial_context",
                                     "timezone", "ticket_api", "recording_notice", "agi_host",
                                     "agi_port", "agi_backup_host", "agi_backup_port",
                                     "include_files"))
    if d is None:
        return m.Settings()
    api: m.TicketApi | None = None
    if "ticket_api" in d:
        a = r.mapping(d["ticket_api"], "settings.ticket_api", ("url", "timeout"), ("url",))
        if a is not None and "url" in a:
            url = r.url(a["url"], "'url' of settings.ticket_api")
            if url is not None:
                api = m.TicketApi(url, _opt(r, a, "timeout", r.seconds, "ticket_api", 2.0))
    agi_host = _opt(r, d, "agi_host", lambda n, w: r.pattern(n, w, _HOST_RE, _HOST_KIND),
                    "settings", "127.0.0.1")
    agi_port = _opt(r, d, "agi_port", lambda n, w: r.integer(n, w, 1, 65535), "settings",
                    4573)
    backup_host = _opt(r, d, "agi_backup_host",
                       lambda n, w: r.pattern(n, w, _HOST_RE, _HOST_KIND), "settings", "")
    backup_port: int | None = _opt(r, d, "agi_backup_port",
                                   lambda n, w: r.integer(n, w, 1, 65535), "settings", None)
    if backup_port is not None and not backup_host:
        r.err(d["agi_backup_port"], "'agi_backup_port' of settings needs 'agi_backup_host' "
              "/ 设置了备用 FastAGI 端口但没有备用主机")
    elif backup_host and (backup_host.lower(), backup_port or agi_port) == (
            agi_host.lower(), agi_port):
        r.err(d["agi_backup_host"], f"'agi_backup_host' of settings names the same FastAGI "
              f"server as agi_host ({agi_host}:{agi_port}): a backup must be another server "
              f"/ 备用 FastAGI 服务器与主服务器相同")
    return m.Settings(
        default_language=_opt(r, d, "default_language", r.name, "settings", "zh"),
        general_queue=_opt(r, d, "general_queue", r.name, "settings", "hotline"),
        dial_context=_opt(r, d, "dial_context", r.name, "settings", "outbound"),
        timezone=_opt(r, d, "timezone", r.timezone, "settings", "Asia/Shanghai"),
        ticket_api=api,
        record_notice=_opt(r, d, "recording_notice", r.boolean, "settings", True),
        agi_host=agi_host,
        agi_port=agi_port,
        agi_backup_host=backup_host,
        agi_backup_port=backup_port,
        include_files=_opt(r, d, "include_files", lambda n, w: r.strings(n, w, r.name),
                           "settings", ()),
    )


def _languages(r: _Reader, node: Node) -> dict[str, m.Language]:
    out: dict[str, m.Language] = {}
    for code, knode, vnode in r.named_mapping(node, "languages"):
        what = f"language '{code}'"
        if r.name(knode, "language code") is None:
            continue
        d = r.mapping(vnode, what, ("name", "channel_language", "fallback", "enabled"),
                      ("name",))
        if d is None:
            continue
        out[code] = m.Language(
            code=code,
            name=_opt(r, d, "name", r.string, what, code),
            channel_language=_opt(r, d, "channel_language", r.name, what, code),
            fallback=_opt(r, d, "fallback", lambda n, w: r.strings(n, w, r.name), what, ()),
            enabled=_opt(r, d, "enabled", r.boolean, what, True),
            where=r.where(knode),
        )
    return out


def _queues(r: _Reader, node: Node) -> dict[str, m.Queue]:
    out: dict[str, m.Queue] = {}
    strategies = ("ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "linear",
                  "wrandom", "rrordered")
    for name, knode, vnode in r.named_mapping(node, "queues"):
        what = f"queue '{name}'"
        if r.name(knode, "queue name") is None:
            continue
        d = r.mapping(vnode, what, ("label", "strategy", "timeout", "max_wait", "languages",
                                    "skills", "members", "wrapup", "hours"))
        if d is None:
            continue
        out[name] = m.Queue(
            name=name,
            label=_opt(r, d, "label", r.string, what, ""),
            strategy=_opt(r, d, "strategy", lambda n, w: r.choice(n, w, strategies), what,
                          "rrmemory"),
            timeout=_opt(r, d, "timeout", lambda n, w: r.integer(n, w, 1, 600), what, 15),
            max_wait=_opt(r, d, "max_wait", lambda n, w: r.integer(n, w, 1, 86400), what, 300),
            languages=_opt(r, d, "languages", lambda n, w: r.strings(n, w, r.name), what, ()),
            skills=_opt(r, d, "skills", lambda n, w: r.strings(n, w, r.name), what, ()),
            members=_opt(r, d, "members", lambda n, w: r.strings(
                n, w, lambda x, y: r.pattern(x, y, _MEMBER_RE, _MEMBER_KIND)),
                what, ()),
            wrapup=_opt(r, d, "wrapup", lambda n, w: r.integer(n, w, 0, 3600), what, 0),
            hours=_opt(r, d, "hours", r.name, what, None),
            where=r.where(knode),
        )
    return out


MAX_PAUSE_LABEL = 64
"""Longest pause-reason label (characters): it is Asterisk's PausedReason, shown on
every status line."""


def _pause_reasons(r: _Reader, node: Node) -> dict[str, m.PauseReason]:
    out: dict[str, m.PauseReason] = {}
    labels: dict[str, str] = {}
    for code, knode, vnode in r.named_mapping(node, "pause_reasons"):
        what = f"pause reason '{code}'"
        if r.name(knode, "pause reason code") is None:
            continue
        d = r.mapping(vnode, what, ("label",), ("label",))
        if d is None or "label" not in d:
            continue
        label = r.string(d["label"], f"'label' of {what}")
        if label is None:
            continue
        if (not label.strip() or len(label) > MAX_PAUSE_LABEL
                or any(ord(c) < 32 or c in "\x7f;|," for c in label)):
            # app_queue's persistent-member record (astdb) splits on ',' '|' and ';'
            r.err(d["label"], f"'label' of {what} {_show(label)} must be 1-{MAX_PAUSE_LABEL} "
                  "characters without control characters, ';', '|' or ',' / 暂停原因名称无效")
            continue
        if label in labels:
            r.err(d["label"], f"'label' of {what} is already the label of pause reason "
                  f"'{labels[label]}' / 暂停原因名称重复")
            continue
        labels[label] = code
        out[code] = m.PauseReason(code=code, label=label, where=r.where(knode))
    return out


# a number the directory dials as Local/<number>@<dial_context>: digits (an extension or
# a phone number without separators), an optional leading + and the DTMF keys * and #
_DIAL_RE = re.compile(r"\+?[0-9*#]{2,20}")
_DIAL_KIND = ("a dialable number (digits, * or #, an optional leading +, 2-20 characters, "
              "no spaces or dashes: 02012345678) / 号码不可拨打（只能包含数字、* 或 #，可带前缀 +，"
              "不能有空格或横线）")

_DIRECTORY_KEYS: Mapping[str, tuple[str, ...]] = {
    "department": ("label", "number", "level", "area", "parent", "hours", "fallback",
                   "fallback_queue", "announce"),
    "emergency": ("label", "number", "one_key", "announce"),
    "interpreter": ("label", "number", "language", "hours", "fallback", "fallback_queue",
                    "announce"),
    "partner": ("label", "number", "area", "hours", "fallback", "fallback_queue",
                "announce"),
}
_DIRECTORY_WHAT = {"department": "department", "emergency": "emergency service",
                   "interpreter": "interpreter desk", "partner": "partner hotline"}


def _fallback(r: _Reader, node: Node, what: str) -> m.Fallback | None:
    """``fallback: {queue: <queue>}`` or ``fallback: {entry: <directory id>}``."""
    d = r.mapping(node, what, ("queue", "entry"))
    if d is None:
        return None
    if len(d) != 1:
        r.err(node, f"{what} needs exactly one of 'queue' or 'entry' / 兜底须且只能指定 "
              "queue（队列）或 entry（目录条目）之一")
        return None
    kind, vnode = next(iter(d.items()))
    name = r.name(vnode, f"'{kind}' of {what}")
    return None if name is None else m.Fallback(cast(Any, kind), name, r.where(vnode))


def _directory(kind: str) -> Callable[[_Reader, Node], dict[str, m.Department]]:
    """The reader of one section of the directory (``departments:``, ``emergency:``,
    ``interpreters:``, ``partners:``)."""
    section = m.DIRECTORY_SECTIONS[kind]
    noun = _DIRECTORY_WHAT[kind]

    def read(r: _Reader, node: Node) -> dict[str, m.Department]:
        out: dict[str, m.Department] = {}
        required = ("number",) if kind == "emergency" else ("label", "number")
        for name, knode, vnode in r.named_mapping(node, section):
            what = f"{noun} '{name}'"
            if r.name(knode, f"{noun} id") is None:
                continue
            d = r.mapping(vnode, what, _DIRECTORY_KEYS[kind], required)
            if d is None:
                continue
            number = _req(r, d, "number", lambda n, w: r.pattern(n, w, _DIAL_RE, _DIAL_KIND),
                          what)
            if number is None:
                continue
            if kind == "emergency" and number not in m.EMERGENCY_NUMBERS:
                r.err(d["number"], f"'number' of {what} must be one of "
                      f"{', '.join(sorted(m.EMERGENCY_NUMBERS))}, got '{number}' / 紧急服务号码"
                      "只能是 110、119、120、122")
                continue
            fallback = _opt(r, d, "fallback", lambda n, w: _fallback(r, n, w), what, None)
            fallback_queue = _opt(r, d, "fallback_queue", r.name, what, None)
            if fallback is not None and fallback_queue is not None:
                r.err(d["fallback_queue"], f"{what} has both 'fallback' and 'fallback_queue' "
                      "(write fallback: {queue: …}) / 兜底重复设置")
                continue
            fallback_entry = None
            if fallback is not None:
                if fallback.kind == "queue":
                    fallback_queue = fallback.name
                else:
                    fallback_entry = fallback.name
            if kind == "interpreter" and "language" not in d:
                r.err(vnode, f"{what} is missing required key 'language' / 翻译坐席须指定语言")
                continue
            out[name] = m.Department(
                name=name,
                label=_opt(r, d, "label", r.string, what, name),
                number=number,
                level=cast(Any, _opt(r, d, "level", lambda n, w: r.choice(n, w, m.LEVELS),
                                     what, "city")),
                hours=_opt(r, d, "hours", r.name, what, None),
                fallback_queue=fallback_queue,
                where=r.where(knode),
                kind=cast(Any, kind),
                fallback_entry=fallback_entry,
                language=_opt(r, d, "language", r.name, what, None),
                one_key=_opt(r, d, "one_key", r.boolean, what, kind == "emergency"),
                area=_opt(r, d, "area", r.string, what, ""),
                parent=_opt(r, d, "parent", r.name, what, None),
                announce=_opt(r, d, "announce", r.name, what, None),
            )
        return out

    return read


_departments = _directory("department")


def _priority(r: _Reader, node: Node) -> list[m.PriorityRule]:
    out: list[m.PriorityRule] = []
    for item in r.seq(node, "priority"):
        d = r.mapping(item, "priority rule", ("name", "priority", "numbers", "prefixes",
                                              "open_ticket", "queue"), ("name", "priority"))
        if d is None:
            continue
        name = _req(r, d, "name", r.name, "priority rule")
        prio = _req(r, d, "priority", lambda n, w: r.integer(n, w, 0, 100), "priority rule")
        if name is None or prio is None:
            continue
        what = f"priority rule '{name}'"
        rule = m.PriorityRule(
            name=name,
            priority=prio,
            numbers=_opt(r, d, "numbers", lambda n, w: r.strings(n, w, r.number), what, ()),
            prefixes=_opt(r, d, "prefixes", lambda n, w: r.strings(n, w, r.number), what, ()),
            open_ticket=_opt(r, d, "open_ticket", r.boolean, what, False),
            queue=_opt(r, d, "queue", r.name, what, None),
            where=r.where(item),
        )
        if not (rule.numbers or rule.prefixes or rule.open_ticket):
            r.err(item, f"{what} matches nobody: give numbers, prefixes or open_ticket: true")
        out.append(rule)
    return out


def _window(r: _Reader, node: Node, what: str, need_days: bool) -> m.WeeklyWindow | None:
    keys = ("days", "from", "to") if need_days else ("from", "to")
    d = r.mapping(node, what, keys, keys)
    if d is None or any(k not in d for k in keys):
        return None
    days = r.days(d["days"], f"'days' of {what}") if need_days else frozenset(range(1, 8))
    start = r.time(d["from"], f"'from' of {what}")
    end = r.time(d["to"], f"'to' of {what}")
    if days is None or start is None or end is None:
        return None
    if start[1]:
        r.err(d["from"], f"invalid time '24:00' for 'from' of {what} (a window starts "
              "before 24:00)")
        return None
    if not end[1] and end[0] <= start[0]:
        r.err(d["to"], f"invalid time range for {what}: 'to' "
              f"{end[0].strftime('%H:%M')} is not after 'from' {start[0].strftime('%H:%M')}")
        return None
    return m.WeeklyWindow(days, start[0], end[0], end[1], where=r.where(node))


def _override(r: _Reader, node: Node, what: str) -> m.Override | None:
    d = r.mapping(node, what, ("date", "from", "until", "mode", "windows", "reason", "prompt",
                               "hours"), ("mode",))
    if d is None:
        return None
    if "date" in d:
        if "from" in d or "until" in d:
            r.err(node, f"{what}: give either 'date' or 'from'/'until', not both")
            return None
        start = end = r.date(d["date"], f"'date' of {what}")
    elif "from" in d and "until" in d:
        start = r.date(d["from"], f"'from' of {what}")
        end = r.date(d["until"], f"'until' of {what}")
    else:
        r.err(node, f"{what} needs 'date' or both 'from' and 'until'")
        return None
    mode = _req(r, d, "mode", lambda n, w: r.choice(n, w, ("open", "closed", "hours")), what)
    if start is None or end is None or mode is None:
        return None
    if end < start:
        r.err(d["until"], f"{what}: 'until' {end} is before 'from' {start}")
        return None
    windows: list[m.WeeklyWindow] = []
    if mode == "hours":
        if "windows" not in d:
            r.err(node, f"{what} with mode 'hours' needs 'windows'")
            return None
        for i, w in enumerate(r.seq(d["windows"], f"'windows' of {what}")):
            win = _window(r, w, f"window {i + 1} of {what}", need_days=False)
            if win is not None:
                windows.append(win)
    elif "windows" in d:
        r.err(d["windows"], f"{what}: 'windows' only goes with mode 'hours'")
    return m.Override(
        start=start,
        end=end,
        mode=cast(Any, mode),
        windows=tuple(windows),
        reason=_opt(r, d, "reason", r.string, what, ""),
        prompt=_opt(r, d, "prompt", r.name, what, None),
        hours=_opt(r, d, "hours", lambda n, w: r.strings(n, w, r.name), what, ()),
        where=r.where(node),
    )


def _hours(r: _Reader, node: Node) -> dict[str, m.Hours]:
    out: dict[str, m.Hours] = {}
    for name, knode, vnode in r.named_mapping(node, "hours"):
        what = f"hours '{name}'"
        if r.name(knode, "hours name") is None:
            continue
        d = r.mapping(vnode, what, ("weekly", "statutory_holidays", "workday_as",
                                    "always_open", "overrides"))
        if d is None:
            continue
        weekly: list[m.WeeklyWindow] = []
        if "weekly" in d:
            for i, w in enumerate(r.seq(d["weekly"], f"'weekly' of {what}")):
                win = _window(r, w, f"weekly window {i + 1} of {what}", need_days=True)
                if win is not None:
                    weekly.append(win)
        always = _opt(r, d, "always_open", r.boolean, what, False)
        if not weekly and not always and "weekly" not in d:
            r.err(vnode, f"{what} needs 'weekly' windows or 'always_open: true'")
        overrides = [
            o
            for i, n in enumerate(r.seq(d["overrides"], f"'overrides' of {what}"))
            if (o := _override(r, n, f"override {i + 1} of {what}")) is not None
        ] if "overrides" in d else []
        out[name] = m.Hours(
            name=name,
            weekly=tuple(weekly),
            statutory_holidays=cast(Any, _opt(
                r, d, "statutory_holidays",
                lambda n, w: r.choice(n, w, ("closed", "open", "ignore")), what, "closed")),
            workday_as=_opt(r, d, "workday_as", lambda n, w: r.integer(n, w, 1, 7), what, 1),
            always_open=always,
            overrides=tuple(overrides),
            where=r.where(knode),
        )
    return out


def _surge(r: _Reader, node: Node) -> m.Surge:
    d = r.mapping(node, "surge", ("active", "prompt", "from", "until", "offer_callback"))
    if d is None:
        return m.Surge()
    return m.Surge(
        active=_opt(r, d, "active", r.boolean, "surge", False),
        prompt=_opt(r, d, "prompt", r.name, "surge", "surge"),
        start=_opt(r, d, "from", r.datetime, "surge", None),
        end=_opt(r, d, "until", r.datetime, "surge", None),
        offer_callback=_opt(r, d, "offer_callback", r.boolean, "surge", True),
        where=r.where(node),
    )


_RULE_KEYS = ("record", "channels", "format", "level_dbfs")


def _level(r: _Reader, node: Node, what: str) -> float | None:
    lo, hi = m.RECORDING_LEVEL_RANGE
    if isinstance(node, ScalarNode) and node.tag in (_INT, _FLOAT):
        try:
            value = float(node.value)
        except ValueError:
            value = None
        if value is not None and lo <= value <= hi:
            return value
    r.err(node, f"{what} must be a number from {lo:g} to {hi:g} (dBFS), got "
          f"{_show(str(getattr(node, 'value', '')))} / 电平须在 {lo:g} 到 {hi:g} dBFS 之间")
    return None


def _recording_exception(r: _Reader, name: str, node: Node, what: str
                         ) -> m.RecordingException | None:
    d = r.mapping(node, what, _RULE_KEYS)
    if d is None:
        return None

    def get(key: str, read: Callable[[Node, str], T | None]) -> T | None:
        return None if key not in d else read(d[key], f"'{key}' of {what}")

    return m.RecordingException(
        name=name,
        record=get("record", r.boolean),
        channels=get("channels", lambda n, w: r.choice(n, w, m.RECORDING_CHANNELS)),
        format=get("format", lambda n, w: r.choice(n, w, m.RECORDING_FORMATS)),
        level_dbfs=get("level_dbfs", lambda n, w: _level(r, n, w)),
        where=r.where(node),
    )


def _recordings(r: _Reader, node: Node) -> m.Recordings:
    d = r.mapping(node, "recordings", ("default", "entries", "queues"))
    if d is None:
        return m.Recordings()
    default = m.RecordingRule()
    if "default" in d:
        exc = _recording_exception(r, "default", d["default"], "recordings.default")
        if exc is not None:
            default = exc.apply(default)
    found: dict[str, dict[str, m.RecordingException]] = {"entries": {}, "queues": {}}
    for kind, out in found.items():
        if kind not in d:
            continue
        for name, _knode, vnode in r.named_mapping(d[kind], f"recordings.{kind}"):
            exc = _recording_exception(r, name, vnode, f"recordings.{kind}.{name}")
            if exc is not None:
                out[name] = exc
    return m.Recordings(default=default, entries=MappingProxyType(found["entries"]),
                        queues=MappingProxyType(found["queues"]), where=r.where(node))


# --------------------------------------------------------------------------- steps


def _target(r: _Reader, node: Node, what: str) -> str | None:
    s = r.string(node, what)
    if s is None:
        return None
    if s.startswith("@") and s not in m.SPECIAL_TARGETS:
        r.err(node, f"unknown special target '{s}' for {what} "
              f"(expected a step id or one of: {', '.join(sorted(m.SPECIAL_TARGETS))})")
        return None
    return s


def _digit_map(r: _Reader, node: Node, what: str, value: Callable[[Node, str], str | None]
               ) -> dict[str, str]:
    out: dict[str, str] = {}
    for digit, knode, vnode in r.named_mapping(node, what):
        if r.digit(knode, f"key of {what}") is None:
            continue
        v = value(vnode, f"option '{digit}' of {what}")
        if v is not None:
            out[digit] = v
    return out


_COMMON = ("type",)
_STEP_KEYS: dict[str, tuple[str, ...]] = {
    "play": ("prompts", "next", "interruptible"),
    "menu": ("prompt", "options", "timeout", "retries", "invalid_prompt", "timeout_prompt",
             "repeat_digit", "on_fail"),
    "language": ("prompt", "options", "next", "timeout", "retries"),
    "queue": ("queue", "by_language", "priority", "skill", "prompt", "on_timeout"),
    "transfer": ("to", "department", "number", "prompt", "timeout", "on_fail"),
    "time": ("hours", "open", "closed", "holiday", "surge"),
    "set": ("name", "value", "next"),
    "subflow": ("flow", "next"),
    "callback": ("prompt", "confirm_prompt", "accept_digit", "timeout", "next", "after"),
    "ticket_status": ("next", "found_prompt", "none_prompt", "unavailable_prompt", "timeout"),
    "hangup": ("prompt", "survey"),
}
_STEP_REQUIRED: dict[str, tuple[str, ...]] = {
    "play": ("prompts", "next"),
    "menu": ("prompt", "options"),
    "language": ("prompt", "options", "next"),
    "queue": ("queue",),
    "transfer": ("to",),
    "time": ("hours", "open", "closed"),
    "set": ("name", "value", "next"),
    "subflow": ("flow", "next"),
    "callback": (),
    "ticket_status": ("next",),
    "hangup": (),
}


def _step(r: _Reader, sid: str, node: Node, what: str, w: m.Where) -> m.Step | None:
    if not isinstance(node, MappingNode):
        r.err(node, f"{what} must be a mapping, got {_type_name(node)}")
        return None
    kind: str | None = None
    for knode, vnode in node.value:
        if isinstance(knode, ScalarNode) and knode.value == "type":
            kind = r.choice(vnode, f"'type' of {what}", m.STEP_KINDS)
            if kind is None:
                return None
    if kind is None:
        r.err(node, f"{what} is missing required key 'type' "
              f"(one of: {', '.join(m.STEP_KINDS)})")
        return None
    what = f"{kind} step '{sid}'"
    d = r.mapping(node, what, _COMMON + _STEP_KEYS[kind], _STEP_REQUIRED[kind])
    if d is None or any(k not in d for k in _STEP_REQUIRED[kind]):
        return None
    tgt = lambda n, x: _target(r, n, x)  # noqa: E731
    prompt = r.name
    secs = r.seconds

    def get(key: str, read: Callable[[Node, str], T | None], default: T) -> T:
        return _opt(r, d, key, read, what, default)

    def need(key: str, read: Callable[[Node, str], T | None]) -> T | None:
        return _req(r, d, key, read, what)

    if kind == "play":
        prompts = need("prompts", lambda n, x: r.strings(n, x, r.name))
        nxt = need("next", tgt)
        if not prompts or nxt is None:
            return None
        return m.PlayStep(sid, prompts, nxt, get("interruptible", r.boolean, True), where=w)
    if kind == "menu":
        p = need("prompt", prompt)
        options = _digit_map(r, d["options"], f"'options' of {what}", tgt)
        if p is None:
            return None
        if not options:
            r.err(d["options"], f"{what} has no options")
            return None
        return m.MenuStep(
            sid, p, MappingProxyType(options),
            timeout=get("timeout", secs, 5.0),
            retries=get("retries", lambda n, x: r.integer(n, x, 0, 9), 2),
            invalid_prompt=get("invalid_prompt", prompt, "invalid"),
            timeout_prompt=get("timeout_prompt", prompt, "timeout"),
            repeat_digit=get("repeat_digit", r.digit, cast(str | None, "*")),
            on_fail=get("on_fail", tgt, m.OPERATOR),
            where=w,
        )
    if kind == "language":
        p = need("prompt", prompt)
        options = _digit_map(r, d["options"], f"'options' of {what}", r.name)
        nxt = need("next", tgt)
        if p is None or nxt is None or not options:
            return None
        return m.LanguageStep(
            sid, p, MappingProxyType(options), nxt,
            timeout=get("timeout", secs, 4.0),
            retries=get("retries", lambda n, x: r.integer(n, x, 0, 9), 1),
            where=w,
        )
    if kind == "queue":
        q = need("queue", r.name)
        if q is None:
            return None
        by_lang: dict[str, str] = {}
        if "by_language" in d:
            for code, _k, v in r.named_mapping(d["by_language"], f"'by_language' of {what}"):
                qn = r.name(v, f"queue for language '{code}' in {what}")
                if qn is not None:
                    by_lang[code] = qn
        return m.QueueStep(
            sid, q, MappingProxyType(by_lang),
            priority=get("priority", lambda n, x: r.integer(n, x, 0, 100), 0),
            skill=get("skill", r.name, None),
            prompt=get("prompt", prompt, cast(str | None, "please-hold")),
            on_timeout=get("on_timeout", tgt, None),
            where=w,
        )
    if kind == "transfer":
        to = need("to", lambda n, x: r.choice(n, x, ("department", "external",
                                                      "emergency")))
        if to is None:
            return None
        dept = get("department", r.name, None)
        number = get("number", r.number, None)
        if to == "department" and dept is None:
            r.err(node, f"{what} to a department needs 'department'")
            return None
        if to != "department" and number is None:
            r.err(node, f"{what} to {to} needs 'number'")
            return None
        if to == "emergency" and number not in m.EMERGENCY_NUMBERS:
            r.err(d["number"], f"{what}: emergency number must be one of "
                  f"{', '.join(sorted(m.EMERGENCY_NUMBERS))}, got '{number}'")
            return None
        default_prompt = f"transfer-{number}" if to == "emergency" else "transfer-dept"
        return m.TransferStep(
            sid, cast(Any, to), department=dept, number=number,
            prompt=get("prompt", prompt, cast(str | None, default_prompt)),
            timeout=get("timeout", lambda n, x: r.integer(n, x, 1, 600), 60),
            on_fail=get("on_fail", tgt, m.OPERATOR),
            where=w,
        )
    if kind == "time":
        hours = need("hours", r.name)
        op, cl = need("open", tgt), need("closed", tgt)
        if hours is None or op is None or cl is None:
            return None
        return m.TimeStep(sid, hours, op, cl, holiday=get("holiday", tgt, None),
                          surge=get("surge", tgt, None), where=w)
    if kind == "set":
        name, value, nxt = need("name", r.name), need("value", r.string), need("next", tgt)
        if name is None or value is None or nxt is None:
            return None
        return m.SetStep(sid, name, value, nxt, where=w)
    if kind == "subflow":
        flow, nxt = need("flow", r.name), need("next", tgt)
        if flow is None or nxt is None:
            return None
        return m.SubflowStep(sid, flow, nxt, where=w)
    if kind == "callback":
        return m.CallbackStep(
            sid,
            prompt=get("prompt", prompt, "callback-offer"),
            confirm_prompt=get("confirm_prompt", prompt, "callback-confirm"),
            accept_digit=get("accept_digit", r.digit, "1"),
            timeout=get("timeout", secs, 5.0),
            next=get("next", tgt, m.OPERATOR),
            after=get("after", tgt, m.HANGUP),
            where=w,
        )
    if kind == "ticket_status":
        nxt = need("next", tgt)
        if nxt is None:
            return None
        return m.TicketStatusStep(
            sid, nxt,
            found_prompt=get("found_prompt", prompt, "ticket-status-found"),
            none_prompt=get("none_prompt", prompt, "ticket-status-none"),
            unavailable_prompt=get("unavailable_prompt", prompt,
                                   "ticket-status-unavailable"),
            timeout=get("timeout", secs, 2.0),
            where=w,
        )
    assert kind == "hangup"
    return m.HangupStep(sid, prompt=get("prompt", prompt, cast(str | None, "goodbye")),
                        survey=get("survey", r.boolean, False), where=w)


def _steps(r: _Reader, node: Node, what: str) -> dict[str, m.Step]:
    out: dict[str, m.Step] = {}
    for sid, knode, vnode in r.named_mapping(node, f"'steps' of {what}"):
        if sid.startswith("@"):
            r.err(knode, f"step id '{sid}' may not start with '@' (reserved for special "
                  "targets)")
            continue
        if r.name(knode, "step id") is None:
            continue
        step = _step(r, sid, vnode, f"step '{sid}' of {what}", r.where(knode))
        if step is not None:
            out[sid] = step
    return out


def _flows(r: _Reader, node: Node) -> dict[str, m.Flow]:
    out: dict[str, m.Flow] = {}
    for name, knode, vnode in r.named_mapping(node, "flows"):
        what = f"flow '{name}'"
        if r.name(knode, "flow name") is None:
            continue
        d = r.mapping(vnode, what, ("start", "steps"), ("start", "steps"))
        if d is None or "start" not in d or "steps" not in d:
            continue
        start = r.name(d["start"], f"'start' of {what}")
        steps = _steps(r, d["steps"], what)
        if start is None:
            continue
        out[name] = m.Flow(name, start, MappingProxyType(steps), where=r.where(knode))
    return out


def _entries(r: _Reader, node: Node, settings: m.Settings) -> dict[str, m.Entry]:
    out: dict[str, m.Entry] = {}
    for number, knode, vnode in r.named_mapping(node, "entries"):
        what = f"entry {number}"
        if r.number(knode, "entry number") is None:
            continue
        d = r.mapping(vnode, what, ("name", "language", "zero_navigation", "start", "steps",
                                    "operator", "barge_in", "context", "shortcuts"),
                      ("name", "start", "steps", "operator"))
        if d is None or any(k not in d for k in ("name", "start", "steps", "operator")):
            continue
        od = r.mapping(d["operator"], f"'operator' of {what}",
                       ("queue", "digit", "priority", "enabled"), ("queue",))
        if od is None or "queue" not in od:
            continue
        oq = r.name(od["queue"], f"'queue' of the operator of {what}")
        if oq is None:
            continue
        operator = m.Operator(
            queue=oq,
            digit=_opt(r, od, "digit", r.digit, what, "0"),
            priority=_opt(r, od, "priority", lambda n, w: r.integer(n, w, 0, 100), what, 0),
            enabled=_opt(r, od, "enabled", r.boolean, what, True),
            where=r.where(d["operator"]),
        )
        barge = (
            _digit_map(r, d["barge_in"], f"'barge_in' of {what}", r.name)
            if "barge_in" in d else {}
        )
        shortcuts = (
            _digit_map(r, d["shortcuts"], f"'shortcuts' of {what}",
                       lambda n, x: _target(r, n, x))
            if "shortcuts" in d else {}
        )
        start = r.name(d["start"], f"'start' of {what}")
        steps = _steps(r, d["steps"], what)
        name = r.string(d["name"], f"'name' of {what}")
        if start is None or name is None:
            continue
        out[number] = m.Entry(
            number=number,
            name=name,
            language=_opt(r, d, "language", r.name, what, settings.default_language),
            zero_navigation=_opt(r, d, "zero_navigation", r.boolean, what, False),
            start=start,
            steps=MappingProxyType(steps),
            operator=operator,
            barge_in=MappingProxyType(barge),
            context=_opt(r, d, "context", r.name, what, "from-pstn"),
            shortcuts=MappingProxyType(shortcuts),
            where=r.where(knode),
        )
    return out


def _calendar_days(r: _Reader, node: Node, what: str) -> tuple[m.CalendarDay, ...]:
    """A list of dates and ``{from: DATE, to: DATE}`` ranges (inclusive)."""
    out: list[m.CalendarDay] = []
    for i, item in enumerate(r.seq(node, what)):
        label = f"item {i + 1} of {what}"
        if isinstance(item, MappingNode):
            d = r.mapping(item, label, ("from", "to"), ("from", "to"))
            if d is None or "from" not in d or "to" not in d:
                continue
            start = r.date(d["from"], f"'from' of {label}")
            end = r.date(d["to"], f"'to' of {label}")
            if start is None or end is None:
                continue
            if end < start:
                r.err(d["to"], f"{label}: 'to' {end} is before 'from' {start}")
                continue
            if (end - start).days > 31:
                r.err(d["to"], f"{label}: {start}..{end} is longer than 31 days")
                continue
            out.extend(m.CalendarDay(start + dt.timedelta(days=n), r.where(item))
                       for n in range((end - start).days + 1))
        else:
            day = r.date(item, label)
            if day is not None:
                out.append(m.CalendarDay(day, r.where(item)))
    return tuple(out)


def _statutory_holiday(r: _Reader, node: Node, what: str) -> m.StatutoryHoliday | None:
    d = r.mapping(node, what, ("name", "days_off", "workdays"), ("name", "days_off"))
    if d is None or "name" not in d or "days_off" not in d:
        return None
    names = r.mapping(d["name"], f"'name' of {what}", ("zh", "en"), ("zh",))
    if names is None or "zh" not in names:
        return None
    zh = r.string(names["zh"], f"'zh' (Chinese name) of {what}")
    if zh is not None and not _CJK_RE.search(zh):
        r.err(names["zh"], f"'zh' of {what} must be the holiday's Chinese name (e.g. 春节), "
              f"got '{zh}' / 节日名称须为中文")
        zh = None
    en = _opt(r, names, "en", r.string, f"'name' of {what}", "")
    days_off = _calendar_days(r, d["days_off"], f"'days_off' of {what}")
    if not days_off and isinstance(d["days_off"], SequenceNode) and not d["days_off"].value:
        r.err(d["days_off"], f"{what} has no days off")
    workdays = (_calendar_days(r, d["workdays"], f"'workdays' of {what}")
                if "workdays" in d else ())
    if zh is None:
        return None
    return m.StatutoryHoliday(zh.strip(), en.strip(), days_off, workdays, r.where(node))


def _calendar(r: _Reader, node: Node) -> dict[str, m.YearArrangement]:
    """``calendar: {YYYY: {notice, holidays: [{name: {zh, en}, days_off, workdays}]}}``."""
    out: dict[str, m.YearArrangement] = {}
    for name, knode, vnode in r.named_mapping(node, "calendar"):
        year = r.integer(knode, "calendar year", 2000, 2100)
        if year is None:
            continue
        what = f"calendar {year}"
        d = r.mapping(vnode, what, ("notice", "holidays"), ("notice", "holidays"))
        if d is None:
            continue
        notice = _req(r, d, "notice", r.string, what)
        if notice is not None and not notice.strip():
            r.err(d["notice"], f"'notice' of {what} is empty: name the State Council notice "
                  "(文号 or title) the dates come from")
            notice = None
        holidays = [
            h for i, n in enumerate(r.seq(d["holidays"], f"'holidays' of {what}"))
            if (h := _statutory_holiday(r, n, f"holiday {i + 1} of {what}")) is not None
        ] if "holidays" in d else []
        if notice is None or "holidays" not in d:
            continue
        out[name] = m.YearArrangement(year, notice.strip(), tuple(holidays), r.where(knode))
    return out


# =========================================================================== files


@dataclass
class _Parts:
    settings: tuple[m.Settings, Node] | None = None
    surge: tuple[m.Surge, Node] | None = None
    recordings: tuple[m.Recordings, Node] | None = None
    languages: dict[str, m.Language] = field(default_factory=dict)
    queues: dict[str, m.Queue] = field(default_factory=dict)
    departments: dict[str, m.Department] = field(default_factory=dict)
    hours: dict[str, m.Hours] = field(default_factory=dict)
    flows: dict[str, m.Flow] = field(default_factory=dict)
    entries: dict[str, m.Entry] = field(default_factory=dict)
    priority: list[m.PriorityRule] = field(default_factory=list)
    overrides: list[m.Override] = field(default_factory=list)
    calendar: dict[str, m.YearArrangement] = field(default_factory=dict)
    pause_reasons: dict[str, m.PauseReason] = field(default_factory=dict)
    emergency: dict[str, m.Department] = field(default_factory=dict)
    interpreters: dict[str, m.Department] = field(default_factory=dict)
    partners: dict[str, m.Department] = field(default_factory=dict)


MAX_FILE_BYTES = 1 << 20
"""Largest definition file read (1 MiB; the shipped files are a few kB)."""
MAX_TOTAL_BYTES = 8 << 20
"""Largest definition directory (all its *.yaml files together)."""
MAX_DEPTH = 64
"""Deepest nesting of YAML lists and mappings (the schema needs about 8)."""
MAX_NODES = 200_000
"""Most YAML nodes in one file, counting each alias as a copy of what it names: a small
file of aliases of aliases ("billion laughs") would otherwise expand to gigabytes."""


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.0f} kB"


class _TooBig(Exception):
    """A composing limit was hit at ``mark``."""

    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader's composer with limits: nesting depth (the composer recurses, so
    ``[`` × 10,000 would end in RecursionError) and the node count with aliases
    expanded (an alias costs the size of the node it names, counted as it is composed,
    so an alias bomb stops at the alias that crosses the limit, before anyone walks it)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._sizes: dict[int, int] = {}  # id(anchored node) -> its expanded size

    def _count(self, n: int, mark: Any) -> None:
        self._nodes += n
        if self._nodes > MAX_NODES:
            raise _TooBig(mark, f"more than {MAX_NODES:,} YAML nodes with aliases expanded "
                          "(an alias bomb?): simplify the file / YAML 节点（含别名展开）超过 "
                          f"{MAX_NODES:,} 个上限")

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            named = self.anchors.get(str(event.anchor))
            if named is not None:
                size = self._sizes.get(id(named))
                if size is None:
                    raise _TooBig(event.start_mark, f"alias *{event.anchor} is used inside "
                                  "its own anchor (a recursive structure) / 别名递归引用自身")
                self._count(size, event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _TooBig(event.start_mark, f"nested more than {MAX_DEPTH} levels deep / "
                          f"嵌套超过 {MAX_DEPTH} 层")
        before = self._nodes
        self._count(1, event.start_mark)
        node = super().compose_node(parent, index)
        self._depth -= 1
        if getattr(event, "anchor", None) is not None and node is not None:
            self._sizes[id(node)] = self._nodes - before
        return node


def _read_capped(path: Path, display: str, problems: list[Problem]) -> str | None:
    """The file's text, or None (with a problem) when it cannot be read or is larger than
    :data:`MAX_FILE_BYTES` — refused from its size, never read whole."""
    where = m.Where(display, 1, 1)
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            data = fh.read(MAX_FILE_BYTES + 1) if size <= MAX_FILE_BYTES else b""
        if size > MAX_FILE_BYTES or len(data) > MAX_FILE_BYTES:
            problems.append(Problem(where, f"file is {max(size, len(data)):,} bytes, more than "
                                    f"the {_mib(MAX_FILE_BYTES)} limit: not read (split it "
                                    f"into several files) / 文件超过 {_mib(MAX_FILE_BYTES)} "
                                    "上限，未读取"))
            return None
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(where, f"cannot read file: {exc} / 无法读取文件"))
        return None


def compose_file(path: Path, display: str, problems: list[Problem]) -> Node | None:
    """Compose one YAML file into its node tree; syntax errors and exceeded limits
    (size, depth, alias expansion) become problems, never exceptions."""
    text = _read_capped(path, display, problems)
    if text is None:
        return None
    try:
        node = yaml.compose(text, Loader=_BoundedLoader)
    except _TooBig as exc:
        mark = exc.mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problems.append(Problem(m.Where(display, line, col), f"YAML too large: {exc.message}"))
        return None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = str(exc.problem or "invalid YAML")
        if exc.context:
            what += f" ({exc.context})"
        problems.append(Problem(m.Where(display, line, col), f"YAML syntax error: {what}"))
        return None
    except yaml.YAMLError as exc:
        problems.append(Problem(m.Where(display, 1, 1), f"YAML error: {exc}"))
        return None
    except (RecursionError, MemoryError) as exc:  # a limit this loader does not know yet
        problems.append(Problem(m.Where(display, 1, 1), f"YAML too large or too deeply "
                                f"nested to read ({type(exc).__name__}) / 文件过大或嵌套过深"))
        return None
    if node is None:
        problems.append(Problem(m.Where(display, 1, 1), "file is empty (expected version: 1)"))
    return node


def _merge(r: _Reader, into: dict[str, T], new: dict[str, T], what: str,
           where_of: Callable[[T], m.Where]) -> None:
    for key, value in new.items():
        if key in into:
            first = where_of(into[key])
            r.problems.append(Problem(where_of(value), f"{what} '{key}' is already defined at "
                                      f"{first}"))
            continue
        into[key] = value


def _read_file(r: _Reader, root: Node, parts: _Parts) -> None:
    d = r.mapping(root, "the top level", _TOP_KEYS, ("version",))
    if d is None:
        return
    if "version" in d:
        v = r.integer(d["version"], "'version'")
        if v is not None and v != m.SCHEMA_VERSION:
            r.err(d["version"], f"unsupported version {v} (this server reads version "
                  f"{m.SCHEMA_VERSION})")
            return
    if "settings" in d:
        if parts.settings is not None:
            first = r.where(parts.settings[1])
            r.err(d["settings"], f"'settings' is already defined at {first}")
        else:
            parts.settings = (_settings(r, d["settings"]), d["settings"])
    if "surge" in d:
        if parts.surge is not None:
            r.err(d["surge"], f"'surge' is already defined at {r.where(parts.surge[1])}")
        else:
            parts.surge = (_surge(r, d["surge"]), d["surge"])
    if "recordings" in d:
        if parts.recordings is not None:
            r.err(d["recordings"], "'recordings' is already defined at "
                  f"{r.where(parts.recordings[1])}")
        else:
            parts.recordings = (_recordings(r, d["recordings"]), d["recordings"])
    settings = parts.settings[0] if parts.settings else m.Settings()

    def w(x: Any) -> m.Where:
        return cast(m.Where, x.where)

    for key, reader, target, label in (
        ("languages", _languages, parts.languages, "language"),
        ("queues", _queues, parts.queues, "queue"),
        ("departments", _departments, parts.departments, "department"),
        ("hours", _hours, parts.hours, "hours"),
        ("calendar", _calendar, parts.calendar, "calendar year"),
        ("flows", _flows, parts.flows, "flow"),
        ("pause_reasons", _pause_reasons, parts.pause_reasons, "pause reason"),
        ("emergency", _directory("emergency"), parts.emergency, "emergency service"),
        ("interpreters", _directory("interpreter"), parts.interpreters, "interpreter desk"),
        ("partners", _directory("partner"), parts.partners, "partner hotline"),
    ):
        if key in d:
            _merge(r, cast(dict[str, Any], target), cast(Any, reader)(r, d[key]), label, w)
    if "entries" in d:
        _merge(r, cast(dict[str, Any], parts.entries), _entries(r, d["entries"], settings),
               "entry", w)
    if "priority" in d:
        parts.priority.extend(_priority(r, d["priority"]))
    if "overrides" in d:
        parts.overrides.extend(
            o for i, n in enumerate(r.seq(d["overrides"], "'overrides'"))
            if (o := _override(r, n, f"override {i + 1}")) is not None
        )


def definition_files(directory: Path) -> list[Path]:
    """The files a definition directory is made of: *.yaml and *.yml, sorted."""
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.suffix in (".yaml", ".yml") and not p.name.startswith("."))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # reported when the file is read


def definition_digest(directory: Path) -> str:
    """sha256 (hex) over the definition files' names and bytes — the version hashes of
    render and the runtime.  A file larger than :data:`MAX_FILE_BYTES` is not read (it is
    refused anyway): its size and modification time stand for its bytes."""
    h = hashlib.sha256()
    for path in definition_files(directory):
        st = path.stat()
        if st.st_size > MAX_FILE_BYTES:
            h.update(f"{path.name}\0oversize {st.st_size} {st.st_mtime_ns}\0".encode())
            continue
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
        h.update(path.name.encode() + b"\0" + data + b"\0")
    return h.hexdigest()


def parse_definition(directory: Path, display_root: Path | None = None
                     ) -> tuple[m.Definition | None, list[Problem]]:
    """Parse without raising: (definition or None when structurally broken, problems)."""
    directory = Path(directory)
    problems: list[Problem] = []
    if not directory.is_dir():
        return None, [Problem(m.Where(str(directory), 1, 1), "not a directory")]
    files = definition_files(directory)
    if not files:
        return None, [Problem(m.Where(str(directory), 1, 1),
                              "no dialplan files (*.yaml) in this directory")]
    # files over the per-file limit get their own error (they are never read)
    total = sum(size for p in files if (size := _size(p)) <= MAX_FILE_BYTES)
    if total > MAX_TOTAL_BYTES:
        return None, [Problem(m.Where(_display(directory, display_root), 1, 1),
                              f"the definition files are {_mib(total)} together, more than the "
                              f"{_mib(MAX_TOTAL_BYTES)} limit: not read / 定义文件总大小超过 "
                              f"{_mib(MAX_TOTAL_BYTES)} 上限，未读取")]
    parts = _Parts()
    shown: list[str] = []
    for path in files:
        display = _display(path, display_root)
        shown.append(display)
        r = _Reader(display)
        root = compose_file(path, display, problems)
        if root is not None:
            _read_file(r, root, parts)
        problems.extend(r.problems)
    settings = parts.settings[0] if parts.settings else m.Settings()
    definition = m.Definition(
        version=m.SCHEMA_VERSION,
        settings=settings,
        languages=MappingProxyType(parts.languages),
        queues=MappingProxyType(parts.queues),
        departments=MappingProxyType(parts.departments),
        priority=tuple(parts.priority),
        hours=MappingProxyType(parts.hours),
        overrides=tuple(parts.overrides),
        surge=parts.surge[0] if parts.surge else m.Surge(),
        flows=MappingProxyType(parts.flows),
        entries=MappingProxyType(parts.entries),
        files=tuple(shown),
        calendar=m.Calendar(MappingProxyType(
            {a.year: a for a in sorted(parts.calendar.values(), key=lambda a: a.year)})),
        pause_reasons=MappingProxyType(parts.pause_reasons),
        recordings=parts.recordings[0] if parts.recordings else m.Recordings(),
        emergency=MappingProxyType(parts.emergency),
        interpreters=MappingProxyType(parts.interpreters),
        partners=MappingProxyType(parts.partners),
    )
    errors = [p for p in problems if p.severity == "error"]
    return (None if errors else definition), problems


def _display(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return str(path)


def sort_problems(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.where.file, p.where.line, p.where.col, p.message))


def load_definition(directory: str | Path, *, check: bool = True,
                    display_root: Path | None = None) -> m.Definition:
    """Load and (with ``check``) fully validate a definition directory.

    Raises :class:`DialplanError` with every error found (sorted by file and line).
    ``check=False`` stops after structural parsing (cross-references unchecked).
    """
    definition, problems = parse_definition(Path(directory), display_root)
    errors = [p for p in problems if p.severity == "error"]
    if definition is None or errors:
        raise DialplanError(sort_problems(errors))
    if check:
        from ivr.dialplan.validate import check_definition

        errors = [p for p in check_definition(definition) if p.severity == "error"]
        if errors:
            raise DialplanError(sort_problems(errors))
    return definition

