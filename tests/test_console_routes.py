"""The console's pages and files over plain HTTP (ivr/console/routes.py): the gate by the
session's role on the server, the security headers, the files served (and nothing
else), without a browser."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from ivr.console.routes import CSP, PAGES
from ivr.sim import Emulator, EmulatorConfig
from ivr.sim.clock import VirtualClock
from tests.test_api import api_app


async def test_pages_gated_by_role_headers_and_files(tmp_path: Path, redis_url: str) -> None:
    async with Emulator(EmulatorConfig(clock=VirtualClock())) as emu, \
            api_app(tmp_path, redis_url, emu) as (api, app):
        tokens = {role: await api.token(role, agent="SIP/wangfang" if role == "agent" else None)
                  for role in ("agent", "supervisor", "admin")}
        async with aiohttp.ClientSession() as anon:
            # no session: every page but the login page sends to the login page
            for name in PAGES:
                async with anon.get(f"{api.base}/console/{name}",
                                    allow_redirects=False) as resp:
                    if name == "login":
                        assert resp.status == 200
                        assert resp.headers["Content-Security-Policy"] == CSP
                        assert resp.headers["X-Frame-Options"] == "DENY"
                        assert resp.headers["Cache-Control"] == "no-store"
                        assert "<script" not in (await resp.text()).split(
                            'src="/console/static/login.js"')[1]  # no inline script
                    else:
                        assert resp.status == 303, name
                        assert resp.headers["Location"] == "/console/login"
            async with anon.get(api.base + "/", allow_redirects=False) as resp:
                assert resp.status == 303 and resp.headers["Location"] == "/console/login"
            # files: the console's own, by name, of the types it serves; nothing else
            async with anon.get(api.base + "/console/static/console.js") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "text/javascript; charset=utf-8"
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
            for bad in ("routes.py", "..%2Froutes.py", "%2e%2e%2f__init__.py", ".hidden.js",
                        "nosuch.js", "login.html"):
                async with anon.get(f"{api.base}/console/static/{bad}") as resp:
                    assert resp.status == 404, bad
                    assert (await resp.json())["code"] == "not_found"

        allowed = {"agent": {"wallboard", "agent"},
                   "supervisor": {"wallboard", "agent", "dialplans", "review", "supervise"},
                   "admin": {"wallboard", "agent", "dialplans", "review", "supervise"}}
        for role, token in tokens.items():
            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(cookie_jar=jar) as http:
                async with http.post(api.base + "/api/session", json={"token": token}) as r:
                    assert r.status == 200
                async with http.get(api.base + "/console/", allow_redirects=False) as r:
                    home = "/console/agent" if role == "agent" else "/console/wallboard"
                    assert r.status == 303 and r.headers["Location"] == home
                async with http.get(api.base + "/console/login",
                                    allow_redirects=False) as r:
                    assert r.status == 303 and r.headers["Location"] == home
                for name in set(PAGES) - {"login"}:
                    async with http.get(f"{api.base}/console/{name}",
                                        allow_redirects=False) as r:
                        text = await r.text()
                        if name in allowed[role]:
                            assert r.status == 200, (role, name)
                            assert f'src="/console/static/{name}.js"' in text
                        else:  # refused by the server, in both languages
                            assert r.status == 403, (role, name)
                            assert "may not open" in text and "无权访问" in text
                            assert r.headers["Content-Security-Policy"] == CSP
