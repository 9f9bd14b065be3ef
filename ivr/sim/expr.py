"""Dialplan expression language: ``${...}`` substitution and ``$[...]`` expressions.

Semantics follow Asterisk 20:

* :func:`substitute` — ``pbx_substitute_variables_helper_full`` (``main/pbx_variables.c``):
  ``${VAR}``, ``${VAR:offset}``, ``${VAR:offset:length}``, ``${FUNC(args)}`` (also with
  ``:offset:length``), nesting (inner ``${}``/``$[]`` first), ``$[expr]``.  Unset variables
  are empty.  No backslash processing (that belongs to application argument splitting).
* :func:`evaluate` — ``main/ast_expr2.y`` / ``ast_expr2.fl``: operators, precedence, and the
  number-vs-string rules: a token of digits (``12``, ``1.5``) is numeric; a double-quoted
  token keeps its quotes and is a string, so ``$["1" = 1]`` is ``0`` and
  ``$["${X}" = "queue"]`` compares ``"queue"`` with ``"queue"``.  If either side of a
  comparison is a string both compare as strings, otherwise as numbers.  Arithmetic is
  decimal (Asterisk uses ``long double``, printed with ``%.18Lg``: ``$[7/2]`` is ``3.5``).

Application arguments (``split_app_args``, ``parse_app``) are the product's
:mod:`ivr.asterisk.appargs`; this evaluator is the emulator's alone (``ivr asterisk check``
does not evaluate expressions).

Deliberate differences: a syntax error in ``$[...]``, an unknown function, a missing ``}``
or ``]`` raise :class:`ExprError` (Asterisk logs a warning and carries on with ``0``/empty);
``${VAR:o:l}`` and ``LEN()`` count characters, not UTF-8 bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, DivisionByZero, InvalidOperation, Overflow, localcontext
from functools import lru_cache
from typing import Protocol

from ivr.asterisk.appargs import split_app_args
from ivr.asterisk.errors import ExprError

__all__ = [
    "DictScope",
    "Scope",
    "builtin_function",
    "checkcondition",
    "evaluate",
    "substitute",
]

_MAX_DEPTH = 64
_WS = " \t\n\v\f\r"
_INT_MAX = Decimal(2147483647)


class Scope(Protocol):
    """What :func:`substitute` needs from a channel."""

    def get_var(self, name: str) -> str | None:
        """Value of channel/global variable ``name``, or ``None`` if unset."""
        ...

    def call_function(self, name: str, args: str) -> str | None:
        """Result of dialplan function ``name(args)`` (args already substituted), or ``None``
        if the scope does not know it (then the built-ins are tried)."""
        ...


@dataclass
class DictScope:
    """A :class:`Scope` over a dict of variables plus optional extra functions."""

    variables: dict[str, str] = field(default_factory=dict)
    functions: Mapping[str, Callable[[str], str]] = field(default_factory=dict)

    def get_var(self, name: str) -> str | None:
        return self.variables.get(name)

    def call_function(self, name: str, args: str) -> str | None:
        fn = self.functions.get(name)
        if fn is not None:
            return fn(args)
        return builtin_function(name, args)


# -- ${...} substitution --------------------------------------------------------------------


def substitute(text: str, scope: Scope) -> str:
    """Expand ``${...}`` and ``$[...]`` in ``text`` using ``scope``."""
    return _render(_template(text, 0), scope)


# A parsed text: literal strings and (kind, inner) parts, kind "{" (a variable or function
# lookup) or "[" (an expression); inner is a str when it has no ${...}/$[...] of its own,
# else a parsed text.  Parsing depends on the text only, so it is cached; values are not.
_Part = str | tuple[str, "str | tuple[_Part, ...]"]


@lru_cache(maxsize=4096)
def _template(text: str, depth: int) -> tuple[_Part, ...]:
    if depth > _MAX_DEPTH:
        raise ExprError(f"substitution nested deeper than {_MAX_DEPTH}")
    out: list[_Part] = []
    i = 0
    n = len(text)
    while True:
        j = text.find("$", i)
        while j >= 0 and (j + 1 >= n or text[j + 1] not in "{["):
            j = text.find("$", j + 1)
        if j < 0:
            if text[i:]:
                out.append(text[i:])
            return tuple(out)
        if j > i:
            out.append(text[i:j])
        kind = text[j + 1]
        open_c, close_c = ("{", "}") if kind == "{" else ("[", "]")
        k = j + 2
        brackets = 1
        needsub = False
        while brackets and k < n:
            c = text[k]
            if c == "$" and k + 1 < n and text[k + 1] == open_c:
                needsub = True
                brackets += 1
                k += 1
            elif c == open_c:
                brackets += 1
            elif c == close_c:
                brackets -= 1
            elif c == "$" and k + 1 < n and text[k + 1] in "{[":
                needsub = True
            k += 1
        if brackets:
            raise ExprError(f"missing '{close_c}' for '${open_c}' at offset {j} in {text!r}")
        inner = text[j + 2 : k - 1]
        out.append((kind, _template(inner, depth + 1) if needsub else inner))
        i = k


def _render(parts: tuple[_Part, ...], scope: Scope) -> str:
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        kind, inner = part
        spec = inner if isinstance(inner, str) else _render(inner, scope)
        out.append(_lookup(spec, scope) if kind == "{" else evaluate(spec))
    return "".join(out)


_OFFSET_RE = re.compile(r"\s*([+-]?\d+)(?::\s*([+-]?\d+))?")


def _lookup(spec: str, scope: Scope) -> str:
    name, fname, args, has_range, offset, length = _parse_spec(spec)
    if fname is not None:
        value = scope.call_function(fname, args)
        if value is None:
            value = builtin_function(fname, args)
        if value is None:
            raise ExprError(f"unknown dialplan function {fname}()")
    else:
        value = scope.get_var(name) or ""
    if has_range:
        value = _substring(value, offset, length)
    return value


@lru_cache(maxsize=4096)  # a pure function of the (substituted) spec
def _parse_spec(spec: str) -> tuple[str, str | None, str, bool, int, int | None]:
    """``NAME[:offset[:length]]`` or ``FUNC(args)[:offset[:length]]``: (name, function
    name or None, its args, has a range, offset, length)."""
    parens = 0
    name = spec
    offset = 0
    length: int | None = None
    has_range = False
    for idx, c in enumerate(spec):
        if c == "(":
            parens += 1
        elif c == ")":
            parens -= 1
        elif c == ":" and parens == 0:
            name = spec[:idx]
            has_range = True
            m = _OFFSET_RE.match(spec, idx + 1)
            if m:
                offset = int(m.group(1))
                if m.group(2) is not None:
                    length = int(m.group(2))
            break
    if "(" in name:
        p = name.index("(")
        args = name[p + 1 :]
        e = args.rfind(")")
        if e >= 0:
            args = args[:e]
        return name, name[:p], args, has_range, offset, length
    return name, None, "", has_range, offset, length


def _substring(value: str, offset: int, length: int | None) -> str:
    lr = len(value)
    if length is None:
        length = 2**31 - 1
    if offset == 0 and length >= lr:
        return value
    if offset < 0:
        offset = max(lr + offset, 0)
    if offset >= lr:
        return ""
    ret = value[offset:]
    if 0 <= length < lr - offset:
        return ret[:length]
    if length < 0:
        return value[offset : lr + length] if lr > offset - length else ""
    return ret


def checkcondition(cond: str) -> bool:
    """``pbx_checkcondition`` (main/pbx.c), the truth of GotoIf/ExecIf/IF conditions: empty is
    false, a leading integer (``sscanf("%d")``, leading blanks allowed) is its truth, any other
    string is true (``$[...]`` results are already substituted)."""
    if not cond:
        return False
    m = re.match(r"\s*([+-]?\d+)", cond)
    if m:
        return int(m.group(1)) != 0
    return True


def builtin_function(name: str, args: str) -> str | None:
    """Built-in dialplan functions ``IF``, ``LEN``, ``ISNULL``, ``EXISTS`` (``args`` already
    substituted); ``None`` for any other name."""
    fname = name.strip().upper()
    if fname == "IF":  # funcs/func_logic.c acf_if
        parts = split_app_args(args, "?", max_args=2)
        expr = parts[0].strip(_WS) if parts else ""
        branches = split_app_args(parts[1], ":", max_args=2) if len(parts) > 1 else []
        if not expr or not branches:
            raise ExprError(f"IF({args}): syntax is IF(<expr>?[<true>][:<false>])")
        iftrue = branches[0].strip(_WS)
        iffalse = branches[1].strip(_WS) if len(branches) > 1 else ""
        return iftrue if checkcondition(expr) else iffalse
    if fname == "LEN":
        return str(len(args))
    if fname == "ISNULL":
        return "0" if args else "1"
    if fname == "EXISTS":
        return "1" if args else "0"
    return None


# -- $[...] expressions ---------------------------------------------------------------------

_NUM, _NSTR, _STR = 0, 1, 2  # AST_EXPR_number, AST_EXPR_numeric_string, AST_EXPR_string


@dataclass(frozen=True, slots=True)
class _Val:
    kind: int
    s: str = ""
    n: Decimal = Decimal(0)


_OPS = (
    "||",
    "&&",
    "==",
    "=~",
    "~~",
    ">=",
    "<=",
    "!=",
    "::",
    "|",
    "&",
    "=",
    ">",
    "<",
    "+",
    ",",
    "-",
    "*",
    "/",
    "%",
    "?",
    "!",
    ":",
    "(",
    ")",
)
_WORD_RE = re.compile(r"(?:[a-zA-Z0-9.';\\_^#@]|[^\x00-\x7f]|\$[^{])+")
_NUMBER_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def _tokenize(expr: str) -> list[tuple[str, _Val | None, int]]:
    """Tokens as (op or 'TOKEN', value, column)."""
    toks: list[tuple[str, _Val | None, int]] = []
    i = 0
    n = len(expr)
    while i < n:
        c = expr[i]
        if c in " \t\r\n":
            i += 1
            continue
        if c == '"':
            e = expr.find('"', i + 1)
            if e < 0:
                raise ExprError(f"unterminated '\"' at column {i + 1} in $[{expr}]")
            toks.append(("TOKEN", _Val(_STR, expr[i : e + 1]), i + 1))
            i = e + 1
            continue
        if c == "$" and i + 1 < n and expr[i + 1] == "{":
            # an unexpanded ${...} and its trailing text is one string token (lexer 'var' state)
            k = i + 2
            depth = 1
            while k < n and depth:
                if expr[k] == "{":
                    depth += 1
                elif expr[k] == "}":
                    depth -= 1
                k += 1
            if depth:
                raise ExprError(f"missing '}}' at column {i + 1} in $[{expr}]")
            m2 = re.compile(r"[^-\t\r \n$():?%/+=*<>!|&]*").match(expr, k)
            k = m2.end() if m2 else k
            toks.append(("TOKEN", _Val(_STR, expr[i:k]), i + 1))
            i = k
            continue
        wm = _WORD_RE.match(expr, i)
        nm = _NUMBER_RE.match(expr, i)
        if wm:
            if nm and nm.end() >= wm.end():
                toks.append(("TOKEN", _Val(_NSTR, nm.group()), i + 1))
                i = nm.end()
            else:
                toks.append(("TOKEN", _Val(_STR, wm.group()), i + 1))
                i = wm.end()
            continue
        for op in _OPS:
            if expr.startswith(op, i):
                toks.append((op, None, i + 1))
                i += len(op)
                break
        else:
            raise ExprError(f"unexpected character {c!r} at column {i + 1} in $[{expr}]")
    return toks


_STRTOD_RE = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _make_str(s: str) -> _Val:
    isint = bool(s) and (s[0].isdigit() and s[0].isascii() or s[0] in "-.")
    if isint and all((ch.isascii() and ch.isdigit()) or ch == "." for ch in s):
        return _Val(_NSTR, s)
    return _Val(_STR, s)


def _to_number(v: _Val) -> _Val | None:
    if v.kind == _NUM:
        return v
    if v.kind == _STR:
        return None
    m = _STRTOD_RE.match(v.s)
    try:
        return _Val(_NUM, n=Decimal(m.group()) if m else Decimal(0))
    except InvalidOperation:  # pragma: no cover - regex only admits valid numbers
        return _Val(_NUM, n=Decimal(0))


def _fmt(d: Decimal) -> str:
    if d.is_nan() or d.is_infinite():
        return "nan" if d.is_nan() else ("inf" if d > 0 else "-inf")
    if d == d.to_integral_value() and abs(d) < Decimal(10) ** 18:
        return str(int(d))
    out = format(d, ".18g")
    if "e" not in out and "E" not in out and "." in out:
        out = out.rstrip("0").rstrip(".")
    elif "E" in out or "e" in out:
        mant, exp = out.lower().split("e")
        if "." in mant:
            mant = mant.rstrip("0").rstrip(".")
        sign = "-" if exp.startswith("-") else "+"
        out = f"{mant}e{sign}{abs(int(exp)):02d}"
    return out


def _to_string(v: _Val) -> str:
    return _fmt(v.n) if v.kind == _NUM else v.s


def _num(d: Decimal) -> _Val:
    return _Val(_NUM, n=d)


def _is_zero_or_null(v: _Val) -> tuple[bool, _Val]:
    if v.kind == _NUM:
        return v.n == 0, v
    if not v.s:
        return True, v
    nv = _to_number(v)
    if nv is not None:
        return nv.n == 0, nv
    return False, v


def _strip_quotes(s: str) -> str:
    if len(s) >= 1 and s[0] == '"' and s[-1] == '"':
        return s.replace('"', "")
    return s


def _atoi(s: str) -> int:
    m = re.match(r"\s*([+-]?\d+)", s)
    return int(m.group(1)) if m else 0


def _compare(op: str, a: _Val, b: _Val) -> _Val:
    if a.kind == _STR or b.kind == _STR:
        x: str | Decimal = _to_string(a)
        y: str | Decimal = _to_string(b)
    else:
        na, nb = _to_number(a), _to_number(b)
        assert na is not None and nb is not None
        x, y = na.n, nb.n
    if op in ("=", "=="):
        r = x == y
    elif op == "!=":
        r = x != y
    elif op == "<":
        r = x < y  # type: ignore[operator]
    elif op == ">":
        r = x > y  # type: ignore[operator]
    elif op == "<=":
        r = x <= y  # type: ignore[operator]
    else:
        r = x >= y  # type: ignore[operator]
    return _num(Decimal(int(r)))


def _regex(op: str, a: _Val, b: _Val) -> _Val:
    subject = _strip_quotes(_to_string(a))
    pattern = _strip_quotes(_to_string(b))
    try:
        rx = re.compile(pattern)
    except (re.error, OverflowError, RecursionError):
        return _make_str("")
    m = rx.search(subject)
    if m is not None and (op == "=~" or m.start() == 0):
        if rx.groups and m.group(1) is not None:
            return _make_str(m.group(1))
        return _num(Decimal(m.end() - m.start()))
    return _num(Decimal(0)) if rx.groups == 0 else _make_str("")


def _arith(op: str, a: _Val, b: _Val) -> _Val:
    na, nb = _to_number(a), _to_number(b)
    if op == "+":
        if na is None:
            return nb if nb is not None else _num(Decimal(0))
        if nb is None:
            return na
        return _num(na.n + nb.n)
    if op == "-":
        if na is None:
            return _num(-nb.n) if nb is not None else _num(Decimal(0))
        if nb is None:
            return na
        return _num(na.n - nb.n)
    if op == "*":
        if na is None or nb is None:
            return _num(Decimal(0))
        return _num(na.n * nb.n)
    if op == "/":
        if na is None:
            return _num(Decimal(0))
        if nb is None or nb.n == 0:
            return _num(_INT_MAX)
        return _num(na.n / nb.n)
    # "%"
    if na is None or nb is None:
        return _num(Decimal(0))
    if nb.n == 0:
        return nb
    return _num(na.n % nb.n)


class _ExprParser:
    # binary precedence levels, lowest first (ast_expr2.y %left lines)
    _LEVELS: tuple[tuple[str, ...], ...] = (
        ("|", "||"),
        ("&", "&&"),
        ("=", "==", ">", "<", ">=", "<=", "!="),
        ("+", "-"),
        ("*", "/", "%"),
    )

    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.toks = _tokenize(expr)
        self.pos = 0

    def peek(self) -> str | None:
        return self.toks[self.pos][0] if self.pos < len(self.toks) else None

    def error(self, what: str) -> ExprError:
        if self.pos < len(self.toks):
            tok = self.toks[self.pos]
            where = f"at column {tok[2]} ({tok[1].s if tok[1] else tok[0]!r})"
        else:
            where = "at end of expression"
        return ExprError(f"syntax error in $[{self.expr}]: {what} {where}")

    def parse(self) -> _Val:
        if not self.toks:
            return _Val(_STR, "")
        v = self.ternary()
        if self.pos != len(self.toks):
            raise self.error("unexpected token")
        return v

    def ternary(self) -> _Val:
        v = self.binary(0)
        while self.peek() == "?":
            self.pos += 1
            a = self.ternary()
            if self.peek() != "::":
                raise self.error("expected '::' of '?' '::'")
            self.pos += 1
            b = self.binary(0)
            v = self._cond(v, a, b)
        return v

    @staticmethod
    def _cond(a: _Val, b: _Val, c: _Val) -> _Val:
        if a.kind == _STR:
            return b if a.s and a.s != '""' and a.s != "0" else c
        na = _to_number(a)
        assert na is not None
        return b if na.n != 0 else c

    def binary(self, level: int) -> _Val:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        ops = self._LEVELS[level]
        while (op := self.peek()) in ops:
            assert op is not None
            self.pos += 1
            right = self.binary(level + 1)
            left = self._apply(op, left, right)
        return left

    @staticmethod
    def _apply(op: str, a: _Val, b: _Val) -> _Val:
        if op in ("|", "||"):
            za, a2 = _is_zero_or_null(a)
            return b if za else a2
        if op in ("&", "&&"):
            za, a2 = _is_zero_or_null(a)
            zb, _ = _is_zero_or_null(b)
            return _num(Decimal(0)) if za or zb else a2
        if op in ("+", "-", "*", "/", "%"):
            return _arith(op, a, b)
        return _compare(op, a, b)

    def unary(self) -> _Val:
        op = self.peek()
        if op == "!":
            self.pos += 1
            a = self.unary()
            if a.kind == _NUM:
                v1 = 0 if a.n == 0 else 1
            elif not a.s or a.s == "0":
                v1 = 0
            else:
                v1 = _atoi(a.s)
            return _num(Decimal(int(not v1)))
        if op == "-":
            self.pos += 1
            a = self.unary()
            na = _to_number(a)
            return _num(-na.n) if na is not None else _num(Decimal(0))
        return self.regex()

    def regex(self) -> _Val:
        left = self.primary()
        while (op := self.peek()) in (":", "=~", "~~"):
            assert op is not None
            self.pos += 1
            right = self.unary() if self.peek() in ("!", "-") else self.primary()
            if op == "~~":
                left = _make_str(_strip_quotes(_to_string(left)) + _strip_quotes(_to_string(right)))
            else:
                left = _regex(op, left, right)
        return left

    def primary(self) -> _Val:
        if self.pos >= len(self.toks):
            raise self.error("expected a value")
        kind, val, _col = self.toks[self.pos]
        if kind == "(":
            self.pos += 1
            v = self.ternary()
            if self.peek() != ")":
                raise self.error("expected ')'")
            self.pos += 1
            return v
        if kind == "TOKEN":
            assert val is not None
            self.pos += 1
            if self.peek() == "(":
                self.pos -= 1
                raise self.error("functions inside $[...] are not supported")
            return val
        raise self.error("expected a value")


@lru_cache(maxsize=4096)  # a pure function of the text; dialplans repeat the same ones
def evaluate(expr: str) -> str:
    """Evaluate the inside of ``$[...]`` (already substituted) as Asterisk's ``ast_expr``."""
    with localcontext() as ctx:
        ctx.prec = 40
        ctx.traps[InvalidOperation] = True
        ctx.traps[DivisionByZero] = True
        ctx.traps[Overflow] = True
        try:
            v = _ExprParser(expr).parse()
        except (InvalidOperation, DivisionByZero, Overflow) as exc:
            raise ExprError(f"arithmetic error in $[{expr}]: {exc!r}") from exc
        except RecursionError as exc:
            raise ExprError(f"expression nested too deeply: $[{expr[:80]}...]") from exc
        return _to_string(v)
