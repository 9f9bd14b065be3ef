"""Routes of browser sessions (:mod:`ivr.api.sessions`): log in with a token in the body,
read the session (and its CSRF token), log out.  Imported by :mod:`ivr.app` so the routes
exist before :func:`ivr.api.http.install`."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from ivr.api.auth import Principal
from ivr.api.errors import NotFound, Unauthorized, Unavailable
from ivr.api.http import API, body, json_response, principal, refuse_if_throttled, route
from ivr.api.sessions import COOKIE, Session, cookie_options
from ivr.log import event as log_event
from ivr.metrics import METRICS

log = logging.getLogger("ivr.api.sessions")


def _view(session: Session) -> dict[str, Any]:
    who = session.principal
    return {"token_id": who.token_id, "role": who.role, "name": who.name,
            "agent": who.agent, "csrf": session.csrf,
            "created": round(session.created, 3), "expires": round(session.expires, 3)}


async def _audit(request: web.Request, who: Principal, action: str) -> None:
    st = request.app[API]
    if st.audit is not None:
        try:
            await st.audit.record(who, action, who.token_id, "ok", request.remote or "")
        except Exception:
            log.error("api.audit_failed", exc_info=True, extra={"fields": {
                "action": action, "token_id": who.token_id}})


@route("POST", "/api/session", None, token_in="body")
async def login(request: web.Request) -> web.StreamResponse:
    """``{"token": "ivr_…"}`` → a session cookie (HttpOnly, SameSite=Strict) and the
    session's CSRF token.  A wrong token counts as a failed authentication."""
    st = request.app[API]
    address = request.remote or ""
    refuse_if_throttled(st, address)
    if st.tokens is None or st.sessions is None:
        raise Unavailable("sessions need Redis: no [redis] url is set",
                          "会话需要 Redis：未配置 [redis] url", code="auth_unavailable")
    data = await body(request)
    who = await st.tokens.check(str(data["token"]).strip())
    if who is None:
        st.limiter.failed(address)
        METRICS.inc("api.auth_failures")
        log_event(log, logging.WARNING, "api.login_failed", address=address)
        raise Unauthorized("invalid, expired or revoked token", "令牌无效、已过期或已吊销",
                           code="invalid_token")
    session_id, session = await st.sessions.create(who)
    METRICS.inc("api.sessions_started")
    log_event(log, logging.INFO, "api.session_started", token_id=who.token_id,
              role=who.role, address=address)
    await _audit(request, who, "session.login")
    resp = json_response(_view(session))
    resp.set_cookie(COOKIE, session_id,
                    **cookie_options(request.secure, st.sessions.ttl_s))  # type: ignore[arg-type]
    return resp


@route("GET", "/api/session", "health.read")
async def current(request: web.Request) -> web.StreamResponse:
    """The cookie's session: who, its CSRF token, when it expires (a reloaded page reads
    its CSRF token here)."""
    st = request.app[API]
    session = (None if st.sessions is None or COOKIE not in request.cookies
               or request.headers.get("Authorization") else
               await st.sessions.get(request.cookies[COOKIE]))
    if session is None:
        raise NotFound("no browser session (this request used a token)",
                       "没有浏览器会话（此请求使用令牌）", code="no_session")
    return json_response(_view(session))


@route("DELETE", "/api/session", "health.read")
async def logout(request: web.Request) -> web.StreamResponse:
    """End the cookie's session (with its CSRF token) and clear the cookie."""
    st = request.app[API]
    ended = False
    if (st.sessions is not None and COOKIE in request.cookies
            and not request.headers.get("Authorization")):
        ended = await st.sessions.delete(request.cookies[COOKIE])
    if ended:
        await _audit(request, principal(request), "session.logout")
    resp = json_response({"ok": True, "ended": ended})
    resp.del_cookie(COOKIE, path="/")
    return resp
