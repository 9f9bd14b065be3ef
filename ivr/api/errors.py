"""Exception tree of the HTTP API layer.  Every error has a stable ``code``, an HTTP
status and a message in Chinese and English; the error middleware (:mod:`ivr.api.http`)
turns it into ``{"code": …, "message": {"zh": …, "en": …}}`` — the only place that does.
Errors of the slices below are translated by :func:`from_domain` at the same boundary: a
slice's error class says its HTTP status and code itself (``http_status = 404``,
``code = "unknown_job"`` class attributes), so no slice needs to be listed here; the
agents' errors are mapped below."""

from __future__ import annotations

from typing import Any

from ivr.errors import IvrError


class ApiError(IvrError):
    status = 500
    code = "internal"

    def __init__(self, en: str, zh: str, *, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{en} / {zh}")
        self.en = en
        self.zh = zh
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": {"zh": self.zh, "en": self.en}}


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"

    def __init__(self, en: str, zh: str, *, code: str | None = None) -> None:
        super().__init__(en, zh, code=code, headers={"WWW-Authenticate": 'Bearer realm="ivr"'})


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class TooManyFailures(ApiError):
    status = 429
    code = "too_many_failures"


class Unavailable(ApiError):
    status = 503
    code = "unavailable"


class BadGateway(ApiError):
    """Asterisk (or another part behind the API) refused or failed the action."""

    status = 502
    code = "upstream_refused"


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 405: MethodNotAllowed,
    409: Conflict, 413: PayloadTooLarge, 429: TooManyFailures, 502: BadGateway,
    503: Unavailable}


def split_message(text: str) -> tuple[str, str]:
    """``(en, zh)`` of the slices' ``"English … / 中文…"`` messages (the last ``' / '``
    followed by CJK splits them; otherwise both are the whole text)."""
    head, sep, tail = text.rpartition(" / ")
    if sep and any("\u4e00" <= c <= "\u9fff" for c in tail):
        return head, tail
    return text, text


def from_domain(exc: IvrError) -> ApiError:
    """The API error for an error of a slice below (its message kept, in both languages)."""
    from ivr.agents.errors import (
        AgentInputError,
        AlreadyLoggedIn,
        AsteriskRefused,
        StateNotReady,
        StaticMember,
        UnknownAgent,
        UnknownQueue,
    )

    if isinstance(exc, ApiError):
        return exc
    en, zh = split_message(str(exc))
    status = getattr(type(exc), "http_status", None)
    if isinstance(status, int) and 400 <= status <= 599:
        code = getattr(type(exc), "code", None)
        kind = _BY_STATUS.get(status, ApiError)
        if not isinstance(code, str):
            code = kind.code if kind is not ApiError else "error"
        err = kind(en, zh, code=code)
        err.status = status
        return err
    if isinstance(exc, UnknownQueue):
        return NotFound(en, zh, code="unknown_queue")
    if isinstance(exc, UnknownAgent):
        return NotFound(en, zh, code="unknown_agent")
    if isinstance(exc, AlreadyLoggedIn | StaticMember):
        return Conflict(en, zh, code="agent_state_conflict")
    if isinstance(exc, AgentInputError):
        return BadRequest(en, zh, code="invalid_agent_request")
    if isinstance(exc, StateNotReady):
        return Unavailable(en, zh, code="state_not_ready")
    if isinstance(exc, AsteriskRefused):
        return BadGateway(en, zh, code="asterisk_refused")
    return ApiError(en, zh)
