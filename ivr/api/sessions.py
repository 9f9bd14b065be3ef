"""Browser sessions: a token is exchanged once (``POST /api/session``, the token in the
body) for a session cookie, so the web console never keeps the token in the page.

* The cookie ``ivr_session`` is ``HttpOnly`` (no script reads it), ``SameSite=Strict``
  (a browser does not send it with a request another site starts) and ``Path=/``;
  ``Secure`` when the request came over HTTPS.
* Redis keeps only the SHA-256 of the session id (``{prefix}:sessions:<hash>``: the
  token's id and the times), with an expiry (:data:`SESSION_TTL_S`).  Every request
  re-reads the token: revoking it ends its sessions at once.
* CSRF (synchronizer token): every mutating request made with the cookie must carry
  ``X-CSRF-Token``, the HMAC-SHA-256 of a fixed label under the session id — the page
  gets it in the login answer and from ``GET /api/session`` (a page of another site
  cannot read those answers), Redis never holds it, and it changes with the session.
  A request whose ``Origin`` names another host is refused too.
* Requests with ``Authorization: Bearer`` do not use the cookie and need no CSRF token
  (a browser never adds that header on its own).

Pure of HTTP apart from reading the request's cookie and headers; the routes are in
:mod:`ivr.api.session_routes`, the check in the auth middleware (:mod:`ivr.api.http`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis

from ivr.api.auth import Principal, TokenStore

COOKIE = "ivr_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL_S = 12 * 3600  # one shift; log in again after it
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CSRF_LABEL = b"ivr-console-csrf-v1"


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def csrf_for(session_id: str) -> str:
    """The CSRF token of a session (derived from its id; never stored)."""
    mac = hmac.new(session_id.encode(), _CSRF_LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    csrf: str
    created: float
    expires: float


class SessionStore:
    """Sessions in Redis, by the hash of their id, expiring on their own."""

    def __init__(self, redis: aioredis.Redis, tokens: TokenStore, prefix: str = "ivr:api",
                 ttl_s: int = SESSION_TTL_S, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.tokens = tokens
        self.prefix = f"{prefix}:sessions"
        self.ttl_s = ttl_s
        self.clock = clock

    def _key(self, session_id: str) -> str:
        return f"{self.prefix}:{_digest(session_id)}"

    async def create(self, who: Principal) -> tuple[str, Session]:
        """A new session for ``who``: ``(session id, session)``; the id goes only into
        the cookie."""
        session_id = secrets.token_urlsafe(32)
        now = self.clock()
        record = {"token_id": who.token_id, "created": round(now, 3),
                  "expires": round(now + self.ttl_s, 3)}
        await self.redis.set(self._key(session_id), json.dumps(record), ex=self.ttl_s)
        return session_id, Session(who, csrf_for(session_id), now, now + self.ttl_s)

    async def get(self, session_id: str) -> Session | None:
        """The live session of this id (its token still valid), or None."""
        if not session_id or len(session_id) > 128:
            return None
        raw = await self.redis.get(self._key(session_id))
        if raw is None:
            return None
        rec = json.loads(raw)
        who = await self.tokens.principal_of(str(rec.get("token_id", "")))
        if who is None:  # the token was revoked: its sessions end with it
            await self.redis.delete(self._key(session_id))
            return None
        return Session(who, csrf_for(session_id), float(rec.get("created", 0)),
                       float(rec.get("expires", 0)))

    async def delete(self, session_id: str) -> bool:
        return bool(await self.redis.delete(self._key(session_id)))


def csrf_ok(session_id: str, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(csrf_for(session_id), sent)


def same_origin(headers: Mapping[str, str], host: str) -> bool:
    """No ``Origin`` header (same-origin GETs, non-browser clients), or one naming this
    host."""
    origin = headers.get("Origin")
    return origin is None or origin.split("://", 1)[-1] == host


def cookie_options(secure: bool, max_age: int = SESSION_TTL_S) -> dict[str, object]:
    return {"httponly": True, "samesite": "Strict", "path": "/", "secure": secure,
            "max_age": max_age}
