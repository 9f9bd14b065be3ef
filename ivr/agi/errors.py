"""Exception tree of the AGI layer."""

from __future__ import annotations

from ivr.errors import IvrError


class AGIError(IvrError):
    """Base of every AGI-layer error."""


class AGIProtocolError(AGIError):
    """Asterisk (or whoever connected) sent something that is not AGI."""


class AGIHeaderError(AGIProtocolError):
    """The ``agi_*`` header block was too large, malformed, or never ended."""


class AGIArgumentError(AGIError, ValueError):
    """A command argument cannot be sent safely (a line break or NUL would end the
    command and let the rest run as another one)."""


class AGICommandError(AGIError):
    """Asterisk refused a command: ``510`` unknown command, ``520`` usage error…"""

    def __init__(self, command: str, code: int, text: str) -> None:
        self.command = command
        self.code = code
        self.text = text
        super().__init__(f"{command!r} refused: {code} {text.splitlines()[0] if text else ''}")


class AGIHangup(AGIError):
    """The caller hung up: the channel is gone (async ``HANGUP``, ``511``, or
    ``result=-1`` from a command that needs a live channel).  IVR code catches this to
    end a call cleanly."""


class AGIConnectionClosed(AGIHangup):
    """Asterisk closed the FastAGI socket (the channel left AGI)."""


class AGITimeout(AGIError, TimeoutError):
    """No reply from Asterisk within the command's timeout."""
