"""Supervision over the HTTP API (real HTTP, tokens in Redis, the emulator): a supervisor
lists the calls they may join, joins, switches and leaves, each audited; an agent token
is refused and sees the session on its own call only as the policy says; a call outside
the supervisor's queues, a bad mode, an unknown session: declared errors, nothing sent."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ivr.app import PIPELINE
from ivr.sim.callers import CallerScript
from ivr.sim.emulator import Emulator, EmulatorConfig
from ivr.supervision.service import SUPERVISION
from tests.test_api import api_app
from tests.test_supervision_e2e import POLICY, long_agents_etc


@pytest.mark.timeout(90)
async def test_join_switch_leave_over_http(tmp_path: Path, redis_url: str) -> None:
    policy = tmp_path / "staff.toml"
    policy.write_text(POLICY, encoding="utf-8")
    async with Emulator(EmulatorConfig(etc=long_agents_etc(tmp_path), speed=10)) as emu, \
            api_app(tmp_path, redis_url, emu, staff_policy=policy) as (api, app):
        boss, _ = await api.tokens.create("supervisor", name="张班长")
        other, _ = await api.tokens.create("supervisor", name="李班长")
        agent, _ = await api.tokens.create("agent", name="1001",
                                           agent="Local/1001@agent-local/n")
        svc = app[SUPERVISION]
        connected = asyncio.Event()
        app[PIPELINE].add_listener(lambda evs: connected.set() if any(
            e.type == "agent.connected" for e in evs) else None)
        await emu.place_call(CallerScript(number="13300133000", exten="6000",
                                          talk_time=None, patience=None))
        async with asyncio.timeout(20):
            await connected.wait()
        (call,) = (await api.call("GET", "/api/supervision/calls", boss))["calls"]
        assert call["queue"] == "hotline" and call["caller"] != "13300133000"  # masked
        call_id = call["call_id"]

        refused = await api.call("POST", "/api/supervision/sessions", agent,
                                 json_body={"call_id": call_id}, expect=403)
        assert refused["message"]["zh"] and refused["message"]["en"]
        out = await api.call("POST", "/api/supervision/sessions", other,
                             json_body={"call_id": call_id}, expect=403)
        assert out["code"] == "outside_supervised_queues"
        bad = await api.call("POST", "/api/supervision/sessions", boss,
                             json_body={"call_id": call_id, "mode": "shout"}, expect=400)
        assert bad["code"] == "invalid_body"
        assert svc.sessions.by_id == {}  # nothing was sent

        s = await api.call("POST", "/api/supervision/sessions", boss,
                           json_body={"call_id": call_id, "mode": "listen"}, expect=202)
        assert s["status"] == "ringing" and s["phone"] == "Local/1002@agent-local"
        async with asyncio.timeout(20):
            await svc.wait_for(lambda: svc.get(s["id"]).status == "active")
        mine = await api.call("GET", "/api/supervision/sessions", agent)
        assert mine["show_agent"] is True and [x["id"] for x in mine["sessions"]] == [s["id"]]
        await api.call("POST", f"/api/supervision/sessions/{s['id']}/mode", boss,
                       json_body={"mode": "whisper"}, expect=202)
        async with asyncio.timeout(20):
            await svc.wait_for(lambda: svc.get(s["id"]).status == "active")
        left = await api.call("POST", f"/api/supervision/sessions/{s['id']}/leave", boss,
                              json_body={})
        assert left["status"] in ("active", "ended")
        async with asyncio.timeout(20):
            await svc.wait_for(lambda: svc.get(s["id"]).status == "ended")
        got = await api.call("GET", f"/api/supervision/sessions/{s['id']}", boss)
        assert got["modes"] == ["listen", "whisper"] and got["reason"] == "left"
        await api.call("GET", "/api/supervision/sessions/nope", boss, expect=404)
        records = (await api.call("GET", "/api/audit", boss))["records"]
        acts = [(r["action"], r["result"]) for r in reversed(records)
                if r["action"].startswith("supervision.")]
        assert acts == [("supervision.join", "forbidden"),
                        ("supervision.join", "outside_supervised_queues"),
                        ("supervision.join", "invalid_body"),
                        ("supervision.join", "ok"), ("supervision.mode", "ok"),
                        ("supervision.leave", "ok")]
