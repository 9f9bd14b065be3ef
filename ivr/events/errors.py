"""Exception tree of the call-event layer."""

from __future__ import annotations

from ivr.errors import IvrError


class EventsError(IvrError):
    """Base of every call-event error."""


class EventValidationError(EventsError, ValueError):
    """A call event does not match the schema (names the event and the field)."""


class SignatureError(EventsError):
    """A request signature is missing, malformed, too old or wrong."""


class DeliveryError(EventsError):
    """One delivery attempt to the ticket backend failed (retryable or not)."""

    def __init__(self, message: str, *, retryable: bool = True, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
