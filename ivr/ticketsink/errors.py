"""Exception tree of the reference ticket backend and its client.

:class:`SinkError` is a :class:`~ivr.events.errors.EventsError` (the ticket backend's
contract belongs to call events), so code that catches the call-event errors catches it.
"""

from __future__ import annotations

from ivr.events.errors import EventsError


class SinkError(EventsError):
    """A request to the ticket backend's read or admin API failed (names method, path and
    the HTTP status)."""
