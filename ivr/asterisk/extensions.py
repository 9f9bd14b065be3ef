"""The dialplan (``extensions.conf``) on top of :mod:`ivr.asterisk.conf`.

Follows ``pbx/pbx_config.c`` (``pbx_load_config``) for loading and ``main/pbx.c``
(``ext_cmp``, ``_extension_match_core``, ``pbx_find_extension``) for matching:

* ``[general]`` and ``[globals]`` are settings/variables; template categories ``(!)`` are not
  contexts; every other category is a context (same name twice: merged).
* ``exten => ext[/cid],prio[(label)],App(args)``, ``same => prio[(label)],App(args)``;
  ``prio`` is a number, ``n``/``next`` (previous + 1), ``s``/``same`` (previous), a label
  of the same extension, any of these ``+N``, or ``hint``.
* ``include => ctx[,timing]``, ``ignorepat => pattern``, ``switch``/``eswitch``/``lswitch``.
* Matching: inside a context, extensions are tried in Asterisk's sort order (exact names
  before patterns; patterns by ``ext_cmp``: per position the smaller character set first —
  literal, ``[..]`` by size, ``N`` (8), ``Z`` (9), ``X`` (10), then ``.``, then ``!``); the
  first one that matches and has the wanted priority wins; then includes, depth first,
  each context at most once.  ``-`` in extensions is ignored as in Asterisk.

Where Asterisk logs a warning and skips the line (unknown keyword, ``n`` on the first line,
duplicate priority, missing ``)``...) this module raises :class:`ConfSyntaxError`.
Include timings are kept but not evaluated: an include always applies.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from ivr.asterisk.appargs import parse_app
from ivr.asterisk.conf import Category, Item, resolve_items
from ivr.asterisk.errors import ConfRenderError, ConfSyntaxError, ExprError

__all__ = [
    "Context",
    "Dialplan",
    "Extension",
    "Include",
    "Priority",
    "dialplan_to_categories",
    "ext_cmp",
    "extension_matches",
    "parse_extensions",
]

HINT = -1


@dataclass(frozen=True, slots=True)
class Priority:
    number: int
    label: str | None
    app: str
    data: str
    file: str = "<string>"
    line: int = 0


@dataclass(slots=True)
class Extension:
    """All priorities of one extension name (and optional caller-ID match) in a context."""

    name: str
    context: str
    cidmatch: str | None = None
    priorities: dict[int, Priority] = field(default_factory=dict)
    hint: str | None = None
    file: str = "<string>"
    line: int = 0

    @property
    def is_pattern(self) -> bool:
        return self.name.startswith("_")

    def priority(self, number_or_label: int | str) -> Priority | None:
        """Priority by number, or by label (labels are case-sensitive)."""
        if isinstance(number_or_label, int):
            return self.priorities.get(number_or_label)
        for p in self.priorities.values():
            if p.label == number_or_label:
                return p
        return None

    def ordered(self) -> list[Priority]:
        return [self.priorities[k] for k in sorted(self.priorities)]


@dataclass(frozen=True, slots=True)
class Include:
    context: str
    timing: str = ""
    file: str = "<string>"
    line: int = 0


@dataclass(slots=True)
class Context:
    name: str
    extensions: list[Extension] = field(default_factory=list)
    includes: list[Include] = field(default_factory=list)
    ignorepats: list[str] = field(default_factory=list)
    switches: list[Item] = field(default_factory=list)
    file: str = "<string>"
    line: int = 0

    def get(self, name: str, cidmatch: str | None = None) -> Extension | None:
        """The extension written exactly as ``name`` (no pattern matching)."""
        for e in self.extensions:
            if e.name == name and e.cidmatch == cidmatch:
                return e
        return None

    def sorted_extensions(self) -> list[Extension]:
        """Extensions in the order Asterisk tries them."""
        return sorted(self.extensions, key=functools.cmp_to_key(_ext_entry_cmp))


@dataclass(slots=True)
class Dialplan:
    general: dict[str, str] = field(default_factory=dict)
    globals: dict[str, str] = field(default_factory=dict)
    contexts: dict[str, Context] = field(default_factory=dict)

    def _candidates(self, context: str, exten: str, caller_id: str | None) -> Iterator[Extension]:
        """Matching extensions in the order Asterisk tries them: the context's own (sorted),
        then its includes depth-first, each context at most once."""
        seen: set[str] = set()

        def walk(name: str) -> Iterator[Extension]:
            if name in seen:
                return
            seen.add(name)
            ctx = self.contexts.get(name)
            if ctx is None:
                return
            for e in ctx.sorted_extensions():
                if not extension_matches(e.name, exten):
                    continue
                if e.cidmatch is not None and not (
                    caller_id and extension_matches(e.cidmatch, caller_id)
                ):
                    continue
                yield e
            for inc in ctx.includes:
                yield from walk(inc.context)

        return walk(context)

    def match(
        self,
        context: str,
        exten: str,
        priority: int | str = 1,
        *,
        caller_id: str | None = None,
    ) -> Extension | None:
        """The extension Asterisk would run for ``exten`` in ``context``: the first matching
        one (in sort order, then through includes) that has ``priority`` (default 1, as
        ``ast_exists_extension``).  ``None`` if nothing matches or the context is unknown."""
        for e in self._candidates(context, exten, caller_id):
            if e.priority(priority) is not None:
                return e
        return None

    def find(
        self,
        context: str,
        exten: str,
        priority_or_label: int | str,
        *,
        caller_id: str | None = None,
    ) -> Priority | None:
        """The priority (by number or label) Asterisk would execute, or ``None``."""
        e = self.match(context, exten, priority_or_label, caller_id=caller_id)
        return e.priority(priority_or_label) if e is not None else None

    def hint(self, context: str, exten: str) -> str | None:
        for e in self._candidates(context, exten, None):
            if e.hint is not None:
                return e.hint
        return None


# -- pattern matching ---------------------------------------------------------------------


def _check_pattern(name: str) -> str | None:
    """Why ``name`` is not a valid pattern, or None."""
    if not name.startswith("_"):
        return None
    i = 1
    while i < len(name):
        if name[i] == "[":
            end = name.find("]", i + 1)
            if end < 0:
                return f"'[' without ']' in pattern {name!r}"
            i = end
        i += 1
    if len(name) == 1:
        return "empty pattern '_'"
    return None


def extension_matches(pattern: str, exten: str) -> bool:
    """Whether dialled ``exten`` matches extension ``pattern`` (``E_MATCH`` mode of
    ``_extension_match_core``; ``-`` is ignored in both, classes are case-insensitive,
    other characters compare case-sensitively)."""
    if not pattern.startswith("_"):
        return pattern.replace("-", "") == exten.replace("-", "")
    p = 1
    d = 0
    np_ = len(pattern)
    nd = len(exten)
    while True:
        while d < nd and exten[d] == "-":
            d += 1
        while p < np_ and pattern[p] == "-":
            p += 1
        if d >= nd or p >= np_ or pattern[p] == "/":
            break
        c = pattern[p]
        ch = exten[d]
        if c == "[":
            end = pattern.find("]", p + 1)
            if end < 0:
                return False
            if end == p + 1:
                p = end + 1  # empty set: ignored, data not consumed
                continue
            q = p + 1
            found = False
            while q < end:
                if q + 2 < end and pattern[q + 1] == "-":
                    if pattern[q] <= ch <= pattern[q + 2]:
                        found = True
                        break
                    q += 3
                    continue
                if ch == pattern[q]:
                    found = True
                    break
                q += 1
            if not found:
                return False
            p = end
        elif c in "nN":
            if not "2" <= ch <= "9":
                return False
        elif c in "xX":
            if not "0" <= ch <= "9":
                return False
        elif c in "zZ":
            if not "1" <= ch <= "9":
                return False
        elif c in ".!":
            return True
        elif ch != c:
            return False
        d += 1
        p += 1
    if d < nd:
        return False
    return p >= np_ or pattern[p] in "/!"


def _pattern_pos(s: str, i: int) -> tuple[int, bytes, int | None]:
    """Port of ``ext_cmp_pattern_pos``: (score, 256-bit set, next index or None at end)."""
    while i < len(s) and s[i] == "-":
        i += 1
    bits = bytearray(32)
    if i >= len(s):
        return 0x30000, bytes(bits), None
    c = s[i]
    i += 1
    o = ord(c) & 0xFF if ord(c) < 256 else 0xFF
    if c in "nN":
        bits[6], bits[7] = 0x3F, 0xC0
        return 0x0800 | ord("2"), bytes(bits), i
    if c in "xX":
        bits[6], bits[7] = 0xFF, 0xC0
        return 0x0A00 | ord("0"), bytes(bits), i
    if c in "zZ":
        bits[6], bits[7] = 0x7F, 0xC0
        return 0x0900 | ord("1"), bytes(bits), i
    if c == ".":
        return 0x18000, bytes(bits), i
    if c == "!":
        return 0x28000, bytes(bits), i
    if c == "[":
        end = s.find("]", i)
        if end < 0:
            return 0x40000, bytes(bits), len(s)
        count = 0
        cmin = 0xFF
        while i < end:
            c1 = min(ord(s[i]), 255)
            if i + 2 < end and s[i + 1] == "-":
                c2 = min(ord(s[i + 2]), 255)
                i += 2
            else:
                c2 = c1
            cmin = min(cmin, c1)
            for cc in range(c1, c2 + 1):
                mask = 1 << (7 - (cc % 8))
                if not bits[cc // 8] & mask:
                    bits[cc // 8] |= mask
                    count += 0x100
            i += 1
        return count | cmin, bytes(bits), end + 1
    bits[o // 8] = 1 << (7 - (o % 8))
    return 0x0100 | o, bytes(bits), i


def _cmp_pattern(left: str, right: str) -> int:
    li: int | None = 0
    ri: int | None = 0
    while True:
        assert li is not None and ri is not None
        lp, lb, li = _pattern_pos(left, li)
        rp, rb, ri = _pattern_pos(right, ri)
        cmp = lp - rp
        if not cmp:
            cmp = (rb > lb) - (rb < lb)
        if cmp or li is None or ri is None:
            return cmp


def _cmp_exten(left: str, right: str) -> int:
    a = [ord(c) for c in left if c != "-"] + [0]
    b = [ord(c) for c in right if c != "-"] + [0]
    for x, y in zip(a, b, strict=False):
        if x != y:
            return x - y
    return 0


def ext_cmp(left: str, right: str) -> int:
    """Asterisk's ``ext_cmp``: negative if ``left`` sorts (is tried) before ``right``."""
    if not left.startswith("_"):
        if right.startswith("_"):
            return -1
        return _cmp_exten(left, right)
    if not right.startswith("_"):
        return 1
    return _cmp_pattern(left[1:], right[1:])


def _ext_entry_cmp(a: Extension, b: Extension) -> int:
    r = ext_cmp(a.name, b.name)
    if r:
        return r
    if a.cidmatch is None and b.cidmatch is None:
        return 0
    if a.cidmatch is None:
        return 1
    if b.cidmatch is None:
        return -1
    return ext_cmp(a.cidmatch, b.cidmatch)


# -- loading ------------------------------------------------------------------------------


def _err(item: Item, message: str, offset: int = 0) -> ConfSyntaxError:
    return ConfSyntaxError(item.file, item.line, item.col + offset, message)


class _Loader:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.last_ext: str | None = None
        self.last_pri: int | None = None

    def exten(self, item: Item) -> None:
        value = item.value
        off = 0
        if item.key.lower() == "same":
            if self.last_ext is None:
                raise _err(item, f"'same =>' with no previous 'exten =>' in [{self.ctx.name}]")
            ext = self.last_ext
            rest = value
        else:
            comma = value.find(",")
            if comma < 0:
                raise _err(item, f"expected 'exten => ext,priority,App(args)', got {value!r}")
            ext = value[:comma].strip()
            rest = value[comma + 1 :]
            off = comma + 1
            if not ext:
                raise _err(item, "empty extension name")
            why = _check_pattern(ext.split("/", 1)[0])
            if why:
                raise _err(item, why)
            self.last_ext = ext
        comma = rest.find(",")
        pri_text = rest if comma < 0 else rest[:comma]
        app_text = "" if comma < 0 else rest[comma + 1 :]
        app_off = off + (len(rest) if comma < 0 else comma + 1)
        name, _, cid = ext.partition("/")
        name = name.strip()
        cidmatch = cid.strip() if cid else None
        pri_col = off + len(pri_text) - len(pri_text.lstrip())
        pri = pri_text.strip()
        label: str | None = None
        if "(" in pri:
            p = pri.index("(")
            end = pri.find(")", p)
            if end < 0:
                raise _err(item, f"label in {pri!r} is missing its ')'", pri_col + p)
            label = pri[p + 1 : end]
            if pri[end + 1 :].strip():
                raise _err(item, f"unexpected text after label in {pri!r}", pri_col + end + 1)
            pri = pri[:p].strip()
            if not label:
                raise _err(item, "empty label '()'", pri_col + p)
        ext_obj = self.ctx.get(name, cidmatch)
        if pri == "hint":
            if ext_obj is None:
                ext_obj = Extension(name, self.ctx.name, cidmatch, file=item.file, line=item.line)
                self.ctx.extensions.append(ext_obj)
            if ext_obj.hint is not None:
                raise _err(item, f"second hint for extension {name!r}")
            ext_obj.hint = app_text.strip()
            self.last_pri = HINT
            return
        base, plus, inc = pri.partition("+")
        base = base.strip()
        number: int
        if base in ("n", "next", "s", "same"):
            if self.last_pri is None or self.last_pri == HINT:
                raise _err(item, f"priority {base!r} needs a numbered priority before it", pri_col)
            number = self.last_pri + (1 if base in ("n", "next") else 0)
        elif base.isdigit():
            number = int(base)
        else:
            target = ext_obj.priority(base) if ext_obj is not None and base else None
            if target is None:
                raise _err(item, f"invalid priority or unknown label {pri!r}", pri_col)
            number = target.number
        if plus:
            if not inc.strip().isdigit():
                raise _err(item, f"invalid priority offset in {pri!r}", pri_col)
            number += int(inc)
        if number < 1:
            raise _err(item, f"priority must be 1 or more, got {pri!r}", pri_col)
        try:
            app, data = parse_app(app_text)
        except ExprError as exc:
            raise _err(item, str(exc), app_off) from None
        if ext_obj is None:
            ext_obj = Extension(name, self.ctx.name, cidmatch, file=item.file, line=item.line)
            self.ctx.extensions.append(ext_obj)
        if number in ext_obj.priorities:
            prev = ext_obj.priorities[number]
            raise _err(
                item,
                f"priority {number} of extension {name!r} in [{self.ctx.name}] already "
                f"defined at {prev.file}:{prev.line}",
                pri_col,
            )
        if label is not None and ext_obj.priority(label) is not None:
            raise _err(item, f"label {label!r} already used in extension {name!r}", pri_col)
        ext_obj.priorities[number] = Priority(number, label, app, data, item.file, item.line)
        self.last_pri = number


def parse_extensions(categories: Sequence[Category]) -> Dialplan:
    """Build the dialplan from parsed ``extensions.conf`` categories."""
    dp = Dialplan()
    for cat in categories:
        if cat.is_template:
            continue
        items = resolve_items(categories, cat)
        if cat.name.lower() == "general":
            dp.general.update((i.key, i.value) for i in items)
            continue
        if cat.name.lower() == "globals":
            dp.globals.update((i.key, i.value) for i in items)
            continue
        ctx = dp.contexts.get(cat.name)
        if ctx is None:
            ctx = dp.contexts[cat.name] = Context(cat.name, file=cat.file, line=cat.line)
        # like pbx_config: 'same' and 'n' continue only within one [category] block
        loader = _Loader(ctx)
        for item in items:
            key = item.key.lower()
            if key in ("exten", "same"):
                loader.exten(item)
            elif key == "include":
                name, _, timing = item.value.partition(",")
                if not name.strip():
                    raise _err(item, "include => needs a context name")
                ctx.includes.append(Include(name.strip(), timing.strip(), item.file, item.line))
            elif key == "ignorepat":
                ctx.ignorepats.append(item.value)
            elif key in ("switch", "eswitch", "lswitch"):
                ctx.switches.append(item)
            else:
                raise ConfSyntaxError(
                    item.file,
                    item.line,
                    item.key_col,
                    f"unknown dialplan keyword {item.key!r} in [{cat.name}] "
                    "(expected exten, same, include, ignorepat, switch)",
                )
    return dp


# -- writing ------------------------------------------------------------------------------


def _bad(what: str, text: str, chars: str) -> None:
    if not text or any(c in text for c in chars) or text != text.strip():
        raise ConfRenderError(f"{what} {text!r} cannot be written in a dialplan line")


def dialplan_to_categories(dialplan: Dialplan) -> list[Category]:
    """Categories that :func:`render_conf` writes as an ``extensions.conf`` which
    :func:`parse_extensions` reads back to the same dialplan (general, globals, contexts
    with their extensions, hints, priorities, labels, includes, ignorepats, switches).
    Consecutive priorities are written as ``same => n``."""
    cats: list[Category] = []
    if dialplan.general:
        cats.append(
            Category("general", items=[Item(k, "=", v) for k, v in dialplan.general.items()])
        )
    if dialplan.globals:
        cats.append(
            Category("globals", items=[Item(k, "=", v) for k, v in dialplan.globals.items()])
        )
    for ctx in dialplan.contexts.values():
        items: list[Item] = []
        for inc in ctx.includes:
            _bad("include", inc.context, ",;")
            items.append(
                Item("include", "=>", inc.context + (f",{inc.timing}" if inc.timing else ""))
            )
        items.extend(Item("ignorepat", "=>", p) for p in ctx.ignorepats)
        items.extend(Item(sw.key, sw.op, sw.value) for sw in ctx.switches)
        for ext in ctx.extensions:
            _bad("extension", ext.name, ",/;\n")
            name = ext.name + (f"/{ext.cidmatch}" if ext.cidmatch else "")
            if ext.cidmatch is not None:
                _bad("caller-id match", ext.cidmatch, ",/;\n")
            if ext.hint is not None:
                items.append(Item("exten", "=>", f"{name},hint,{ext.hint}"))
            prev: int | None = None
            for p in ext.ordered():
                _bad("application", p.app, "(),\n")
                if "${" in p.app or "$[" in p.app:
                    raise ConfRenderError(f"application {p.app!r} cannot contain ${{ or $[")
                label = ""
                if p.label is not None:
                    _bad("label", p.label, "(),+\n")
                    label = f"({p.label})"
                call = f"{p.app}({p.data})"
                if prev is None:
                    items.append(Item("exten", "=>", f"{name},{p.number}{label},{call}"))
                else:
                    num = "n" if p.number == prev + 1 else str(p.number)
                    items.append(Item("same", "=>", f"{num}{label},{call}"))
                prev = p.number
        cats.append(Category(ctx.name, items=items))
    return cats
