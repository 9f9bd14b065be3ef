"""``queues.conf`` on top of :mod:`ivr.asterisk.conf`, following ``apps/app_queue.c``.

* ``[general]`` holds app_queue's global options (``persistentmembers``, ``shared_lastcall``,
  ...), not per-queue defaults: that is how Asterisk reads it.  :func:`parse_queues_general`
  returns it.  Per-queue defaults are app_queue's own (``init_queue``): strategy ringall,
  timeout 15, retry 5, wrapuptime 0, ringinuse yes, maxlen 0, weight 0, servicelevel 0,
  joinempty/leavewhenempty empty (no restriction), setqueuevar/setinterfacevar/
  setqueueentryvar no.
* Templates (``[tpl](!)``) are not queues; ``[q](tpl)`` inherits the template's items.
* ``member => interface[,penalty[,membername[,state_interface[,ringinuse[,wrapuptime
  [,paused]]]]]]`` split like ``AST_STANDARD_APP_ARGS``.

Bad values (unknown strategy, non-integer timeout, empty member) raise
:class:`ConfSyntaxError` pointing at the line (Asterisk would warn and fall back).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ivr.asterisk.appargs import split_app_args
from ivr.asterisk.conf import Category, Item, resolve_items
from ivr.asterisk.errors import ConfSyntaxError

__all__ = ["STRATEGIES", "QueueConfig", "StaticMember", "parse_queues", "parse_queues_general"]

STRATEGIES = frozenset(
    {
        "ringall",
        "leastrecent",
        "fewestcalls",
        "random",
        "rrmemory",
        "rrordered",
        "linear",
        "wrandom",
    }
)
_STRATEGY_ALIASES = {"roundrobin": "rrmemory"}  # app_queue accepts it with a deprecation warning

_TRUE = {"yes", "true", "y", "t", "1", "on"}
_FALSE = {"no", "false", "n", "f", "0", "off"}


@dataclass(frozen=True, slots=True)
class StaticMember:
    interface: str
    penalty: int = 0
    membername: str = ""
    state_interface: str = ""
    ringinuse: bool | None = None  # None: the queue's ringinuse
    wrapuptime: int | None = None
    paused: bool = False


@dataclass(slots=True)
class QueueConfig:
    name: str
    strategy: str = "ringall"
    timeout: int = 15
    retry: int = 5
    wrapuptime: int = 0
    joinempty: str = ""
    leavewhenempty: str = ""
    ringinuse: bool = True
    maxlen: int = 0
    weight: int = 0
    servicelevel: int = 0
    # app_queue sets QUEUE* (set_queue_variables), MEMBER* and QEHOLDTIME/QEORIGINALPOS
    # channel variables only when these say so (init_queue: all off)
    setqueuevar: bool = False
    setinterfacevar: bool = False
    setqueueentryvar: bool = False
    members: list[StaticMember] = field(default_factory=list)
    raw: dict[str, str] = field(default_factory=dict)
    file: str = "<string>"
    line: int = 0


def _bool(item: Item) -> bool:
    v = item.value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfSyntaxError(
        item.file, item.line, item.col, f"{item.key}: expected yes/no, got {item.value!r}"
    )


def _int(item: Item, text: str | None = None, *, minimum: int = 0) -> int:
    t = (item.value if text is None else text).strip()
    try:
        n = int(t)
    except ValueError:
        raise ConfSyntaxError(
            item.file, item.line, item.col, f"{item.key}: expected an integer, got {t!r}"
        ) from None
    if n < minimum:
        raise ConfSyntaxError(
            item.file, item.line, item.col, f"{item.key}: must be >= {minimum}, got {n}"
        )
    return n


def _member(item: Item) -> StaticMember:
    if not item.value.strip():
        raise ConfSyntaxError(item.file, item.line, item.col, "empty queue member definition")
    args = split_app_args(item.value) + [""] * 7
    interface = args[0].strip()
    if not interface:
        raise ConfSyntaxError(item.file, item.line, item.col, "queue member has no interface")
    penalty = max(_int(item, args[1], minimum=-(2**31)), 0) if args[1].strip() else 0
    ringinuse: bool | None = None
    if args[4].strip():
        ringinuse = _bool(Item("member ringinuse", "=", args[4], item.file, item.line, item.col))
    wrapuptime = _int(item, args[5]) if args[5].strip() else None
    paused = False
    if args[6].strip():
        paused = _bool(Item("member paused", "=", args[6], item.file, item.line, item.col))
    return StaticMember(
        interface=interface,
        penalty=penalty,
        membername=args[2].strip() or interface,
        state_interface=args[3].strip() or interface,
        ringinuse=ringinuse,
        wrapuptime=wrapuptime,
        paused=paused,
    )


def parse_queues_general(categories: Sequence[Category]) -> dict[str, str]:
    """The ``[general]`` options (global to app_queue)."""
    out: dict[str, str] = {}
    for cat in categories:
        if cat.name == "general" and not cat.is_template:
            out.update((i.key, i.value) for i in resolve_items(categories, cat))
    return out


def parse_queues(categories: Sequence[Category]) -> dict[str, QueueConfig]:
    """Queues by name, in file order.  Raises :class:`ConfSyntaxError` on bad values."""
    queues: dict[str, QueueConfig] = {}
    for cat in categories:
        if cat.is_template or cat.name == "general":
            continue
        q = QueueConfig(cat.name, file=cat.file, line=cat.line)
        for item in resolve_items(categories, cat):
            key = item.key.strip().lower()
            if key == "member":
                q.members.append(_member(item))
                continue
            q.raw[key] = item.value
            if key == "strategy":
                s = item.value.strip().lower()
                s = _STRATEGY_ALIASES.get(s, s)
                if s not in STRATEGIES:
                    raise ConfSyntaxError(
                        item.file,
                        item.line,
                        item.col,
                        f"unknown queue strategy {item.value!r} for [{cat.name}] "
                        f"(expected one of {', '.join(sorted(STRATEGIES))})",
                    )
                q.strategy = s
            elif key == "timeout":
                q.timeout = _int(item)
            elif key == "retry":
                q.retry = _int(item)
            elif key == "wrapuptime":
                q.wrapuptime = _int(item)
            elif key == "maxlen":
                q.maxlen = _int(item)
            elif key == "weight":
                q.weight = _int(item)
            elif key == "servicelevel":
                q.servicelevel = _int(item)
            elif key == "ringinuse":
                q.ringinuse = _bool(item)
            elif key in ("setqueuevar", "setinterfacevar", "setqueueentryvar"):
                setattr(q, key, _bool(item))
            elif key == "joinempty":
                q.joinempty = item.value.strip().lower()
            elif key == "leavewhenempty":
                q.leavewhenempty = item.value.strip().lower()
        queues[cat.name] = q
    return queues
