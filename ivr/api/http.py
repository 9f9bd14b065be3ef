"""The API's routes on the one application (:func:`install`, called by
:func:`ivr.app.build_app`).  Every route is declared with :func:`route` next to its
handler, with the permission it needs (``None``: public) and, for a mutating route, the
action name it is audited under.  Two middlewares, outermost first:

* errors — the one boundary where an exception becomes a response: :class:`ApiError`
  (and the slices' errors, via :func:`from_domain`) as ``{code, message: {zh, en}}``;
  aiohttp's 404/405 likewise; anything else a logged 500 with no detail;
* auth — Bearer token → :class:`Principal`, the route's permission, the failed-auth
  limiter, and the audit record of a mutating route (who, what, when, result).

Request bodies are checked against the route's schema in the OpenAPI document
(``openapi.json``, the same document the tests check responses against).  Slices add
their routes the same way from their own ``routes.py`` and their part of the document
with :func:`document_fragment` (docs/api.md, "A slice's routes").  What the API
reads of the bridge comes through :class:`Sources` (callables that ivr/app.py fills),
so the API package does not import the composition root and a model that changes shape
(the live calls) is read in one small function.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from ivr.agents.levels import Figures
from ivr.agents.levels_store import read_window
from ivr.agents.service import AgentService
from ivr.agents.state import QueueState
from ivr.ami.client import AMIClient
from ivr.api.audit import AuditLog
from ivr.api.auth import FailureLimiter, Principal, TokenStore
from ivr.api.call_events import LiveCallEvents
from ivr.api.errors import (
    ApiError,
    BadGateway,
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    TooManyFailures,
    Unauthorized,
    Unavailable,
    from_domain,
)
from ivr.api.feed import Change, Feed, Message
from ivr.api.prometheus import CONTENT_TYPE, exposition
from ivr.api.sessions import COOKIE, CSRF_HEADER, SAFE_METHODS, SessionStore, csrf_ok, same_origin
from ivr.calls.model import CallModel
from ivr.callstats import StatsSummary
from ivr.dialplan.ami_control import ClientControl
from ivr.dialplan.errors import DialplanError, Problem, PublishError
from ivr.dialplan.loader import parse_definition, sort_problems
from ivr.dialplan.publish import AUDIT_LOG, Plan, Publisher, Store, atomic_write, prepare
from ivr.dialplan.validate import check_definition, file_prompt_lookup
from ivr.errors import IvrError
from ivr.events.keys import Keys
from ivr.events.outbox import list_dead_letters, read_status, replay_dead_letters
from ivr.flow.ticket_lookup import TicketLookup
from ivr.log import event as log_event
from ivr.metrics import METRICS
from ivr.privacy import mask_number
from ivr.redisconn import connect as redis_connect
from ivr.redisconn import kind_of

log = logging.getLogger("ivr.api")

DOC_URN = "urn:ivr:api:openapi"
MAX_BODY = 64 * 1024
MAX_DEFINITION_BODY = 2 * 1024 * 1024  # POST /api/dialplans/validate: the files' texts

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Fragment:
    """A slice's part of the document: ``{"paths": …, "components": {"schemas": …}}``."""

    package: str
    name: str
    doc: dict[str, Any]


FRAGMENTS: list[Fragment] = []


def _load(package: str, name: str) -> dict[str, Any]:
    text = resources.files(package).joinpath(name).read_text(encoding="utf-8")
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise ValueError(f"{package}/{name}: an OpenAPI document or fragment is a JSON object")
    return doc


def _merge(doc: dict[str, Any], frag: Fragment) -> None:
    """Add (a copy of) ``frag`` to ``doc`` in place; a path or component name already
    there raises."""
    where = f"{frag.package}/{frag.name}"
    part = copy.deepcopy(frag.doc)
    unknown = set(part) - {"paths", "components"}
    if unknown:
        raise ValueError(f"{where}: a fragment holds only paths and components, not "
                         f"{sorted(unknown)}")
    paths = doc.setdefault("paths", {})
    for path, ops in part.get("paths", {}).items():
        if path in paths:
            raise ValueError(f"{where}: path {path!r} is already in the API document")
        paths[path] = ops
    components = doc.setdefault("components", {})
    for kind, items in part.get("components", {}).items():
        have = components.setdefault(kind, {})
        for key, value in items.items():
            if key in have:
                raise ValueError(f"{where}: components/{kind}/{key} is already in the API "
                                 "document")
            have[key] = value


def document_fragment(package: str, name: str = "openapi.json") -> None:
    """Merge ``package``'s ``name`` (``{"paths", "components": {"schemas"}}``) into the
    document served at ``/api/openapi.json`` and used to check requests.  Called by a
    slice's ``routes.py`` at import; the same fragment twice is one; a path or a schema
    name that another part already declares raises at once (``ValueError``)."""
    if any(f.package == package and f.name == name for f in FRAGMENTS):
        return
    frag = Fragment(package, name, _load(package, name))
    _merge(copy.deepcopy(_document(len(FRAGMENTS))), frag)  # a clash leaves nothing
    FRAGMENTS.append(frag)


@lru_cache(maxsize=4)
def _document(fragments: int) -> dict[str, Any]:
    doc = _load("ivr.api", "openapi.json")
    for frag in FRAGMENTS[:fragments]:
        _merge(doc, frag)
    return doc


def openapi() -> dict[str, Any]:
    """The API's OpenAPI 3.1 document (data in the packages, not generated): ivr/api's
    own and every slice's fragment (:func:`document_fragment`)."""
    return _document(len(FRAGMENTS))


@lru_cache(maxsize=4)
def _registry(fragments: int) -> Registry[Any]:
    reg: Registry[Any] = Registry().with_resource(DOC_URN, Resource.from_contents(
        _document(fragments), default_specification=DRAFT202012))
    return reg


def registry() -> Registry[Any]:
    return _registry(len(FRAGMENTS))


def validator(pointer: str) -> jsonschema.protocols.Validator:
    """A validator for the schema at ``pointer`` (e.g. ``/components/schemas/Error``)."""
    return jsonschema.Draft202012Validator({"$ref": f"{DOC_URN}#{pointer}"},
                                           registry=registry())


def _escape(path: str) -> str:
    return path.replace("~", "~0").replace("/", "~1")


# --------------------------------------------------------------------------- routes


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    permission: str | None  # None: public
    audit: str | None = None  # the action name of a mutating route
    token_in: str = "header"  # "message": the WebSocket's first message (a browser
    # cannot set headers on a WebSocket, and a secret never goes in a URL); "body": the
    # handler reads it from the request body (POST /api/session)


ROUTES: list[Route] = []


def route(method: str, path: str, permission: str | None, *, audit: str | None = None,
          token_in: str = "header") -> Callable[[Handler], Handler]:
    """Declare a route (its path and method must be in the document: ivr/api's own or a
    slice's :func:`document_fragment`).  ``permission``: what the token's role needs
    (None: public); ``audit``: the action name of a mutating route, which the handler's
    ``request[TARGET] = …`` completes."""
    def deco(fn: Handler) -> Handler:
        ROUTES.append(Route(method, path, fn, permission, audit, token_in))
        return fn
    return deco


@dataclass(slots=True)
class Sources:
    """What the API reads and drives in this process, as callables (None: that part does
    not run here)."""

    ami_connected: Callable[[], bool | None] = lambda: None
    queue_state: Callable[[], QueueState | None] = lambda: None
    agents: Callable[[], AgentService | None] = lambda: None
    stats: Callable[[], StatsSummary | None] = lambda: None
    calls: Callable[[], Iterable[Any] | None] = lambda: None  # CallState-like objects
    call_model: Callable[[], CallModel | None] = lambda: None  # the live calls' model
    tickets: Callable[[], TicketLookup | None] = lambda: None  # the IVR's ticket lookup
    outbox_keys: Keys | None = None
    store: Callable[[], Store | None] = lambda: None
    ami: Callable[[], AMIClient | None] = lambda: None  # the bridge's (publish reloads)
    dialplans_dir: Path | None = None  # the working definition ``publish`` publishes
    prompts_dir: Path | None = None
    clock: Callable[[], float] = time.time
    # after a publish or roll-back over the API: this process's IVR runs the new version
    published: Callable[[], Awaitable[None]] | None = None


@dataclass(slots=True)
class ApiState:
    sources: Sources
    redis_url: str
    prefix: str
    limiter: FailureLimiter = field(default_factory=FailureLimiter)
    redis: aioredis.Redis | None = None
    tokens: TokenStore | None = None
    audit: AuditLog | None = None
    sessions: SessionStore | None = None  # browser sessions (ivr/api/sessions.py)
    levels_cache: tuple[float, dict[str, Any]] | None = None  # GET /api/levels, briefly
    feed: Feed = field(default_factory=lambda: Feed(lambda topic: None))
    # each live call's events (GET /api/calls/{id}); ivr/app.py makes it a pipeline listener
    call_events: LiveCallEvents = field(default_factory=LiveCallEvents)


API = web.AppKey("ivr.api", ApiState)
PRINCIPAL = web.RequestKey("ivr.api.principal", Principal)
TARGET = web.RequestKey("ivr.api.target", str)  # what a mutating action acts on


def install(app: web.Application, sources: Sources, *, redis_url: str,
            prefix: str = "ivr:api") -> None:
    """Add the API's routes, middlewares and its Redis connection (a cleanup_ctx part)
    to ``app``.  Without ``redis_url`` only the public routes work (no tokens)."""
    st = app[API] = ApiState(sources, redis_url, prefix)
    st.feed = Feed(lambda topic: _feed_topic(st, topic))  # ivr/app.py registers its
    # AMI consumer (FeedConsumer) before the bridge starts
    app.middlewares.append(_errors)
    app.middlewares.append(_auth)
    for r in ROUTES:
        app.router.add_route(r.method, r.path, r.handler)
    app.cleanup_ctx.append(_api)


API_REDIS_CONNECTIONS = 100
API_REDIS_WAIT_S = 5.0


def _redis(url: str) -> aioredis.Redis:
    """The API's Redis client.  On one server, a pool that makes a request wait for a
    free connection (up to :data:`API_REDIS_WAIT_S`) rather than fail: redis-py's default
    pool refuses the 101st concurrent command (``MaxConnectionsError``), which a burst of
    consoles reconnecting at once reaches."""
    if kind_of(url) != "server":
        return redis_connect(url)
    return aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(
        url, max_connections=API_REDIS_CONNECTIONS, timeout=API_REDIS_WAIT_S))


async def _api(app: web.Application) -> Any:
    st = app[API]
    if st.redis_url:
        st.redis = _redis(st.redis_url)
        st.tokens = TokenStore(st.redis, st.prefix)
        st.audit = AuditLog(st.redis, st.prefix)
        st.sessions = SessionStore(st.redis, st.tokens, st.prefix)
    try:
        yield
    finally:
        st.feed.close()
        if st.redis is not None:
            await st.redis.aclose()


def _route_of(request: web.Request) -> Route | None:
    handler = request.match_info.handler
    method = request.method
    for r in ROUTES:
        if r.handler is handler and r.method == method:
            return r
    return None


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None
                  ) -> web.Response:
    """A JSON response (UTF-8 text as is, not ``\\u`` escapes)."""
    return web.json_response(data, status=status, headers=headers,
                             dumps=lambda o: json.dumps(o, ensure_ascii=False))



_json = json_response  # the old name (slices: use json_response)

@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        err = _http_error(exc)
    except ApiError as exc:
        err = exc
    except IvrError as exc:
        err = from_domain(exc)
    except RedisError as exc:  # tokens, audit, outbox: Redis is down or refusing
        log_event(log, logging.ERROR, "api.redis_error", method=request.method,
                  path=request.path, error=type(exc).__name__)
        err = Unavailable(f"Redis is not reachable ({type(exc).__name__}); try again",
                          f"Redis 无法访问（{type(exc).__name__}），请稍后重试",
                          code="redis_unavailable")
    except Exception:
        log.error("api.internal_error", exc_info=True,
                  extra={"fields": {"method": request.method, "path": request.path}})
        METRICS.inc("api.internal_errors")
        err = ApiError("internal error (logged)", "内部错误（已记录）")
    if err.status >= 500:
        METRICS.inc("api.errors_5xx")
    return json_response(err.body(), err.status, err.headers)


def _http_error(exc: web.HTTPException) -> ApiError:
    if exc.status == 404:
        return NotFound("no such resource", "资源不存在")
    if exc.status == 405:
        return MethodNotAllowed("method not allowed on this resource", "该资源不支持此方法")
    if exc.status == 413:
        return PayloadTooLarge("request body too large", "请求体过大")
    return BadRequest(exc.reason, exc.reason)


def refuse_if_throttled(st: ApiState, address: str) -> None:
    """429 (with Retry-After) while ``address`` is slowed down for failed authentications
    (tokens or logins: one limiter)."""
    wait = st.limiter.retry_after(address)
    if wait > 0:
        raise TooManyFailures(
            f"too many failed authentications from this address: retry in {wait:.0f} s",
            f"该地址认证失败次数过多，请 {wait:.0f} 秒后重试",
            headers={"Retry-After": str(max(1, round(wait)))})


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    r = _route_of(request)
    if r is None or r.permission is None or r.token_in != "header":
        return await handler(request)  # public, or the handler authenticates
    st = request.app[API]
    address = request.remote or ""
    refuse_if_throttled(st, address)
    if st.tokens is None:
        raise Unavailable("tokens need Redis: no [redis] url is set",
                          "令牌需要 Redis：未配置 [redis] url", code="auth_unavailable")
    header = request.headers.get("Authorization", "")
    principal: Principal | None
    refused: ApiError | None = None  # a session's request without its CSRF token
    if not header and COOKIE in request.cookies:
        principal, refused = await _session_principal(request)
    else:
        scheme, _, token = header.partition(" ")
        principal = (await st.tokens.check(token.strip())
                     if scheme.lower() == "bearer" and token else None)
    if principal is None:
        st.limiter.failed(address)
        METRICS.inc("api.auth_failures")
        log_event(log, logging.WARNING, "api.auth_failed", address=address, path=request.path)
        if not header:
            raise Unauthorized("missing Authorization: Bearer token", "缺少 Bearer 令牌")
        raise Unauthorized("invalid, expired or revoked token", "令牌无效、已过期或已吊销",
                           code="invalid_token")
    request[PRINCIPAL] = principal
    if r.audit is None:
        if refused is not None:
            raise refused
        _require(principal, r.permission)
        return await handler(request)
    result = "ok"  # a mutating route: audited whatever happens, a refusal too
    try:
        if refused is not None:
            raise refused
        _require(principal, r.permission)
        return await handler(request)
    except ApiError as exc:
        result = exc.code
        raise
    except IvrError as exc:
        result = from_domain(exc).code
        raise
    except Exception:
        result = "internal"
        raise
    finally:
        if st.audit is not None:
            try:
                await st.audit.record(principal, r.audit, request.get(TARGET, ""),
                                      result, address)
            except Exception:  # the action happened; a lost audit line is logged loudly
                log.error("api.audit_failed", exc_info=True, extra={"fields": {
                    "action": r.audit, "token_id": principal.token_id}})


async def _session_principal(request: web.Request) -> tuple[Principal, ApiError | None]:
    """The principal of the request's session cookie, and the refusal of a mutating
    request without the session's CSRF token in ``X-CSRF-Token`` or with a foreign
    ``Origin`` (raised by the caller, so that it is audited).  An expired or
    unknown cookie is not counted as a failed authentication (a session id cannot be
    guessed; a console left open overnight must not lock its address out)."""
    st = request.app[API]
    assert st.sessions is not None
    session_id = request.cookies.get(COOKIE, "")
    session = await st.sessions.get(session_id)
    if session is None:
        raise Unauthorized("the session has expired or was ended: log in again",
                           "会话已过期或已退出，请重新登录", code="session_expired")
    refused: ApiError | None = None
    if request.method not in SAFE_METHODS:
        if not same_origin(request.headers, request.host):
            refused = Forbidden(f"cross-site request from {request.headers.get('Origin')!r}"
                                " refused", "拒绝跨站请求", code="cross_site")
        elif not csrf_ok(session_id, request.headers.get(CSRF_HEADER)):
            refused = Forbidden(f"missing or wrong {CSRF_HEADER} header for this session",
                                f"缺少或错误的 {CSRF_HEADER} 请求头（跨站请求防护）",
                                code="csrf_failed")
        if refused is not None:
            METRICS.inc("api.csrf_refused")
            log_event(log, logging.WARNING, "api.csrf_refused", path=request.path,
                      code=refused.code, address=request.remote or "")
    return session.principal, refused


def _require(who: Principal, permission: str) -> None:
    if not who.can(permission):
        raise Forbidden(f"role {who.role!r} may not {permission}",
                        f"角色 {who.role!r} 无权执行 {permission}")


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


async def body(request: web.Request, limit: int = MAX_BODY) -> dict[str, Any]:
    """The JSON body, checked against the route's request schema in the document."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes", f"请求体超过 {limit} 字节")
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes", f"请求体超过 {limit} 字节")
    try:
        data = json.loads(raw or b"null")
    except ValueError as exc:
        raise BadRequest(f"malformed JSON: {exc}", f"JSON 格式错误：{exc}",
                         code="malformed_json") from None
    try:  # JSON may escape lone UTF-16 surrogates ("\ud800"): not text anything takes
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("the JSON holds a lone surrogate escape (not Unicode text)",
                         "JSON 中含有孤立的代理字符转义（不是有效的 Unicode 文本）",
                         code="malformed_json") from None
    r = _route_of(request)
    assert r is not None
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else r.path
    pointer = (f"/paths/{_escape(path)}/{r.method.lower()}/requestBody/content/"
               "application~1json/schema")
    errors = sorted(validator(pointer).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(body)"
        raise BadRequest(f"invalid request body at {where}: {e.message}",
                         f"请求体 {where} 处无效：{e.message}", code="invalid_body")
    assert isinstance(data, dict)
    return data


# --------------------------------------------------------------------------- public


@route("GET", "/api/openapi.json", None)
async def get_openapi(request: web.Request) -> web.StreamResponse:
    return json_response(openapi())


@route("GET", "/healthz", None)
async def healthz(request: web.Request) -> web.StreamResponse:
    return json_response({"status": "ok"})


@route("GET", "/readyz", None)
async def readyz(request: web.Request) -> web.StreamResponse:
    """Ready when AMI is logged in and Redis answers; the ticket backend's outage (as the
    pushers record it in Redis) is reported but does not make the bridge unready: calls
    go on and their events wait in the outbox."""
    st = request.app[API]
    src = st.sources
    checks: dict[str, dict[str, Any]] = {}
    ami = src.ami_connected()
    checks["ami"] = ({"ok": True, "detail": "not run in this process"} if ami is None else
                     {"ok": ami, "detail": "logged in" if ami else "not connected"})
    if st.redis is None:
        checks["redis"] = {"ok": True, "detail": "not configured"}
    else:
        try:
            await st.redis.ping()
            checks["redis"] = {"ok": True, "detail": "reachable"}
        except Exception as exc:  # any failure to reach it is the answer
            checks["redis"] = {"ok": False, "detail": f"unreachable: {type(exc).__name__}"}
    backend: dict[str, Any] = {"ok": True, "detail": "no event delivery configured"}
    if st.redis is not None and src.outbox_keys is not None and checks["redis"]["ok"]:
        try:
            status = await read_status(st.redis, src.outbox_keys)
            outages = [{"consumer": o.consumer, "failures": o.failures, "error": o.error,
                        "age_s": o.age_s, "stale": o.stale} for o in status.outages]
            backend = {"ok": not outages,
                       "detail": "outage" if outages else "reachable (no outage recorded)",
                       "outages": outages, "dead_letters": status.dead_letters,
                       "oldest_undelivered_s": status.oldest_undelivered_s}
        except Exception as exc:
            backend = {"ok": False, "detail": f"status unreadable: {type(exc).__name__}"}
    checks["ticket_backend"] = backend
    ready = bool(checks["ami"]["ok"] and checks["redis"]["ok"])
    return json_response({"ready": ready, "degraded": not backend["ok"], "checks": checks},
                         200 if ready else 503)


@route("GET", "/metrics", None)
async def metrics(request: web.Request) -> web.StreamResponse:
    text = exposition(METRICS.snapshot(), METRICS.gauges())
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


@route("GET", "/api/me", "health.read")
async def me(request: web.Request) -> web.StreamResponse:
    return json_response(asdict(principal(request)))


# --------------------------------------------------------------------------- queues/agents


def _state(request: web.Request) -> QueueState:
    state = request.app[API].sources.queue_state()
    if state is None or not state.ready:
        raise Unavailable("the queue state has not been read from Asterisk yet",
                          "尚未从 Asterisk 读取队列状态", code="state_not_ready")
    return state


def _masked_queue(q: dict[str, Any]) -> dict[str, Any]:
    return {**q, "callers": [{**c, "number": mask_number(c["number"])} for c in q["callers"]]}


@route("GET", "/api/queues", "queues.read")
async def list_queues(request: web.Request) -> web.StreamResponse:
    snap = _state(request).snapshot(request.app[API].sources.clock())
    return json_response({"queues": [_masked_queue(q) for q in snap["queues"]]})


@route("GET", "/api/queues/{queue}", "queues.read")
async def get_queue(request: web.Request) -> web.StreamResponse:
    name = request.match_info["queue"]
    snap = _state(request).snapshot(request.app[API].sources.clock())
    for q in snap["queues"]:
        if q["queue"] == name:
            return json_response(_masked_queue(q))
    raise NotFound(f"unknown queue {name!r}", f"队列 {name!r} 不存在", code="unknown_queue")


def _service(request: web.Request) -> AgentService:
    _state(request)
    svc = request.app[API].sources.agents()
    if svc is None:
        raise Unavailable("agent operations do not run in this process",
                          "本进程不提供坐席操作", code="agents_unavailable")
    return svc


@route("GET", "/api/agents", "agents.read")
async def list_agents(request: web.Request) -> web.StreamResponse:
    interface = request.query.get("interface") or None
    return json_response({"agents": _service(request).status(interface)})


@route("GET", "/api/agents/pause-reasons", "agents.read")
async def pause_reasons(request: web.Request) -> web.StreamResponse:
    """The pause-reason catalog of the published definition (code and label)."""
    catalog = _service(request).catalog
    return json_response({"reasons": [{"code": code, "label": label}
                              for code, label in catalog.pause_reasons.items()]})


async def _acting(request: web.Request) -> tuple[AgentService, dict[str, Any], str]:
    svc = _service(request)
    data = await body(request)
    interface = str(data["interface"])
    request[TARGET] = interface
    who = principal(request)
    if not who.may_act_for(interface):
        raise Forbidden(f"an agent acts only on itself ({who.agent}), not {interface!r}",
                        f"坐席只能操作自己（{who.agent}），不能操作 {interface!r}",
                        code="not_own_agent")
    return svc, data, interface


@route("POST", "/api/agents/login", "agents.act_self", audit="agents.login")
async def agent_login(request: web.Request) -> web.StreamResponse:
    svc, data, interface = await _acting(request)
    queues: dict[str, int] = data["queues"]
    await svc.login(interface, queues, name=data["name"],
                    state_interface=data.get("state_interface"))
    return json_response({"ok": True, "interface": interface, "queues": sorted(queues)})


@route("POST", "/api/agents/logout", "agents.act_self", audit="agents.logout")
async def agent_logout(request: web.Request) -> web.StreamResponse:
    svc, data, interface = await _acting(request)
    await svc.logout(interface, data.get("queues"))
    return json_response({"ok": True, "interface": interface})


@route("POST", "/api/agents/pause", "agents.act_self", audit="agents.pause")
async def agent_pause(request: web.Request) -> web.StreamResponse:
    svc, data, interface = await _acting(request)
    label = await svc.pause(interface, data["reason"], data.get("queues"))
    return json_response({"ok": True, "interface": interface, "reason": label})


@route("POST", "/api/agents/unpause", "agents.act_self", audit="agents.unpause")
async def agent_unpause(request: web.Request) -> web.StreamResponse:
    svc, data, interface = await _acting(request)
    await svc.unpause(interface, data.get("queues"))
    return json_response({"ok": True, "interface": interface})


@route("GET", "/api/stats", "stats.read")
async def get_stats(request: web.Request) -> web.StreamResponse:
    summary = request.app[API].sources.stats()
    if summary is None:
        raise Unavailable("service-level figures are not kept in this process",
                          "本进程不统计服务水平", code="stats_unavailable")
    return json_response(asdict(summary))


LEVELS_WINDOW_S = 24 * 3600.0
LEVELS_CACHE_S = 5.0  # wallboards poll; the stream is read at most this often


@route("GET", "/api/levels", "stats.read")
async def get_levels(request: web.Request) -> web.StreamResponse:
    """Service levels of the last 24 hours and of the current 15-minute interval, per
    queue and in total, from the durable levels stream (the same figures as ``ivr queues
    status``, over a rolling window): what a wallboard shows beside the live queues."""
    st = request.app[API]
    r, keys = _outbox(request)
    now = st.sources.clock()
    if st.levels_cache is not None and now - st.levels_cache[0] < LEVELS_CACHE_S:
        return json_response(st.levels_cache[1])
    agg = await read_window(r, keys, now - LEVELS_WINDOW_S, now + 60.0, after_s=60.0)
    total = Figures()
    queues = []
    for queue in agg.queues():
        window = Figures()
        for _, _, f in agg.intervals(queue):
            window.add(f)
        total.add(window)
        queues.append({"queue": queue, "last_24h": window.to_json(),
                       "current_interval": agg.interval(queue, now).to_json()})
    data = {"window_s": LEVELS_WINDOW_S, "at": round(now, 3), "total": total.to_json(),
            "current_interval": agg.interval(None, now).to_json(), "queues": queues}
    st.levels_cache = (now, data)
    return json_response(data)


# --------------------------------------------------------------------------- calls


def call_view(call: Any, *, masked: bool, agent_interface: str | None = None
              ) -> dict[str, Any]:
    """One live call as the API shows it — the one place that reads the call model's
    shape (:class:`ivr.calls.state.CallState`), so the model can change under it.
    ``agent``: the member name of the agent it was connected to; ``agent_interface``:
    the interface of the member it is with now (what an agent's token names)."""
    caller = getattr(call, "caller", None)
    return {
        "call_id": str(call.call_id),
        "started_at": float(getattr(call, "started_at", 0.0)),
        "dialled": str(getattr(call, "dialled", "")),
        "caller": None if caller is None else (mask_number(caller) if masked else caller),
        "anonymous": bool(getattr(call, "anonymous", False)),
        "language": getattr(call, "language", None),
        "entry": str(getattr(call, "entry", "")),
        "queue": getattr(call, "queue", None),
        "agent": getattr(call, "agent", None),
        "agent_interface": agent_interface,
        "department": getattr(call, "department", None),
        "priority": int(getattr(call, "priority", 0)),
        "tags": list(getattr(call, "tags", ())),
        "channels": len(getattr(call, "channels", ())),
        "recording": bool(getattr(call, "recordings", ())),
    }


def _views(src: Sources, masked: bool, call_id: str | None = None
           ) -> list[dict[str, Any]] | None:
    model = src.call_model()
    if call_id is not None and model is not None:
        one = model.call(call_id)
        return [] if one is None else [call_view(one, masked=masked,
                                                 agent_interface=model.agent_interface_of(call_id))]
    calls = src.calls()
    if calls is None:
        return None
    if call_id is not None:
        calls = [c for c in calls if str(c.call_id) == call_id]
    return [call_view(c, masked=masked, agent_interface=None if model is None else
                      model.agent_interface_of(str(c.call_id))) for c in list(calls)]


def _visible_calls(request: web.Request, call_id: str | None = None
                   ) -> list[dict[str, Any]]:
    """The views of the live calls (or of call ``call_id``) that the token may see."""
    who = principal(request)
    own = None if who.can("agents.act_any") else who.agent
    views = _views(request.app[API].sources, masked=own is None, call_id=call_id)
    if views is None:
        raise Unavailable("the live calls are not kept in this process (no call-event "
                          "pipeline)", "本进程不维护实时通话", code="calls_unavailable")
    # an agent sees only the calls connected to it now, and their numbers in full;
    # others see every call with numbers masked
    return [c for c in views if own is None or c["agent_interface"] == own]


@route("GET", "/api/calls", "calls.read")
async def list_calls(request: web.Request) -> web.StreamResponse:
    """The live calls the token may see, oldest first.  Served from the live feed's last
    read of the calls (made once per view and cached: a wallboard polling thousands of
    calls costs no re-reading of the model per request) — at most the feed's interval
    old (50 ms when cheap) when a change is pending; read directly when the feed has
    not read them yet."""
    st = request.app[API]
    who = principal(request)
    change = st.feed.latest.get("calls")
    if change is not None:
        key = ("list", _view(who))
        text = change.texts.get(key)
        if text is None:
            msg = _calls_for(who, change.message())
            assert msg is not None  # a whole message is never dropped
            text = change.texts[key] = json.dumps({"calls": msg["data"]}, ensure_ascii=False)
        return web.Response(text=text, content_type="application/json")
    calls = sorted(_visible_calls(request), key=lambda c: (c["started_at"], c["call_id"]))
    return json_response({"calls": calls})


@route("GET", "/api/calls/{call_id}", "calls.read")
async def get_call(request: web.Request) -> web.StreamResponse:
    call_id = request.match_info["call_id"]
    found = _visible_calls(request, call_id)
    if found:
        masked = not principal(request).agent or principal(request).can("agents.act_any")
        events = request.app[API].call_events.of(call_id, masked=masked)
        return json_response({**found[0], "events": events})
    raise NotFound(f"no live call {call_id!r} (visible to this token)",
                   f"没有实时通话 {call_id!r}", code="unknown_call")


@route("GET", "/api/calls/{call_id}/tickets", "calls.read")
async def call_tickets(request: web.Request) -> web.StreamResponse:
    """Whether the caller of a live call has open tickets (besides this call's), asked of
    the ticket backend as the IVR asks it: ``found``, ``none`` or ``unavailable``."""
    call_id = request.match_info["call_id"]
    src = request.app[API].sources
    if not _visible_calls(request, call_id):
        raise NotFound(f"no live call {call_id!r} (visible to this token)",
                       f"没有实时通话 {call_id!r}", code="unknown_call")
    lookup = src.tickets()
    if lookup is None:
        raise Unavailable("no ticket backend is configured ([tickets] / the definition's "
                          "ticket_api)", "未配置工单系统", code="tickets_unavailable")
    call = next((c for c in list(src.calls() or ()) if str(c.call_id) == call_id), None)
    caller = None if call is None or getattr(call, "anonymous", False) else call.caller
    status = "none" if not caller else await lookup.status(caller, exclude_call=call_id)
    return json_response({"call_id": call_id, "status": status})


# --------------------------------------------------------------------------- dialplans


def _store(request: web.Request) -> Store:
    store = request.app[API].sources.store()
    if store is None:
        raise Unavailable("no Asterisk config directory here", "未配置 Asterisk 配置目录")
    return store


def _read_json(path: Any) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@route("GET", "/api/dialplans/current", "dialplans.read")
async def dialplan_current(request: web.Request) -> web.StreamResponse:
    store = _store(request)
    cur = store.current()
    if cur is None:
        raise NotFound("nothing has been published yet", "尚未发布任何版本",
                       code="nothing_published")
    entries = [{"number": n, "context": c} for n, c in store.current_entries()]
    return json_response({"id": cur[0], "version": cur[1], "entries": entries})


@route("GET", "/api/dialplans/versions", "dialplans.read")
async def dialplan_versions(request: web.Request) -> web.StreamResponse:
    store = _store(request)
    cur = store.current()
    out = []
    if store.versions.is_dir():
        for folder in sorted(p for p in store.versions.iterdir()
                             if p.is_dir() and not p.name.startswith(".")):
            rec = _read_json(folder / "audit.json") or {}
            out.append({"id": folder.name, "version": str(rec.get("version", "")),
                        "when": str(rec.get("when", "")), "who": str(rec.get("who", "")),
                        "status": str(rec.get("status", "")),
                        "current": cur is not None and cur[0] == folder.name})
    return json_response({"versions": out})


@route("GET", "/api/dialplans/audit", "dialplans.read")
async def dialplan_audit(request: web.Request) -> web.StreamResponse:
    store = _store(request)
    records = []
    try:
        lines = (store.versions / AUDIT_LOG).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    for line in lines[-500:]:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return json_response({"records": records})


@route("GET", "/api/dialplans/versions/{version_id}/diff", "dialplans.read")
async def dialplan_diff(request: web.Request) -> web.StreamResponse:
    """The published change of one version (its diff against the version before it)."""
    store = _store(request)
    vid = request.match_info["version_id"]
    folder = store.versions / vid
    if vid.startswith(".") or "/" in vid or not (folder / "changes.diff").is_file():
        raise NotFound(f"unknown version {vid!r}", f"版本 {vid!r} 不存在",
                       code="unknown_version")
    diff = (folder / "changes.diff").read_text(encoding="utf-8")
    return json_response({"id": vid, "diff": diff})


_FILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\.ya?ml")


def _problem(p: Problem, root: Path | None = None) -> dict[str, Any]:
    file = p.where.file
    if root is not None and file.startswith(str(root)):
        file = file[len(str(root)):].lstrip("/")
    return {"file": file, "line": p.where.line, "column": p.where.col,
            "severity": p.severity, "message": p.message}


def _validate_files(files: Mapping[str, str], prompts_dir: Path | None
                    ) -> tuple[bool, list[dict[str, Any]], list[str]]:
    with tempfile.TemporaryDirectory(prefix="ivr-api-validate-") as tmp:
        root = Path(tmp)
        for name, text in files.items():
            (root / name).write_text(text, encoding="utf-8")
        definition, problems = parse_definition(root, root)
        if definition is not None and not any(p.severity == "error" for p in problems):
            lookup = (file_prompt_lookup(prompts_dir)
                      if prompts_dir is not None and prompts_dir.is_dir() else None)
            problems = problems + check_definition(definition, lookup)
        valid = definition is not None and not any(p.severity == "error" for p in problems)
        entries = sorted(definition.entries) if definition is not None and valid else []
        return valid, [_problem(p, root) for p in sort_problems(problems)], entries


@route("POST", "/api/dialplans/validate", "dialplans.read")
async def dialplan_validate(request: web.Request) -> web.StreamResponse:
    """Check an uploaded definition (file name → YAML text): every problem with its file,
    line and column.  Nothing is written outside a temporary directory."""
    data = await body(request, MAX_DEFINITION_BODY)
    files: dict[str, str] = data["files"]
    _check_names(files)
    valid, problems, entries = await asyncio.to_thread(
        _validate_files, files, request.app[API].sources.prompts_dir)
    return json_response({"valid": valid, "entries": entries, "problems": problems})


async def _publish(request: web.Request, source: Path) -> web.StreamResponse:
    src = request.app[API].sources
    store = _store(request)
    client = src.ami()
    if client is None or not client.connected:
        raise Unavailable("not connected to Asterisk: nothing published",
                          "未连接 Asterisk：未发布", code="ami_unavailable")
    who = principal(request)
    publisher = Publisher(store, who=f"{who.name or who.role} (api token {who.token_id})")
    lookup = (file_prompt_lookup(src.prompts_dir)
              if src.prompts_dir is not None and src.prompts_dir.is_dir() else None)
    try:
        plan: Plan = await asyncio.to_thread(prepare, source, lookup)
    except DialplanError as exc:
        publisher.refuse(source, exc)
        first = str(exc.problems[0]) if exc.problems else str(exc)
        raise BadRequest(f"the definition is not valid ({len(exc.problems)} error(s)), "
                         f"nothing published: {first}",
                         f"定义无效（{len(exc.problems)} 个错误），未发布：{first}",
                         code="invalid_definition") from None
    try:
        result = await publisher.publish(plan, ClientControl(client))
    except PublishError as exc:
        if exc.rolled_back:
            raise BadGateway(f"publish failed: {exc}; rolled back, the running version is "
                             "unchanged", f"发布失败，已回滚，线上版本未变：{exc}",
                             code="publish_rolled_back") from None
        raise BadGateway(f"publish failed: {exc}; ROLLBACK FAILED, check Asterisk now",
                         f"发布失败且回滚失败，请立即检查 Asterisk：{exc}",
                         code="rollback_failed") from None
    rec = result.record
    request[TARGET] = rec.version
    if src.published is not None and rec.status == "published":
        try:
            await src.published()
        except Exception:  # Asterisk runs it; this bridge's IVR keeps the old until fixed
            log.error("api.definition_reload_failed", exc_info=True,
                      extra={"fields": {"version": rec.version}})
    return json_response({"id": rec.id, "version": rec.version, "previous": rec.previous,
                          "status": rec.status, "who": rec.who, "when": rec.when,
                          "files_changed": list(rec.files_changed)})


def _working(request: web.Request) -> Path:
    source = request.app[API].sources.dialplans_dir
    if source is None or not source.is_dir():
        raise Unavailable("no dialplans directory here", "未配置拨号方案目录")
    return source


def _check_names(files: Mapping[str, str]) -> None:
    for name in files:
        if not _FILE_RE.fullmatch(name):
            raise BadRequest(f"file name {name!r}: letters, digits, '_', '-', '.', ending "
                             ".yaml or .yml, no directories",
                             f"文件名 {name!r} 无效", code="invalid_file_name")


@route("GET", "/api/dialplans/working", "dialplans.read")
async def dialplan_working(request: web.Request) -> web.StreamResponse:
    """The working definition's YAML files (what ``publish`` publishes; the editor's
    starting point)."""
    source = _working(request)
    files = {p.name: p.read_text(encoding="utf-8")
             for p in sorted(source.iterdir()) if _FILE_RE.fullmatch(p.name) and p.is_file()}
    return json_response({"files": files})


@route("POST", "/api/dialplans/publish", "dialplans.publish", audit="dialplans.publish")
async def dialplan_publish(request: web.Request) -> web.StreamResponse:
    """Publish the working definition (``[paths] dialplans_dir``) as ``ivr dialplan
    publish`` does: validate, render, write, reload, verify, roll back on failure.  With
    ``files`` (name → YAML text, the editor's), those files replace theirs in a copy of
    the working definition, that copy is published, and once it is live they are written
    to the working directory too (an invalid or refused one changes nothing)."""
    data = await body(request, MAX_DEFINITION_BODY)
    source = _working(request)
    files: dict[str, str] | None = data.get("files")
    if files is None:
        return await _publish(request, source)
    _check_names(files)
    with tempfile.TemporaryDirectory(prefix="ivr-api-publish-") as tmp:
        staged = Path(tmp) / source.name
        await asyncio.to_thread(shutil.copytree, source, staged)
        for name, text in files.items():
            (staged / name).write_text(text, encoding="utf-8")
        resp = await _publish(request, staged)
        for name, text in files.items():
            await asyncio.to_thread(atomic_write, source / name, text)
    return resp


@route("POST", "/api/dialplans/rollback", "dialplans.publish", audit="dialplans.rollback")
async def dialplan_rollback(request: web.Request) -> web.StreamResponse:
    """Publish an earlier version again (its stored definition), as a new publication."""
    data = await body(request)
    vid = str(data["version_id"])
    request[TARGET] = vid
    store = _store(request)
    folder = store.versions / vid / "dialplans"
    if vid.startswith(".") or "/" in vid or not folder.is_dir():
        raise NotFound(f"unknown version {vid!r}", f"版本 {vid!r} 不存在",
                       code="unknown_version")
    return await _publish(request, folder)


# --------------------------------------------------------------------------- events


def _outbox(request: web.Request) -> tuple[aioredis.Redis, Keys]:
    st = request.app[API]
    if st.redis is None or st.sources.outbox_keys is None:
        raise Unavailable("no event delivery here (no [redis] url)", "未配置事件投递")
    return st.redis, st.sources.outbox_keys


@route("GET", "/api/events/status", "events.read")
async def events_status(request: web.Request) -> web.StreamResponse:
    r, keys = _outbox(request)
    return json_response((await read_status(r, keys)).to_json())


@route("GET", "/api/events/dead-letters", "events.read")
async def dead_letters(request: web.Request) -> web.StreamResponse:
    r, keys = _outbox(request)
    letters = await list_dead_letters(r, keys, count=1000)
    return json_response({"dead_letters": [
        {"entry_id": d.entry_id, "call_id": d.call_id, "seq": d.seq, "event_id": d.event_id,
         "reason": d.reason, "attempts": d.attempts} for d in letters]})


@route("POST", "/api/events/dead-letters/replay", "events.replay", audit="events.replay")
async def replay(request: web.Request) -> web.StreamResponse:
    r, keys = _outbox(request)
    data = await body(request)
    call_id = data.get("call_id")
    request[TARGET] = call_id or "*"
    moved = await replay_dead_letters(r, keys, call_id)
    return json_response({"replayed": moved})


# --------------------------------------------------------------------------- audit


@route("GET", "/api/audit", "audit.read")
async def audit(request: web.Request) -> web.StreamResponse:
    st = request.app[API]
    assert st.audit is not None  # the auth middleware needed Redis
    return json_response({"records": await st.audit.recent(200)})


# --------------------------------------------------------------------------- live feed


def _feed_topic(st: ApiState, topic: str) -> Any:
    src = st.sources
    if topic == "queues":
        state = src.queue_state()
        if state is None or not state.ready:
            raise LookupError(topic)
        return [_masked_queue(q) for q in state.snapshot(src.clock())["queues"]]
    if topic == "calls":
        views = _views(src, masked=False)
        if views is None:
            raise LookupError(topic)
        return sorted(views, key=lambda c: (c["started_at"], c["call_id"]))
    summary = src.stats()
    if summary is None:
        raise LookupError(topic)
    return asdict(summary)


@lru_cache(maxsize=65536)
def _masked(number: str) -> str:
    """:func:`mask_number`, remembered: a wallboard's calls are masked at every change."""
    return mask_number(number)


def _view(who: Principal) -> str:
    """Which view of the feed ``who`` gets: every call masked, or an agent's own calls."""
    return "all" if who.can("agents.act_any") else f"agent:{who.agent or ''}"


def _calls_for(who: Principal, msg: Message) -> Message | None:
    """A calls message as ``who`` may see it: supervisors and admins every call with
    numbers masked; an agent only the calls it is with (numbers in full) — in a delta,
    a call that is no longer its own is removed; a delta with nothing of its own: None."""
    def masked(c: dict[str, Any]) -> dict[str, Any]:
        return {**c, "caller": None if c["caller"] is None else _masked(c["caller"])}

    def own(c: dict[str, Any]) -> bool:
        return c["agent_interface"] is not None and c["agent_interface"] == who.agent

    if msg["type"] == "delta":
        if who.can("agents.act_any"):
            return {**msg, "upsert": [masked(c) for c in msg["upsert"]]}
        upsert = [c for c in msg["upsert"] if own(c)]
        remove = msg["remove"] + [c["call_id"] for c in msg["upsert"] if not own(c)]
        return {**msg, "upsert": upsert, "remove": remove} if upsert or remove else None
    if who.can("agents.act_any"):
        return {**msg, "data": [masked(c) for c in msg["data"]]}
    return {**msg, "data": [c for c in msg["data"] if own(c)]}


def _render(change: Change, who: Principal, delta: bool) -> bytes | None:
    """The change as ``who`` sees it, as a UTF-8 JSON frame — made once per view and kind
    and cached on the change, not once per client.  None: nothing for ``who``."""
    key = (_view(who) if change.topic == "calls" else "all", delta)  # others: one view
    if key in change.frames:
        return change.frames[key]
    msg = (change.delta() if delta else None) or change.message()
    out = _calls_for(who, msg) if change.topic == "calls" else msg
    frame = None if out is None else json.dumps(out, ensure_ascii=False).encode()
    change.frames[key] = frame
    if out is not None and out["type"] != "delta" and change.topic == "calls":
        change.texts[(key, "data")] = json.dumps(out["data"], ensure_ascii=False)
    return frame


FEED_HELLO_S = 10.0


@route("GET", "/api/feed", "queues.read", token_in="message")
async def live_feed(request: web.Request) -> web.StreamResponse:
    """WebSocket.  The client's first message: ``{"token": "ivr_…", "since": <seq or
    null>}``; then the server sends ``hello`` and either the changes after ``since`` or
    a snapshot, then every change.  See :mod:`ivr.api.feed` and docs/api.md."""
    st = request.app[API]
    feed = st.feed
    address = request.remote or ""
    origin = request.headers.get("Origin")
    if origin is not None and origin.split("://", 1)[-1] != request.host:
        raise Forbidden(f"cross-site WebSocket from {origin!r} refused",
                        f"拒绝来自 {origin!r} 的跨站 WebSocket", code="cross_site")
    wait = st.limiter.retry_after(address)
    if wait > 0:
        raise TooManyFailures(
            f"too many failed authentications from this address: retry in {wait:.0f} s",
            f"该地址认证失败次数过多，请 {wait:.0f} 秒后重试")
    if st.tokens is None:
        raise Unavailable("tokens need Redis: no [redis] url is set",
                          "令牌需要 Redis：未配置 [redis] url", code="auth_unavailable")
    # no per-message deflate: compressing each change once per client (browsers offer it)
    # would cost more CPU than the rest of the fan-out; consoles are on the LAN
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4096, compress=False)
    if not ws.can_prepare(request).ok:
        raise BadRequest("expected a WebSocket upgrade", "需要 WebSocket 升级请求",
                         code="websocket_expected")
    await ws.prepare(request)
    who: Principal | None = None
    since: int | None = None
    deltas = False
    first: aiohttp.WSMessage | None = None
    try:
        async with asyncio.timeout(FEED_HELLO_S):
            first = await ws.receive()
        hello = json.loads(first.data) if first.type == web.WSMsgType.TEXT else None
        if isinstance(hello, dict) and isinstance(hello.get("token"), str):
            who = await st.tokens.check(hello["token"])
        elif (isinstance(hello, dict) and isinstance(hello.get("csrf"), str)
              and st.sessions is not None):  # a browser session: its cookie and CSRF token
            session_id = request.cookies.get(COOKIE, "")
            session = await st.sessions.get(session_id)
            if session is not None and csrf_ok(session_id, hello["csrf"]):
                who = session.principal
        if isinstance(hello, dict) and who is not None:
            raw_since = hello.get("since")
            since = raw_since if isinstance(raw_since, int) else None
            deltas = hello.get("deltas") is True
    except (TimeoutError, ValueError):
        who = None
    if who is None and first is not None and first.type in (
            web.WSMsgType.CLOSE, web.WSMsgType.CLOSING, web.WSMsgType.CLOSED):
        return ws  # the client went away before saying anything (a page left): no failure
    if who is None or not who.can("queues.read"):
        if who is None:
            st.limiter.failed(address)
            METRICS.inc("api.auth_failures")
            err: ApiError = Unauthorized("send {\"token\": …} first", "请先发送令牌",
                                         code="invalid_token")
        else:
            err = Forbidden(f"role {who.role!r} may not queues.read",
                            f"角色 {who.role!r} 无权执行 queues.read")
        try:
            await ws.send_json({"type": "error", **err.body()})
            await ws.close(code=4401 if who is None else 4403)
        except ConnectionResetError:
            pass  # it went away meanwhile
        return ws
    # no await between: nothing is missed or repeated (a first catch-up publishes, so it
    # comes before this client subscribes)
    backlog = feed.catch_up(since)
    sub = feed.subscribe()
    METRICS.inc("api.feed_connects")

    async def reader() -> None:
        async for _ in ws:  # the client says nothing more; a close ends it
            pass
        sub.put(None)

    reading = asyncio.create_task(reader(), name="api-feed-reader")
    own_only = not who.can("agents.act_any")
    sent_calls: str | None = None  # an agent's calls as last sent (unchanged: not again)
    try:
        await ws.send_json({"type": "hello", "seq": feed.seq, "role": who.role,
                            "agent": who.agent, "deltas": deltas})
        for change in backlog:  # whole topics (a catch-up or a snapshot)
            frame = _render(change, who, False)
            if frame is not None:
                await ws.send_frame(frame, web.WSMsgType.TEXT)
                sent_calls = change.texts.get(((_view(who), False), "data"), sent_calls)
        while True:
            item = await sub.queue.get()
            if item is None or sub.overflowed:
                break
            frame = _render(item, who, deltas)
            if frame is None:
                continue
            if own_only and item.topic == "calls" and not deltas:
                data = item.texts.get(((_view(who), False), "data"))
                if data == sent_calls:
                    continue  # other agents' calls changed, not its own
                sent_calls = data
            await ws.send_frame(frame, web.WSMsgType.TEXT)
    except (ConnectionResetError, RuntimeError):
        pass  # the client went away
    finally:
        feed.unsubscribe(sub)
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        if sub.overflowed:
            METRICS.inc("api.feed_overflows")
            await ws.close(code=4408, message=b"too slow: reconnect with since")
        else:
            await ws.close()
    return ws
