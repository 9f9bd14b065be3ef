"""Dialplan variable substitution and ``$[…]`` expressions (the subset the emulator's
dialplans use): ``${VAR}``, ``${FUNC(args)}``, ``${VAR:offset:length}``, ``$[a = b]``,
``!=``, ``<``, ``>``, ``<=``, ``>=``, ``&``, ``|``, ``+``, ``-``, and ``${IF(c?a:b)}``."""

from __future__ import annotations

import re
from collections.abc import Callable

Lookup = Callable[[str], str]


def _match(text: str, start: int, open_: str, close: str) -> int:
    depth = 0
    for i in range(start, len(text)):
        c = text[i]
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i
    return -1


def substitute(text: str, lookup: Lookup) -> str:
    """Expand ``${…}`` and ``$[…]`` in ``text`` using ``lookup`` for names/functions."""
    if "$" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "$" and i + 1 < len(text) and text[i + 1] in "{[":
            open_ = text[i + 1]
            close = "}" if open_ == "{" else "]"
            end = _match(text, i + 1, open_, close)
            if end < 0:
                out.append(text[i:])
                break
            inner = substitute(text[i + 2:end], lookup)
            if open_ == "{":
                out.append(_variable(inner, lookup))
            else:
                out.append(evaluate(inner))
            i = end + 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _variable(inner: str, lookup: Lookup) -> str:
    name = inner
    offset: int | None = None
    length: int | None = None
    if ":" in inner and not (inner.startswith("IF(") or "(" in inner.partition(":")[2][:1]):
        head, _, rest = inner.partition(":")
        if "(" not in head or head.endswith(")"):
            parts = rest.split(":")
            try:
                offset = int(parts[0]) if parts[0] else 0
                length = int(parts[1]) if len(parts) > 1 and parts[1] else None
                name = head
            except ValueError:
                name = inner
    value = lookup(name)
    if offset is not None:
        value = value[offset:] if length is None else value[offset:offset + length]
    return value


_OPS = ("!=", "<=", ">=", "=", "<", ">")
_TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|!=|<=|>=|[=<>&|+\-]|[^\s=<>&|!+\-]+)')


def _num(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def _fmt(x: float) -> str:
    return str(int(x)) if x == int(x) else str(x)


def evaluate(expr: str) -> str:
    """Value of a ``$[…]`` expression as Asterisk prints it (``1``/``0`` for tests)."""
    tokens = [t.strip() for t in _TOKEN.findall(expr) if t.strip()]
    tokens = [t[1:-1] if len(t) >= 2 and t[0] == t[-1] == '"' else t for t in tokens]
    if not tokens:
        return ""

    def cmp(a: str, op: str, b: str) -> str:
        na, nb = _num(a), _num(b)
        x: float | str = na if na is not None and nb is not None else a
        y: float | str = nb if na is not None and nb is not None else b
        r = {"=": x == y, "!=": x != y, "<": x < y, ">": x > y,  # type: ignore[operator]
             "<=": x <= y, ">=": x >= y}[op]  # type: ignore[operator]
        return "1" if r else "0"

    def arith(ts: list[str]) -> str:
        if not ts:
            return ""
        acc = ts[0]
        i = 1
        while i + 1 < len(ts) and ts[i] in "+-":
            a, b = _num(acc), _num(ts[i + 1])
            if a is None or b is None:
                return " ".join(ts)
            acc = _fmt(a + b if ts[i] == "+" else a - b)
            i += 2
        return acc if i >= len(ts) else " ".join(ts)

    def comparison(ts: list[str]) -> str:
        for i, t in enumerate(ts):
            if t in _OPS:
                return cmp(arith(ts[:i]), t, arith(ts[i + 1:]))
        return arith(ts)

    def truthy(s: str) -> bool:
        return s not in ("", "0")

    for op in ("|", "&"):
        if op in tokens:
            i = tokens.index(op)
            left, right = evaluate_tokens(tokens[:i]), evaluate_tokens(tokens[i + 1:])
            if op == "|":
                return left if truthy(left) else right
            return left if truthy(left) and truthy(right) else "0"
    return comparison(tokens)


def evaluate_tokens(tokens: list[str]) -> str:
    return evaluate(" ".join(f'"{t}"' if t not in _OPS + ("&", "|", "+", "-") else t
                             for t in tokens))


def split_args(data: str) -> list[str]:
    """Split application arguments on ``,`` outside quotes/parentheses/brackets."""
    out: list[str] = []
    cur: list[str] = []
    depth = 0
    quoted = False
    for c in data:
        if c == '"':
            quoted = not quoted
        elif not quoted and c in "([{":
            depth += 1
        elif not quoted and c in ")]}":
            depth = max(0, depth - 1)
        if c == "," and depth == 0 and not quoted:
            out.append("".join(cur))
            cur = []
            continue
        cur.append(c)
    out.append("".join(cur))
    return out


def split_if(arg: str) -> tuple[str, str, str]:
    """``cond?a:b`` → (cond, a, b)."""
    cond, _, rest = arg.partition("?")
    a, _, b = rest.partition(":")
    return cond, a, b


def separate_args(buf: str, delim: str = ",", remove_chars: bool = True,
                  max_args: int = 0) -> list[str]:
    """``__ast_app_separate_args()`` (main/app.c): split on ``delim`` outside
    parentheses, brackets and double quotes; with ``remove_chars`` (the STANDARD /
    NONSTANDARD macros) quotes are removed and a backslash makes the next character
    literal.  ``max_args`` > 0: the last one is the raw rest of the string.  A trailing
    delimiter yields a final empty argument; an empty string yields none."""
    out: list[str] = []
    i, n = 0, len(buf)
    paren = bracket = 0
    quote = False
    wasdelim = -1
    while i < n and (not max_args or len(out) < max_args - 1):
        cur: list[str] = []
        while i < n:
            c = buf[i]
            if c == "(":
                paren += 1
            elif c == ")":
                paren = max(0, paren - 1)
            elif c == "[":
                bracket += 1
            elif c == "]":
                bracket = max(0, bracket - 1)
            elif c == '"' and delim != '"':
                quote = not quote
                if remove_chars:
                    i += 1
                    continue
            elif c == "\\":
                if not remove_chars:
                    cur.append(c)
                cur.append(buf[i + 1:i + 2])
                i += 2
                continue
            elif c == delim and not paren and not quote and not bracket:
                wasdelim = i
                i += 1
                break
            cur.append(c)
            i += 1
        out.append("".join(cur))
    if i < n or (i > 0 and wasdelim == i - 1):
        out.append(buf[i:])
    return out


def checkcondition(text: str) -> bool:
    """``pbx_checkcondition()``: empty is false, a leading integer is its truth
    (``sscanf("%d")``), any other string is true."""
    m = re.match(r"\s*([-+]?\d+)", text)
    if not text:
        return False
    if m:
        return int(m.group(1)) != 0
    return True
