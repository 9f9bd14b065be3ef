"""AMI event filters as Asterisk 20 applies them (``manager.c``), without I/O: the emulator's.

A filter is what ``manager.conf`` writes as ``eventfilter[(criteria)] = pattern`` and the
``Filter`` action sends as ``MatchCriteria`` + ``Filter``:

* **legacy** ``eventfilter = <regex>`` (``!`` in front excludes): a POSIX extended
  regular expression searched in the whole event text (``Event: …\\r\\nPrivilege: …``);
* **advanced** ``eventfilter(action(include|exclude),name(Event),header(Header),
  method(regex|exact|starts_with|ends_with|contains|none)) = [pattern]``: the event's
  name is compared first; with ``header`` only that header's values are matched (each
  line starting with ``Header:``, blanks after the colon skipped, ``\\r`` dropped).

:func:`parse_filter` accepts and refuses exactly what ``manager_add_filter`` does, with
its reasons (:class:`FilterFormatError`, :class:`FilterCompileError`).  A
:class:`FilterSet` answers ``should_send_event``: no filters → everything; include
filters only → an event matching any of them; exclude only → an event matching none;
both → included and then not excluded.

POSIX ERE is run with Python's :mod:`re` after translating bracket classes such as
``[[:digit:]]``; ``.`` matches a newline (no ``REG_NEWLINE``), ``^`` is the start of the
text.  GNU-only escapes that Python reads differently (``\\<``, ``\\>``) are refused
as not compiling rather than silently changed.

The emulator applies them per session (``Filter`` action, ``manager.conf``); the product
only builds the one ``Filter`` the bridge sends, :func:`ivr.ami.include_filter.include_filter`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

from ivr.ami.errors import AMIError

METHODS = ("regex", "exact", "starts_with", "ends_with", "contains", "none")

_POSIX_CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z",
    "lower": "a-z", "space": r" \t\r\n\v\f", "blank": r" \t", "xdigit": "0-9A-Fa-f",
    "punct": r"!-/:-@\[-`{-~", "cntrl": r"\x00-\x1f\x7f", "print": r"\x20-\x7e",
    "graph": r"\x21-\x7e",
}
_CLASS_RE = re.compile(r"\[:([a-z]+):\]")


class FilterError(AMIError):
    """A filter Asterisk would refuse; ``message`` is the ``Filter`` action's reply."""

    message = "Internal Error. Failed adding filter."


class FilterFormatError(FilterError):
    message = "Filter was formatted incorrectly.  Check the syntax of the filter given."


class FilterCompileError(FilterError):
    message = "Filter did not compile.  Check the syntax of the filter given."


@dataclass(frozen=True, slots=True)
class EventFilter:
    """One parsed filter (see the module docstring)."""

    criteria: str
    pattern: str
    exclude: bool
    name: bytes | None
    header: bytes | None
    method: str
    _regex: re.Pattern[bytes] | None = field(default=None, repr=False, compare=False)
    _text: bytes = field(default=b"", repr=False, compare=False)

    def matches(self, name: bytes, data: bytes) -> bool:
        """``filter_cmp_fn``: does the event (its name, its whole text) match?"""
        if self.name is not None and name != self.name:
            return False
        if self.header is None:
            return self._match(data)
        header = self.header
        for line in data.split(b"\n"):
            if line.startswith(header):
                value = line[len(header):].rstrip(b"\r").lstrip(b" \t")
                if value and self._match(value):
                    return True
        return False

    def _match(self, text: bytes) -> bool:
        method = self.method
        if method == "regex":
            assert self._regex is not None
            return self._regex.search(text) is not None
        if method == "none":
            return True
        if method == "exact":
            return text == self._text
        if method == "starts_with":
            return text.startswith(self._text)
        if method == "ends_with":
            return text.endswith(self._text)
        return self._text in text  # contains


def _posix_to_python(pattern: str) -> str:
    if "\\<" in pattern or "\\>" in pattern:
        raise FilterCompileError(f"regex {pattern!r}: GNU word anchors \\< \\> not supported")

    def cls(m: re.Match[str]) -> str:
        try:
            return _POSIX_CLASSES[m.group(1)]
        except KeyError:
            raise FilterCompileError(
                f"regex {pattern!r}: unknown character class [:{m.group(1)}:]") from None

    return _CLASS_RE.sub(cls, pattern)


def compile_regex(pattern: str) -> re.Pattern[bytes]:
    """``regcomp(REG_EXTENDED | REG_NOSUB)`` as far as Python's engine allows."""
    text = _posix_to_python(pattern)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return re.compile(text.encode("utf-8"), re.DOTALL)
    except (re.error, FutureWarning, DeprecationWarning) as exc:
        raise FilterCompileError(f"regex {pattern!r} does not compile: {exc}") from None


def parse_filter(criteria: str, pattern: str) -> EventFilter:
    """``manager_add_filter(criteria, pattern)``: ``criteria`` is ``eventfilter`` or
    ``eventfilter(<options>)`` (a manager.conf key, or ``Filter``'s MatchCriteria
    wrapped so); raises :class:`FilterFormatError` / :class:`FilterCompileError`."""
    if not criteria:
        raise FilterFormatError("missing criteria")
    exclude = False
    if pattern.startswith("!"):
        exclude = True
        pattern = pattern[1:]
    method = "regex"
    name: bytes | None = None
    header: bytes | None = None
    start = criteria.find("(")
    if start < 0 and not pattern:
        raise FilterFormatError(f"'{criteria} = {pattern}': legacy filter with no pattern")
    if start >= 0:
        method = "none"
        options = criteria[start + 1:].strip()
        if not options or not options.endswith(")"):
            raise FilterFormatError(f"'{criteria}': filter options not formatted correctly")
        found: set[str] = set()
        for option in (o for o in re.split(r"[ ,)]+", options) if o):
            value = option[option.find("(") + 1:].strip() if "(" in option else ""
            if option.startswith("action"):
                if "(" not in option:
                    raise FilterFormatError(f"'{criteria}': 'action' not formatted correctly")
                if value == "include":
                    exclude = False
                elif value == "exclude":
                    exclude = True
                else:
                    raise FilterFormatError(f"'{criteria}': 'action' option {value!r} unknown")
                found.add("action")
            elif option.startswith("name"):
                if not value:
                    raise FilterFormatError(f"'{criteria}': 'name' not formatted correctly")
                name = value.encode("utf-8")
                found.add("name")
            elif option.startswith("header"):
                if not value:
                    raise FilterFormatError(f"'{criteria}': 'header' not formatted correctly")
                header = (value if value.endswith(":") else value + ":").encode("utf-8")
                found.add("header")
            elif option.startswith("method"):
                if value not in METHODS:
                    raise FilterFormatError(f"'{criteria}': 'method' option {value!r} unknown")
                method = value
                found.add("method")
            else:
                raise FilterFormatError(f"'{criteria}': filter option {option!r} unknown")
        if not found:
            raise FilterFormatError(f"'{criteria}': no action, name, header or method")
        if not pattern and method != "none":
            raise FilterFormatError(f"'{criteria}': method {method!r} needs a pattern")
        if pattern and method == "none":
            raise FilterFormatError(f"'{criteria}': method 'none' takes no pattern")
        if name is None and header is None and method == "none":
            raise FilterFormatError(f"'{criteria}': no name or header and no pattern")
    regex = compile_regex(pattern) if pattern and method == "regex" else None
    return EventFilter(criteria, pattern, exclude, name, header, method, regex,
                       pattern.encode("utf-8"))


class FilterSet:
    """A session's include and exclude filters (``should_send_event``).  Filters that
    name an event are indexed by it, so an event is only compared with those that can
    match it."""

    __slots__ = ("_include", "_exclude", "_has_include", "_has_exclude")

    def __init__(self, filters: Iterable[EventFilter] = ()) -> None:
        self._include: tuple[dict[bytes, list[EventFilter]], list[EventFilter]] = ({}, [])
        self._exclude: tuple[dict[bytes, list[EventFilter]], list[EventFilter]] = ({}, [])
        self._has_include = self._has_exclude = False  # asked once per event: kept, not computed
        for f in filters:
            self.add(f)

    def add(self, f: EventFilter) -> None:
        by_name, anyname = self._exclude if f.exclude else self._include
        if f.name is None:
            anyname.append(f)
        else:
            by_name.setdefault(f.name, []).append(f)
        if f.exclude:
            self._has_exclude = True
        else:
            self._has_include = True

    def __bool__(self) -> bool:
        return self._has_include or self._has_exclude

    def __len__(self) -> int:
        return sum(len(v) for d in (self._include[0], self._exclude[0]) for v in d.values()) \
            + len(self._include[1]) + len(self._exclude[1])

    @staticmethod
    def _any(side: tuple[dict[bytes, list[EventFilter]], list[EventFilter]], name: bytes,
             data: bytes) -> bool:
        for f in side[0].get(name, ()):
            if f.matches(name, data):
                return True
        return any(f.matches(name, data) for f in side[1])

    def allows(self, data: bytes) -> bool:
        """Should this event frame (``Event: Name\\r\\n…``) be sent to the session?"""
        include, exclude = self._has_include, self._has_exclude
        if not include and not exclude:
            return True
        end = data.find(b"\r\n")
        name = data[7:end] if data.startswith(b"Event: ") and end > 0 else b""
        if include and not self._any(self._include, name, data):
            return False
        return not (exclude and self._any(self._exclude, name, data))


__all__ = ["EventFilter", "FilterCompileError", "FilterError", "FilterFormatError",
           "FilterSet", "METHODS", "compile_regex", "parse_filter"]
