"""Ticket-status lookup by caller number (HTTP GET to the ticket backend, aiohttp).

``GET <url>?caller=<number>&exclude_call=<call id>`` with a timeout: tickets of that
caller other than the one of the call in progress (the ticket backend has it from the
call's first event, before the IVR asks; counting it would make every caller a repeat
caller).  The answer is JSON; any of these shapes
is understood (the backend is configured per site):

* ``{"open": 2}`` or ``{"open_tickets": 2}`` — the number of open tickets;
* ``{"tickets": [{"status": "processing"}, …]}`` — a ticket whose status is not one of
  :data:`CLOSED_STATUSES` is open;
* HTTP 404 — no ticket for that number.

Anything else (timeout, connection refused, 5xx, 401/403, not JSON) is ``unavailable``:
the IVR speaks its fallback prompt and routes the caller without the priority bonus.

The request is signed like every request to the ticket backend (scheme v2,
:mod:`ivr.events.signing`: method ``GET``, the path with its query as sent, timestamp,
nonce, the hash of the empty body) with the ``[tickets]`` secret, so the backend can refuse
anyone else asking whether a number has tickets; the reference sink does (401).  Without
a secret the request goes unsigned (a backend that does not authenticate it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import aiohttp
from yarl import URL

from ivr.events.signing import request_target, signed_headers
from ivr.flow.engine import LookupStatus
from ivr.log import event
from ivr.metrics import METRICS
from ivr.privacy import mask_number

log = logging.getLogger(__name__)

CLOSED_STATUSES = frozenset({"closed", "resolved", "done", "finished", "cancelled",
                             "已办结", "已关闭", "已撤销"})


class TicketLookup(Protocol):
    async def status(self, caller: str, exclude_call: str = "") -> LookupStatus: ...


def open_count(body: Any) -> int | None:
    """Open tickets in a backend answer, ``None`` when the shape is not understood."""
    if not isinstance(body, dict):
        return None
    for key in ("open", "open_tickets"):
        value = body.get(key)
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
    tickets = body.get("tickets")
    if isinstance(tickets, list):
        return sum(1 for t in tickets
                   if isinstance(t, dict) and str(t.get("status", "")).lower()
                   not in CLOSED_STATUSES)
    return None


class HttpTicketLookup:
    """Create inside a running event loop; ``await close()`` at shutdown.  ``secret``:
    the ``[tickets]`` HMAC key each request is signed with (None: unsigned)."""

    def __init__(self, url: str, timeout: float = 2.0,
                 session: aiohttp.ClientSession | None = None, *,
                 secret: bytes | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self.secret = secret or None
        self._session = session
        self._own = session is None

    async def close(self) -> None:
        if self._own and self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def status(self, caller: str, exclude_call: str = "") -> LookupStatus:
        if not caller:
            return "none"
        params = {"caller": caller}
        if exclude_call:
            params["exclude_call"] = exclude_call
        try:
            url = URL(self.url).extend_query(params)
            # signed as sent: the path and query of this URL (aiohttp does not re-quote
            # a URL object), a fresh timestamp and nonce for every lookup
            headers = (None if self.secret is None else
                       signed_headers(self.secret, "GET", request_target(url)))
            async with asyncio.timeout(self.timeout):
                async with self._client().get(url, headers=headers) as resp:
                    if resp.status == 404:
                        return "none"
                    if resp.status in (401, 403):
                        raise ValueError(
                            f"HTTP {resp.status}: the ticket backend refused the request's "
                            f"signature (check the [tickets] secret and the clock)")
                    if resp.status != 200:
                        raise ValueError(f"HTTP {resp.status}")
                    body = await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            METRICS.inc("ivr.ticket_lookup.unavailable")
            event(log, logging.WARNING, "ivr.ticket_lookup.failed", caller=mask_number(caller),
                  error=f"{type(exc).__name__}: {exc}"[:200])
            return "unavailable"
        count = open_count(body)
        if count is None:
            METRICS.inc("ivr.ticket_lookup.unavailable")
            event(log, logging.WARNING, "ivr.ticket_lookup.bad_answer",
                  caller=mask_number(caller))
            return "unavailable"
        return "found" if count > 0 else "none"
