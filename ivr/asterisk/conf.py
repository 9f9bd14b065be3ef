"""Asterisk's generic config syntax (extensions.conf, queues.conf, manager.conf, ...).

Follows ``main/config.c`` (``config_text_file_load`` and ``process_text_line``):

* ``;`` starts a comment, ``\\;`` is a literal ``;`` (the backslash is dropped);
  ``;--`` ... ``--;`` is a block comment that may span lines and nest.
* Each remaining line is stripped of surrounding whitespace; empty lines are skipped.
* ``[name]``, ``[name](!)`` (template), ``[name](tpl1,tpl2)`` (inherit), ``[name](+)``
  (append to an existing category).  The name is taken verbatim between ``[`` and ``]``.
* ``key = value``, ``key => value`` (the "object" form), ``key += value`` (append to the last
  value of ``key``).  Key and value are stripped.  A leading ``\\`` escapes the key's first char.
* ``#include file`` / ``#tryinclude file`` (quoted with ``"..."`` or ``<...>`` or bare, globs
  allowed), resolved relative to the including file's directory.

Where Asterisk only logs a warning and skips a line (no ``=``, unknown directive, text after
``]``), this parser raises :class:`ConfSyntaxError` instead: a silently dropped line in a
hotline's dialplan is a bug we want to see.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ivr.asterisk.errors import ConfRenderError, ConfSyntaxError

__all__ = [
    "Category",
    "Item",
    "browse",
    "find_category",
    "load_conf",
    "parse_conf",
    "render_conf",
    "resolve_items",
]

_WS = " \t\n\v\f\r"  # C isspace() in the C locale, as ast_strip uses
_MAX_INCLUDE_DEPTH = 32
_MAX_NESTED_COMMENTS = 128  # Asterisk's MAX_NESTED_COMMENTS


@dataclass(frozen=True, slots=True)
class Item:
    """One ``key = value`` / ``key => value`` line.  ``col``/``key_col`` are the 1-based
    columns of the value's/key's first character in the source line (for later layers'
    error messages).  Equality ignores neither; compare ``(key, op, value)`` for content."""

    key: str
    op: str  # "=" or "=>"
    value: str
    file: str = "<string>"
    line: int = 0
    col: int = 1
    key_col: int = 1


@dataclass(slots=True)
class Category:
    """A ``[name]`` section.  ``items`` are the category's own items in file order;
    use :func:`resolve_items` to get them with inherited template items first."""

    name: str
    templates: list[str] = field(default_factory=list)
    is_template: bool = False
    items: list[Item] = field(default_factory=list)
    file: str = "<string>"
    line: int = 0

    def get(self, key: str, default: str | None = None) -> str | None:
        """Value of the last own item named ``key`` (case-sensitive), else ``default``."""
        for item in reversed(self.items):
            if item.key == key:
                return item.value
        return default


class _Text:
    """A line's significant characters with their original 1-based columns."""

    __slots__ = ("chars", "cols")

    def __init__(self) -> None:
        self.chars: list[str] = []
        self.cols: list[int] = []

    def add(self, ch: str, col: int) -> None:
        self.chars.append(ch)
        self.cols.append(col)

    def stripped(self) -> tuple[str, list[int]]:
        s = "".join(self.chars)
        left = len(s) - len(s.lstrip(_WS))
        right = len(s.rstrip(_WS))
        return s[left:right], self.cols[left:right]


class _Parser:
    def __init__(self, include_dir: Path | None) -> None:
        self.categories: list[Category] = []
        self.current: Category | None = None
        self.include_dir = include_dir
        self.stack: list[str] = []

    # -- comments -------------------------------------------------------------------------

    def feed(self, text: str, file: str, base: Path | None) -> None:
        if len(self.stack) >= _MAX_INCLUDE_DEPTH:
            raise ConfSyntaxError(file, 1, 1, f"#include nested deeper than {_MAX_INCLUDE_DEPTH}")
        self.stack.append(file)
        depth = 0
        opened: list[tuple[int, int]] = []
        lines = text.split("\n")
        for lineno, raw in enumerate(lines, start=1):
            if "\x00" in raw:
                raise ConfSyntaxError(file, lineno, raw.index("\x00") + 1, "NUL byte in config")
            out = _Text()
            i = 0
            n = len(raw)
            floor = 0  # Asterisk's new_buf: '--;' must lie wholly after it
            while i < n:
                ch = raw[i]
                if ch != ";":
                    if depth == 0:
                        out.add(ch, i + 1)
                    i += 1
                    continue
                # ch == ';'
                if (
                    i > 0
                    and raw[i - 1] == "\\"
                    and (depth > 0 or (out.chars and out.chars[-1] == "\\"))
                ):
                    if depth == 0:
                        out.chars[-1] = ";"
                        out.cols[-1] = i + 1
                    i += 1
                    continue
                if raw[i + 1 : i + 3] == "--" and raw[i + 3 : i + 4] != "-":
                    if depth >= _MAX_NESTED_COMMENTS:
                        raise ConfSyntaxError(file, lineno, i + 1, "block comments nested too deep")
                    depth += 1
                    opened.append((lineno, i + 1))
                    i += 3
                    floor = i
                    continue
                if i - 2 >= floor and raw[i - 2 : i] == "--":
                    if depth == 0:
                        raise ConfSyntaxError(
                            file,
                            lineno,
                            i - 1,
                            "'--;' closes a block comment but none is open "
                            "(Asterisk would ignore the rest of the file)",
                        )
                    depth -= 1
                    opened.pop()
                    i += 1
                    floor = i
                    continue
                if depth == 0:
                    break  # line comment: rest of the line is ignored
                i += 1
            s, cols = out.stripped()
            if s:
                self.line(s, cols, file, lineno, base)
        if depth:
            line, col = opened[0]
            raise ConfSyntaxError(file, line, col, "unterminated block comment ';--'")
        self.stack.pop()

    # -- one significant line -------------------------------------------------------------

    def line(self, s: str, cols: list[int], file: str, lineno: int, base: Path | None) -> None:
        if s[0] == "[":
            self.category(s, cols, file, lineno)
        elif s[0] == "#":
            self.directive(s, cols, file, lineno, base)
        else:
            self.item(s, cols, file, lineno)

    def category(self, s: str, cols: list[int], file: str, lineno: int) -> None:
        close = s.find("]")
        if close < 0:
            raise ConfSyntaxError(file, lineno, cols[0], "no closing ']' for category header")
        name = s[1:close]
        if not name:
            raise ConfSyntaxError(file, lineno, cols[0], "empty category name '[]'")
        rest = s[close + 1 :]
        opts: list[str] = []
        if rest:
            if rest[0] != "(":
                raise ConfSyntaxError(
                    file, lineno, cols[close + 1], f"unexpected text {rest!r} after ']'"
                )
            end = rest.find(")")
            if end < 0:
                raise ConfSyntaxError(
                    file, lineno, cols[close + 1], "no closing ')' for category options"
                )
            if rest[end + 1 :]:
                raise ConfSyntaxError(
                    file,
                    lineno,
                    cols[close + 2 + end],
                    f"unexpected text {rest[end + 1 :]!r} after ')'",
                )
            opts = rest[1:end].split(",")
        cat = Category(name=name, file=file, line=lineno)
        append = False
        opt_col = cols[close + 1] + 1 if rest else cols[0]
        for opt in opts:
            if opt == "!":
                cat.is_template = True
            elif opt.startswith("+"):
                append = True
            else:
                if find_category(self.categories, opt) is None:
                    raise ConfSyntaxError(
                        file,
                        lineno,
                        opt_col,
                        f"category [{name}] inherits from [{opt}], which is not defined before it",
                    )
                cat.templates.append(opt)
            opt_col += len(opt) + 1
        if append:
            existing = find_category(self.categories, name)
            if existing is None:
                raise ConfSyntaxError(
                    file,
                    lineno,
                    cols[0],
                    f"[{name}](+) appends to category [{name}], which does not exist",
                )
            existing.is_template = existing.is_template or cat.is_template
            existing.templates.extend(t for t in cat.templates if t not in existing.templates)
            self.current = existing
            return
        self.categories.append(cat)
        self.current = cat

    def directive(self, s: str, cols: list[int], file: str, lineno: int, base: Path | None) -> None:
        j = 1
        while j < len(s) and ord(s[j]) > 32:
            j += 1
        name = s[1:j]
        arg = s[j:].strip(_WS)
        lname = name.lower()
        if lname not in ("include", "tryinclude"):
            what = (
                "#exec is not supported"
                if lname in ("exec", "tryexec")
                else (f"unknown directive '#{name}'")
            )
            raise ConfSyntaxError(file, lineno, cols[0], what)
        if not arg:
            raise ConfSyntaxError(file, lineno, cols[0], f"directive '#{name}' needs a file name")
        if arg[0] in '"<':
            quote = '"' if arg[0] == '"' else ">"
            if len(arg) > 1 and arg[-1] == quote:
                arg = arg[1:-1]
        self.include(arg, lname == "tryinclude", cols[0], file, lineno, base)

    def include(
        self, arg: str, optional: bool, col: int, file: str, lineno: int, base: Path | None
    ) -> None:
        if base is None and not os.path.isabs(arg):
            if self.include_dir is None:
                raise ConfSyntaxError(
                    file,
                    lineno,
                    col,
                    f"#include {arg!r}: relative path but no directory to resolve it against",
                )
            base = self.include_dir
        path = arg if os.path.isabs(arg) else str((base or Path(".")) / arg)
        matches = sorted(glob.glob(path)) if glob.has_magic(path) else [path]
        found = False
        for m in matches:
            p = Path(m)
            try:
                text = p.read_bytes().decode("utf-8")
            except FileNotFoundError:
                continue
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfSyntaxError(
                    file, lineno, col, f"cannot read #include {arg!r}: {exc}"
                ) from exc
            key = str(p.resolve())
            if key in (str(Path(f).resolve()) for f in self.stack if not f.startswith("<")):
                raise ConfSyntaxError(
                    file, lineno, col, f"#include {arg!r} includes itself (cycle)"
                )
            found = True
            self.feed(text, str(p), p.parent)
        if not found and not optional:
            raise ConfSyntaxError(file, lineno, col, f"#include file {arg!r} does not exist")

    def item(self, s: str, cols: list[int], file: str, lineno: int) -> None:
        if self.current is None:
            raise ConfSyntaxError(
                file, lineno, cols[0], "no category: a '[name]' header must come first"
            )
        escaped = s[0] == "\\"
        start = 1 if escaped else 0
        if escaped and (len(s) < 2 or ord(s[1]) < 33):
            raise ConfSyntaxError(file, lineno, cols[0], "invalid escape '\\' at start of line")
        eq = s.find("=", start + (1 if escaped else 0))
        if eq < 0:
            raise ConfSyntaxError(file, lineno, cols[0], f"no '=' in line {s!r}")
        op = "="
        vstart = eq + 1
        if eq > start and s[eq - 1] == "+":
            key = s[start : eq - 1].strip(_WS)
            raw_value = s[vstart:]
            if not key:
                raise ConfSyntaxError(file, lineno, cols[0], "no variable name before '+='")
            items = self.current.items
            for k in range(len(items) - 1, -1, -1):
                if items[k].key == key:
                    items[k] = replace(items[k], value=(items[k].value + raw_value).strip(_WS))
                    return
        else:
            key = s[start:eq].strip(_WS)
            if vstart < len(s) and s[vstart] == ">":
                op = "=>"
                vstart += 1
        if not key:
            raise ConfSyntaxError(file, lineno, cols[0], "no variable name before '='")
        raw = s[vstart:]
        value = raw.strip(_WS)
        lead = len(raw) - len(raw.lstrip(_WS))
        vcol = cols[vstart + lead] if value else (cols[vstart - 1] + 1)
        kstart = start + len(s[start:]) - len(s[start:].lstrip(_WS))
        self.current.items.append(Item(key, op, value, file, lineno, vcol, cols[kstart]))


def parse_conf(
    text: str, file: str = "<string>", *, include_dir: str | Path | None = None
) -> list[Category]:
    """Parse config ``text`` into categories in file order.

    ``file`` names the text in errors and in ``Item.file``.  Relative ``#include`` paths are
    resolved against ``include_dir`` (default: the directory of ``file`` unless ``file`` is
    ``<...>``).  Raises :class:`ConfSyntaxError`.
    """
    if include_dir is None and not file.startswith("<"):
        include_dir = Path(file).parent
    parser = _Parser(Path(include_dir) if include_dir is not None else None)
    parser.feed(text, file, Path(include_dir) if include_dir is not None else None)
    return parser.categories


def load_conf(path: str | Path) -> list[Category]:
    """Read and parse a config file (UTF-8); includes are relative to its directory."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfSyntaxError(str(p), 0, 0, f"cannot read config file: {exc}") from exc
    return parse_conf(text, str(p), include_dir=p.parent)


def find_category(
    categories: Sequence[Category], name: str, *, before: Category | None = None
) -> Category | None:
    """First category called ``name`` (only those listed before ``before`` if given)."""
    for cat in categories:
        if cat is before:
            return None
        if cat.name == name:
            return cat
    return None


def browse(categories: Sequence[Category]) -> list[tuple[Category, list[Item]]]:
    """What a module reading the file sees (``ast_category_browse`` + ``ast_variable_browse``):
    every category that is not a template (``[t](!)`` is ``ignored`` in ``main/config.c``),
    in file order, each with its resolved items (inherited ones first)."""
    return [(c, resolve_items(categories, c)) for c in categories if not c.is_template]


def resolve_items(categories: Sequence[Category], category: Category) -> list[Item]:
    """``category``'s items with inherited ones first, as Asterisk's ``ast_category_inherit``:
    for each template in order, the template's own resolved items, then the category's own."""
    return _resolve(categories, category, ())


def _resolve(
    categories: Sequence[Category], category: Category, seen: tuple[int, ...]
) -> list[Item]:
    if id(category) in seen:
        raise ConfSyntaxError(
            category.file, category.line, 1, f"template inheritance cycle at [{category.name}]"
        )
    out: list[Item] = []
    for tpl in category.templates:
        base = find_category(categories, tpl, before=category)
        if base is None:
            base = find_category(categories, tpl)
        if base is None:
            raise ConfSyntaxError(
                category.file,
                category.line,
                1,
                f"category [{category.name}] inherits from unknown [{tpl}]",
            )
        out.extend(_resolve(categories, base, (*seen, id(category))))
    out.extend(category.items)
    return out


# -- writer -------------------------------------------------------------------------------


def _check_text(what: str, s: str) -> None:
    for bad in ("\n", "\r", "\x00"):
        if bad in s:
            raise ConfRenderError(f"{what} {s!r} contains {bad!r}, which config text cannot hold")


def _render_key(key: str) -> str:
    _check_text("key", key)
    if not key or key != key.strip(_WS):
        raise ConfRenderError(f"key {key!r} is empty or has surrounding whitespace")
    if "=" in key or ";" in key:
        raise ConfRenderError(f"key {key!r} contains '=' or ';'")
    if key[0] in "[#\\":
        key = "\\" + key
    return key


def _render_value(value: str) -> str:
    _check_text("value", value)
    if value != value.strip(_WS):
        raise ConfRenderError(f"value {value!r} has surrounding whitespace, which Asterisk strips")
    return value.replace(";", "\\;")


def render_conf(categories: Iterable[Category], header_comment: str | None = None) -> str:
    """Write categories as Asterisk config text that :func:`parse_conf` reads back equal
    (names, templates, items; not file/line).  ``;`` in values is escaped as ``\\;``.
    Raises :class:`ConfRenderError` for text Asterisk cannot represent (newlines, surrounding
    whitespace, ``]`` in a category name...)."""
    out: list[str] = []
    if header_comment:
        for line in header_comment.splitlines():
            _check_text("comment", line)
            out.append(f"; {line}".rstrip(_WS))
        out.append("")
    seen: set[str] = set()
    for cat in categories:
        _check_text("category name", cat.name)
        if not cat.name or any(c in cat.name for c in "];"):
            raise ConfRenderError(f"category name {cat.name!r} is empty or contains ']' or ';'")
        opts = (["!"] if cat.is_template else []) + list(cat.templates)
        for t in cat.templates:
            _check_text("template name", t)
            if not t or t == "!" or t.startswith("+") or any(c in t for c in ",);"):
                raise ConfRenderError(f"template name {t!r} cannot be written in '(...)'")
            if t not in seen:
                raise ConfRenderError(
                    f"[{cat.name}] inherits from [{t}], which must be written before it"
                )
        seen.add(cat.name)
        head = f"[{cat.name}]" + (f"({','.join(opts)})" if opts else "")
        out.append(head)
        for item in cat.items:
            if item.op not in ("=", "=>"):
                raise ConfRenderError(f"operator {item.op!r} of {item.key!r} is not '=' or '=>'")
            value = _render_value(item.value)
            out.append(f"{_render_key(item.key)} {item.op} {value}".rstrip(_WS))
        out.append("")
    return "\n".join(out)
