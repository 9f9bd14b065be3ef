"""The console's pages and files on the one application (:func:`install`, called by
:func:`ivr.app.build_app`).

Each page is a small HTML shell (``pages/``) whose ES module (``static/``) reads the API
with the browser session (:mod:`ivr.api.sessions`).  The pages are gated here, on the
server, by the session's role — an agent asking for the dialplan editor gets 403, not a
hidden link — and every API route the page calls checks its permission again.  No
session: the login page.  Every answer carries a strict Content-Security-Policy (scripts,
styles and connections from this origin only; no inline script; not framed).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from aiohttp import web

from ivr.api.auth import Principal
from ivr.api.http import API
from ivr.api.sessions import COOKIE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PREFIX = "/console"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; media-src 'self'; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class Page:
    name: str  # the path under /console/ and the shell's file name
    permission: str | None  # None: anyone (the login page)
    title_en: str
    title_zh: str


PAGES = {
    "login": Page("login", None, "Log in", "登录"),
    "wallboard": Page("wallboard", "queues.read", "Wallboard", "监控大屏"),
    "agent": Page("agent", "agents.act_self", "Agent panel", "坐席面板"),
    "dialplans": Page("dialplans", "dialplans.read", "Dialplan editor", "拨号方案编辑"),
    "review": Page("review", "quality.review", "Quality review", "质检评分"),
    "supervise": Page("supervise", "supervision.act", "Supervise", "班长监听"),
}


@dataclass(frozen=True, slots=True)
class Console:
    static: Path
    pages: Path


CONSOLE = web.AppKey("ivr.console", Console)


def home_of(who: Principal) -> str:
    """The page a role starts on."""
    return f"{PREFIX}/agent" if who.role == "agent" else f"{PREFIX}/wallboard"


def install(app: web.Application) -> None:
    """Add the console's routes to ``app`` (the API must be installed: the pages read
    its session store)."""
    root = Path(str(resources.files("ivr.console")))
    app[CONSOLE] = Console(root / "static", root / "pages")
    app.router.add_get("/", _root)
    app.router.add_get(PREFIX, _root)
    app.router.add_get(PREFIX + "/", _root)
    for name in PAGES:
        app.router.add_get(f"{PREFIX}/{name}", _page)
    app.router.add_get(PREFIX + "/static/{name}", _static)
    app.middlewares.append(_headers)


@web.middleware
async def _headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    resp = await handler(request)
    if request.path == "/" or request.path.startswith(PREFIX):
        for k, v in SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
    return resp


async def _who(request: web.Request) -> Principal | None:
    sessions = request.app[API].sessions
    session_id = request.cookies.get(COOKIE)
    if sessions is None or not session_id:
        return None
    session = await sessions.get(session_id)
    return None if session is None else session.principal


async def _root(request: web.Request) -> web.StreamResponse:
    who = await _who(request)
    raise web.HTTPSeeOther(home_of(who) if who is not None else f"{PREFIX}/login")


def _html(request: web.Request, page: Page) -> web.Response:
    """The login page's own shell, or the one shell of every other page (``app.html``:
    header, notice, main) with the page's title, module and class."""
    pages = request.app[CONSOLE].pages
    if page.permission is None:
        text = (pages / f"{page.name}.html").read_text(encoding="utf-8")
    else:
        text = Template((pages / "app.html").read_text(encoding="utf-8")).substitute(
            name=page.name, title_zh=page.title_zh, title_en=page.title_en)
    return web.Response(text=text, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


def _forbidden(page: Page, who: Principal) -> web.Response:
    text = f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>403</title>
<link rel="stylesheet" href="{PREFIX}/static/console.css"></head>
<body class="refused"><main><h1>403</h1>
<p id="refused" data-page="{page.name}" data-role="{who.role}">角色 {who.role} 无权访问
“{page.title_zh}”。<br>The role {who.role} may not open the {page.title_en} page.</p>
<p><a href="{home_of(who)}">返回 Back</a></p></main></body></html>
"""
    return web.Response(status=403, text=text, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


async def _page(request: web.Request) -> web.StreamResponse:
    page = PAGES[request.path.rsplit("/", 1)[1]]
    who = await _who(request)
    if page.permission is None:
        if who is not None:
            raise web.HTTPSeeOther(home_of(who))
        return _html(request, page)
    if who is None:
        raise web.HTTPSeeOther(f"{PREFIX}/login")
    if not who.can(page.permission):
        return _forbidden(page, who)
    return _html(request, page)


_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    suffix = Path(name).suffix
    folder = request.app[CONSOLE].static
    path = folder / name
    if (suffix not in _TYPES or "/" in name or name.startswith(".")
            or not path.is_file()):
        raise web.HTTPNotFound()
    return web.Response(body=path.read_bytes(), content_type=_TYPES[suffix],
                        charset="utf-8" if suffix != ".svg" else None,
                        headers={"Cache-Control": "no-cache"})
