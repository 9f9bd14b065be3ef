"""Browser sessions (ivr/api/sessions.py, issue 12) over real HTTP on 127.0.0.1, against
the emulator and a real Redis: a token in the body is exchanged for an HttpOnly,
SameSite=Strict cookie; Redis holds only the session id's hash, with an expiry; every
mutating request made with the cookie needs the session's CSRF token (and no foreign
Origin); Bearer clients are unaffected; revoking the token or logging out ends the
session; failed logins are slowed down; the live feed takes the session too.  Every
response is checked against the OpenAPI document."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from ivr.api.http import openapi
from ivr.api.sessions import COOKIE, CSRF_HEADER, csrf_for
from ivr.sim import Emulator, EmulatorConfig
from ivr.sim.clock import VirtualClock
from ivr.sim.emulator import DEFAULT_ETC
from tests.test_api import Api, _next, api_app
from tests.test_dialplan_support import SHIPPED, prompts_for

BAD = "ivr_000000000000_" + "A" * 43


async def test_session_cookie_csrf_logout_and_revocation(tmp_path: Path,
                                                         redis_url: str) -> None:
    async with Emulator(EmulatorConfig(clock=VirtualClock())) as emu, \
            api_app(tmp_path, redis_url, emu) as (api, app), \
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        browser = Api(http, api.base, api.tokens, api.redis)
        admin = await api.token("admin")

        # the login answer: who, the CSRF token; the cookie HttpOnly and SameSite=Strict
        async with http.post(api.base + "/api/session", json={"token": admin}) as resp:
            assert resp.status == 200
            session = await resp.json()
            raw_cookie = resp.headers["Set-Cookie"]
        assert session["role"] == "admin" and session["agent"] is None
        assert "HttpOnly" in raw_cookie and "SameSite=Strict" in raw_cookie
        assert "Path=/" in raw_cookie and "Secure" not in raw_cookie  # plain HTTP here
        session_id = http.cookie_jar.filter_cookies(URL(api.base))[COOKIE].value
        assert session["csrf"] == csrf_for(session_id) != session_id
        # Redis keeps the id's hash only, with an expiry
        prefix = api.tokens.key.rsplit(":", 1)[0]  # this test's keys only
        keys = [k.decode() async for k in api.redis.scan_iter(f"{prefix}:sessions:*")]
        assert keys == [f"{prefix}:sessions:" + hashlib.sha256(session_id.encode()).hexdigest()]
        stored = await api.redis.get(keys[0])
        assert session_id.encode() not in stored and admin.encode() not in stored
        assert 0 < await api.redis.ttl(keys[0]) <= 12 * 3600
        assert session["expires"] - session["created"] == pytest.approx(12 * 3600)

        # reads with the cookie alone; the CSRF token again from GET /api/session
        me = await browser.call("GET", "/api/me")
        assert (me["role"], me["token_id"]) == ("admin", session["token_id"])
        assert (await browser.call("GET", "/api/session"))["csrf"] == session["csrf"]
        err = await api.call("GET", "/api/session", admin, expect=404)  # a Bearer client
        assert err["code"] == "no_session"

        # a mutating request with the cookie: the CSRF token is required, and right
        err = await browser.call("POST", "/api/events/dead-letters/replay", json_body={},
                                 expect=403)
        assert err["code"] == "csrf_failed" and CSRF_HEADER in err["message"]["en"]
        err = await browser.call("POST", "/api/events/dead-letters/replay", json_body={},
                                 headers={CSRF_HEADER: csrf_for("another")}, expect=403)
        assert err["code"] == "csrf_failed"
        ok = {CSRF_HEADER: session["csrf"]}
        assert await browser.call("POST", "/api/events/dead-letters/replay", json_body={},
                                  headers=ok) == {"replayed": 0}
        # … and never from another site's page, even with the token
        err = await browser.call("POST", "/api/events/dead-letters/replay", json_body={},
                                 headers={**ok, "Origin": "https://evil.example"}, expect=403)
        assert err["code"] == "cross_site"
        # a Bearer client needs no CSRF token (the cookie is not used then)
        assert await browser.call("POST", "/api/events/dead-letters/replay", admin,
                                  json_body={}) == {"replayed": 0}
        trail = (await api.call("GET", "/api/audit", admin))["records"][::-1]
        assert [(r["action"], r["result"]) for r in trail] == [
            ("session.login", "ok"), ("events.replay", "csrf_failed"),
            ("events.replay", "csrf_failed"), ("events.replay", "ok"),
            ("events.replay", "cross_site"), ("events.replay", "ok")]

        # log out: with the CSRF token only; then the cookie is worthless
        err = await browser.call("DELETE", "/api/session", expect=403)
        assert err["code"] == "csrf_failed"
        assert await browser.call("DELETE", "/api/session", headers=ok) == {
            "ok": True, "ended": True}
        assert COOKIE not in http.cookie_jar.filter_cookies(URL(api.base))
        http.cookie_jar.update_cookies({COOKIE: session_id})  # a copy kept by an attacker
        err = await browser.call("GET", "/api/me", expect=401)
        assert err["code"] == "session_expired"
        assert await api.redis.exists(keys[0]) == 0

        # revoking the token ends its sessions at once
        sup = await api.token("supervisor")
        again = await browser.call("POST", "/api/session", json_body={"token": sup})
        assert (await browser.call("GET", "/api/me"))["role"] == "supervisor"
        assert await api.tokens.revoke(again["token_id"])
        err = await browser.call("GET", "/api/me", expect=401)
        assert err["code"] == "session_expired"
        # an expired cookie is not a failed authentication: the address is not locked out
        for _ in range(8):
            await browser.call("GET", "/api/queues", expect=401)
        assert (await api.call("GET", "/api/me", admin))["role"] == "admin"


async def test_failed_logins_slowed_down_and_no_token_in_url(tmp_path: Path,
                                                             redis_url: str) -> None:
    async with Emulator(EmulatorConfig(clock=VirtualClock())) as emu, \
            api_app(tmp_path, redis_url, emu) as (api, app):
        admin = await api.token("admin")
        assert openapi()["paths"]["/api/session"]["post"]["security"] == []
        err = await api.call("POST", f"/api/session?token={admin}", json_body={}, expect=400)
        assert err["code"] == "invalid_body"  # the token is read from the body only
        err = await api.call("POST", "/api/session", json_body={"token": 5}, expect=400)
        assert err["code"] == "invalid_body"
        for _ in range(5):
            err = await api.call("POST", "/api/session", json_body={"token": BAD},
                                 expect=401)
            assert err["code"] == "invalid_token"
        # the sixth try within the window: slowed down, even with the right token
        async with api.http.post(api.base + "/api/session", json={"token": admin}) as resp:
            assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
            assert (await resp.json())["code"] == "too_many_failures"


async def test_live_feed_with_a_session(tmp_path: Path, redis_url: str) -> None:
    async with Emulator(EmulatorConfig(clock=VirtualClock())) as emu, \
            api_app(tmp_path, redis_url, emu) as (api, app), \
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        browser = Api(http, api.base, api.tokens, api.redis)
        wang = await api.token("agent", agent="SIP/wangfang")
        session = await browser.call("POST", "/api/session", json_body={"token": wang})
        ws = await http.ws_connect(api.base + "/api/feed")
        await ws.send_json({"csrf": session["csrf"], "since": None})
        hello = await _next(ws, type="hello")
        assert (hello["role"], hello["agent"]) == ("agent", "SIP/wangfang")
        await ws.close()
        # the cookie without its CSRF token (a cross-site page could not know it): refused
        ws = await http.ws_connect(api.base + "/api/feed")
        await ws.send_json({"csrf": csrf_for("guess"), "since": None})
        err = await _next(ws, type="error")
        assert err["code"] == "invalid_token"
        assert (await ws.receive()).type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4401


async def test_console_routes_pause_reasons_levels_working_and_publish_with_files(
        tmp_path: Path, redis_url: str) -> None:
    """The routes the console needs besides the existing ones, checked against the
    document: the pause-reason catalog, the last 24 hours' service levels, the working
    definition's files, and publish with edited files (refused: nothing written)."""
    etc = tmp_path / "etc"
    shutil.copytree(DEFAULT_ETC, etc)
    (etc / "extensions.conf").write_text("[general]\nstatic=yes\n")
    (etc / "queues.conf").write_text("[general]\n")
    shutil.copy(SHIPPED.parent / "asterisk-conf" / "extensions_site.conf", etc)
    src = tmp_path / "dialplans"
    shutil.copytree(SHIPPED, src)
    prompts = prompts_for(src, tmp_path / "prompts")
    async with Emulator(EmulatorConfig(etc=etc, clock=VirtualClock())) as emu, \
            api_app(tmp_path, redis_url, emu, asterisk_conf_dir=etc, dialplans_dir=src,
                    prompts_dir=prompts) as (api, app):
        agent = await api.token("agent", agent="SIP/wangfang")
        sup = await api.token("supervisor")
        admin = await api.token("admin")
        reasons = (await api.call("GET", "/api/agents/pause-reasons", agent))["reasons"]
        assert {"code": "lunch", "label": "午休 lunch"} in reasons
        err = await api.call("GET", "/api/calls/1.999/tickets", agent, expect=404)
        assert err["code"] == "unknown_call"  # open tickets: of a live call it may see
        levels = await api.call("GET", "/api/levels", agent)
        assert levels["window_s"] == 24 * 3600 and levels["total"]["offered"] == 0

        await api.call("GET", "/api/dialplans/working", agent, expect=403)
        files = (await api.call("GET", "/api/dialplans/working", sup))["files"]
        assert files == {p.name: p.read_text(encoding="utf-8")
                         for p in sorted(src.glob("*.yaml"))}
        hotline = files["hotline.yaml"]
        # refused: an invalid edit, a bad file name — the working files stay as they were
        err = await api.call("POST", "/api/dialplans/publish", admin, json_body={
            "files": {"hotline.yaml": hotline + "\nbogus: [\n"}}, expect=400)
        assert err["code"] == "invalid_definition"
        err = await api.call("POST", "/api/dialplans/publish", admin, json_body={
            "files": {"../hotline.yaml": hotline}}, expect=400)
        assert err["code"] == "invalid_file_name"
        await api.call("POST", "/api/dialplans/publish", sup, json_body={
            "files": {"hotline.yaml": hotline}}, expect=403)
        assert (src / "hotline.yaml").read_text(encoding="utf-8") == hotline
        # published: the edit is live, written to the working directory, and this
        # bridge's IVR runs it (the catalog has the new reason)
        edited = hotline.replace('  break:    {label: "休息 break"}',
                                 '  break:    {label: "休息 break"}\n'
                                 '  visit:    {label: "走访 field visit"}')
        done = await api.call("POST", "/api/dialplans/publish", admin,
                              json_body={"files": {"hotline.yaml": edited}})
        assert done["status"] == "published" and done["files_changed"]
        assert (src / "hotline.yaml").read_text(encoding="utf-8") == edited
        cur = await api.call("GET", "/api/dialplans/current", sup)
        assert cur["version"] == done["version"]
        reasons = (await api.call("GET", "/api/agents/pause-reasons", agent))["reasons"]
        assert {"code": "visit", "label": "走访 field visit"} in reasons
        trail = (await api.call("GET", "/api/audit", admin))["records"][::-1]
        assert [(r["action"], r["result"]) for r in trail] == [
            ("dialplans.publish", "invalid_definition"),
            ("dialplans.publish", "invalid_file_name"),
            ("dialplans.publish", "forbidden"), ("dialplans.publish", "ok")]
