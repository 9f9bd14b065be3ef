"""Exception tree of the Asterisk configuration layer."""

from __future__ import annotations

from ivr.errors import IvrError


class AsteriskConfError(IvrError):
    """Base of every error raised by :mod:`ivr.asterisk`."""


class ConfSyntaxError(AsteriskConfError):
    """Bad configuration text; ``str()`` is ``path:line:col: error: message``."""

    def __init__(self, file: str, line: int, col: int, message: str) -> None:
        self.file = file
        self.line = line
        self.col = col
        self.message = message
        super().__init__(f"{file}:{line}:{col}: error: {message}")

    def __reduce__(self) -> tuple[type[ConfSyntaxError], tuple[str, int, int, str]]:
        return (ConfSyntaxError, (self.file, self.line, self.col, self.message))


class ConfRenderError(AsteriskConfError, ValueError):
    """A category or item cannot be written as Asterisk config text without changing meaning."""


class ExprError(AsteriskConfError):
    """A dialplan expression, substitution or application call could not be evaluated."""
