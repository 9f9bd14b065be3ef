"""Application arguments as Asterisk 20 splits them (``main/app.c``, ``pbx_config``).

* :func:`split_app_args` — ``__ast_app_separate_args`` with quote/backslash removal.
* :func:`parse_app` — how ``pbx_config`` splits ``App(data)``.

Used by the product's config checks (:mod:`ivr.asterisk.extensions`,
:mod:`ivr.asterisk.queues`) and by the emulator; the ``${...}``/``$[...]`` evaluator only
the emulator needs is :mod:`ivr.sim.expr`.
"""

from __future__ import annotations

from functools import lru_cache

from ivr.asterisk.errors import ExprError

__all__ = ["parse_app", "split_app_args"]


def split_app_args(
    data: str, delim: str = ",", *, max_args: int | None = None, raw: bool = False
) -> list[str]:
    """Split application data like Asterisk's ``__ast_app_separate_args`` (main/app.c).

    Delimiters inside ``(...)``, ``[...]`` or ``"..."`` do not split; double quotes are
    removed; a backslash makes the next character literal (and is removed).  A trailing
    delimiter yields a final empty argument; ``""`` yields ``[]``.  With ``max_args`` the last
    argument is the raw unparsed remainder: an application declaring N arguments
    (``AST_DECLARE_APP_ARGS``) gets its Nth as the rest of the string, delimiters included.
    ``raw=True`` is ``AST_NONSTANDARD_RAW_ARGS`` (``remove_chars`` 0): quotes and backslashes
    are kept, though quoted delimiters and the character after a backslash still do not split.
    """
    return list(_split_app_args(data, delim, max_args, raw))


@lru_cache(maxsize=4096)  # a pure function of its arguments; dialplans repeat the same data
def _split_app_args(data: str, delim: str, max_args: int | None, raw: bool) -> tuple[str, ...]:
    if len(delim) != 1:
        raise ExprError(f"delimiter must be one character, got {delim!r}")
    args: list[str] = []
    i = 0
    n = len(data)
    paren = bracket = 0
    quote = False
    wasdelim = -1
    while i < n and (max_args is None or len(args) < max_args - 1):
        cur: list[str] = []
        while i < n:
            c = data[i]
            if c == "(":
                paren += 1
            elif c == ")":
                if paren:
                    paren -= 1
            elif c == "[":
                bracket += 1
            elif c == "]":
                if bracket:
                    bracket -= 1
            elif c == '"' and delim != '"':
                quote = not quote
                if not raw:
                    i += 1
                    continue
            elif c == "\\":
                if raw:
                    cur.append(c)
                i += 1
                if i < n:
                    cur.append(data[i])
                i += 1
                continue
            elif c == delim and not paren and not quote and not bracket:
                wasdelim = i
                i += 1
                break
            cur.append(c)
            i += 1
        args.append("".join(cur))
    if i < n or (i > 0 and i - 1 == wasdelim):
        args.append(data[i:])
    return tuple(args)


def parse_app(text: str) -> tuple[str, str]:
    """Split ``App(data)`` into ``("App", "data")`` as ``pbx_config`` does: the data runs from
    the first ``(`` to the last ``)``; ``App`` without parentheses has empty data; text with
    ``${`` or ``$[`` before the first ``(`` is taken whole as the app with no data."""
    s = text.strip()
    if not s:
        raise ExprError("missing application name")
    p = s.find("(")
    if p < 0:
        return s, ""
    app = s[:p]
    if "${" in app or "$[" in app:
        return s, ""
    app = app.strip()
    if not app:
        raise ExprError(f"missing application name before '(' in {text!r}")
    end = s.rfind(")")
    if end < p:
        raise ExprError(f"no closing ')' for application {app}({s[p + 1 :]}")
    if s[end + 1 :].strip():
        raise ExprError(f"unexpected text {s[end + 1 :]!r} after {app}(...)")
    return app, s[p + 1 : end]
