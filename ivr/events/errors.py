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

    def __init__(self, message: str, *, retryable: bool = True, status: int | None = None,
                 backend_down: bool | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable  # "not now" (retried by the time budget) vs "wrong"
        self.status = status
        # the backend took nothing (no answer, 5xx, 408, 429, 401/403): counts toward an
        # outage; a per-event "not yet" (409 out_of_order) does not
        self.backend_down = retryable if backend_down is None else backend_down
        self.retry_after = retry_after  # seconds, from a Retry-After header
