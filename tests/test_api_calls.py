"""Actions on live calls over the HTTP API (ivr/api/call_actions.py): hang-up, on the
emulator and a real Redis, every response checked against the document.
An unknown or ended call, or an agent's call that is not its own: refused with nothing
sent to Asterisk; supervisors hang up any call, an agent the one it is with; audited."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from ivr.sim import CallerScript, Emulator, EmulatorConfig
from ivr.sim.app_queue import AgentScript
from ivr.sim.clock import Clock
from tests.test_agents_e2e import etc_with_desk, spy_actions
from tests.test_api import Api, _feed, _next, api_app


async def _calls(api: Api, token: str, n: int) -> list[dict[str, Any]]:
    """The calls the token sees, once there are ``n`` (the bridge learns of a call from
    AMI events, asynchronously)."""
    async with asyncio.timeout(10):
        # polling the endpoint under test
        while len(calls := (await api.call("GET", "/api/calls", token))["calls"]) != n:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    return calls  # type: ignore[no-any-return]


async def test_hangup_by_role_unknown_and_ended_calls(tmp_path: Path, redis_url: str) -> None:
    agents = [AgentScript("SIP/wangfang", ring_time=1)]
    # scaled real time, not virtual: a virtual clock would jump to the end of a call
    # that nobody ends while the test reads the API (the emulator is quiet meanwhile)
    async with Emulator(EmulatorConfig(etc=etc_with_desk(tmp_path), clock=Clock(speed=4),
                                       agents=agents)) as emu, \
            api_app(tmp_path, redis_url, emu, desk=True) as (api, app):
        sup = await api.token("supervisor")
        wang = await api.token("agent", agent="SIP/wangfang")
        li = await api.token("agent", agent="SIP/lihua")
        sent = spy_actions(emu)

        # a caller waits in the queue, nobody logged in: not an agent's call
        waiting = await emu.place_call(CallerScript(number="13900139000", context="desk-in",
                                                    exten="1", talk_time=None, patience=None))
        (c1,) = await _calls(api, sup, 1)
        err = await api.call("POST", f"/api/calls/{c1['call_id']}/hangup", wang,
                             expect=403)
        assert err["code"] == "not_own_call" and err["message"]["zh"]
        for unknown in ("nosuch", "1700000000.99"):
            err = await api.call("POST", f"/api/calls/{unknown}/hangup", sup, expect=404)
            assert err["code"] == "unknown_call" and "nothing sent" in err["message"]["en"]
        err = await api.call("POST", f"/api/calls/{c1['call_id']}/hangup", sup,
                             json_body={"cause": 16}, expect=400)
        assert err["code"] == "invalid_body"
        assert "Hangup" not in sent  # refused before anything went to Asterisk

        # a supervisor hangs up any call: every channel of it, the caller's first
        done = await api.call("POST", f"/api/calls/{c1['call_id']}/hangup", sup,
                              json_body={})
        assert done["call_id"] == c1["call_id"] and done["channels"] == [waiting.name]
        async with asyncio.timeout(10):
            await waiting.wait()
        await _calls(api, sup, 0)
        err = await api.call("POST", f"/api/calls/{c1['call_id']}/hangup", sup, expect=404)
        assert err["code"] == "unknown_call" and "already ended" in err["message"]["en"]
        assert "已结束" in err["message"]["zh"]
        assert sent.count("Hangup") == 1

        # an agent hangs up the call it is with (caller and agent leg), not another's
        await api.call("POST", "/api/agents/login", wang, json_body={
            "interface": "SIP/wangfang", "queues": {"desk": 0}, "name": "王芳"})
        feed = await _feed(api, wang)
        await _next(feed, type="hello")
        # deltas: the calls that changed or left, not the whole list each time
        deltas: dict[str, aiohttp.ClientWebSocketResponse] = {}
        for who, token in (("agent", wang), ("supervisor", sup)):
            deltas[who] = ws = await api.http.ws_connect(api.base + "/api/feed")
            await ws.send_json({"token": token, "since": None, "deltas": True})
            assert (await _next(ws, type="hello"))["deltas"] is True
        talking = await emu.place_call(CallerScript(number="13700137000", context="desk-in",
                                                    exten="1", talk_time=None, patience=None))
        (c2,) = await _calls(api, wang, 1)
        assert (c2["agent"], c2["agent_interface"], c2["channels"]) == ("王芳", "SIP/wangfang", 2)
        async with asyncio.timeout(10):  # the live feed shows the agent its own call
            while not (mine := await _next(feed, topic="calls"))["data"]:
                pass
        assert [(c["call_id"], c["caller"], c["agent_interface"]) for c in mine["data"]] == [
            (c2["call_id"], "13700137000", "SIP/wangfang")]
        await feed.close()
        for who, number in (("agent", "13700137000"), ("supervisor", "137****7000")):
            async with asyncio.timeout(10):  # the call, once it is with the agent
                while True:
                    got = await _next(deltas[who], type="delta", topic="calls")
                    if any(c["agent_interface"] for c in got["upsert"]):
                        break
            assert [(c["call_id"], c["caller"]) for c in got["upsert"]] == [
                (c2["call_id"], number)]
        err = await api.call("POST", f"/api/calls/{c2['call_id']}/hangup", li, expect=403)
        assert err["code"] == "not_own_call"
        done = await api.call("POST", f"/api/calls/{c2['call_id']}/hangup", wang)
        assert done["channels"][0] == talking.name and len(done["channels"]) in (1, 2)
        async with asyncio.timeout(10):
            await talking.wait()
        await _calls(api, sup, 0)
        for ws in deltas.values():  # the call left: removed, nothing else sent
            async with asyncio.timeout(10):
                while not (got := await _next(ws, type="delta", topic="calls"))["remove"]:
                    pass
            assert got["remove"] == [c2["call_id"]] and got["upsert"] == []
            await ws.close()

        records = (await api.call("GET", "/api/audit", sup))["records"]
        assert [(r["action"], r["role"], r["target"], r["result"])
                for r in records[::-1] if r["action"] == "calls.hangup"] == [
            ("calls.hangup", "agent", c1["call_id"], "not_own_call"),
            ("calls.hangup", "supervisor", "nosuch", "unknown_call"),
            ("calls.hangup", "supervisor", "1700000000.99", "unknown_call"),
            ("calls.hangup", "supervisor", c1["call_id"], "invalid_body"),
            ("calls.hangup", "supervisor", c1["call_id"], "ok"),
            ("calls.hangup", "supervisor", c1["call_id"], "unknown_call"),
            ("calls.hangup", "agent", c2["call_id"], "not_own_call"),
            ("calls.hangup", "agent", c2["call_id"], "ok")]
