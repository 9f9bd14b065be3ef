"""The callbacks' HTTP routes (ivr/callbacks/routes.py): supervisors list and cancel jobs
(numbers masked, audited), agents may not; an unknown or finished job is a clear zh/en
error; nothing is sent to Asterisk.  Responses are checked against the OpenAPI document."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ivr.callbacks.service import CALLBACKS
from ivr.callbacks.state import Origin
from ivr.sim import Emulator, EmulatorConfig
from tests.test_api import api_app


async def test_list_read_cancel_over_http(tmp_path: Path, redis_url: str) -> None:
    async with Emulator(EmulatorConfig()) as emu, api_app(tmp_path, redis_url, emu) as (api, app):
        sent: list[str] = []
        dispatch = emu.ami.dispatch

        def spy(session: Any, msg: Any) -> Any:
            sent.append(msg.name)
            return dispatch(session, msg)

        emu.ami.dispatch = spy
        svc = app[CALLBACKS]
        job = await svc.request("13800138000", queue="hotline", reason="requested",
                                origin=Origin("1796521051.6", "12345", "zh", "12345",
                                              time.time()))
        sup, agent = await api.token("supervisor"), await api.token("agent", "PJSIP/1001")
        listed = await api.call("GET", "/api/callbacks", sup)
        assert [c["id"] for c in listed["callbacks"]] == [job.id]
        assert listed["callbacks"][0]["number"] != "13800138000"  # masked
        assert listed["callbacks"][0]["original_call_id"] == "1796521051.6"
        await api.call("GET", "/api/callbacks", agent, expect=403)
        await api.call("POST", f"/api/callbacks/{job.id}/cancel", agent, expect=403)
        one = await api.call("GET", f"/api/callbacks/{job.id}", sup)
        assert one["callback"]["state"] == "scheduled"
        done = await api.call("POST", f"/api/callbacks/{job.id}/cancel", sup)
        assert done["callback"]["state"] == "cancelled"
        again = await api.call("POST", f"/api/callbacks/{job.id}/cancel", sup, expect=409)
        assert again["code"] == "callback_finished" and "已结束" in again["message"]["zh"]
        unknown = await api.call("POST", "/api/callbacks/cb-20261206-000000000000/cancel",
                                 sup, expect=404)
        assert unknown["code"] == "unknown_callback"
        assert (await api.call("GET", "/api/callbacks", sup))["callbacks"] == []
        assert len((await api.call("GET", "/api/callbacks?all=1", sup))["callbacks"]) == 1
        # an operator schedules a promised callback; bad input changes nothing
        for bad, code in (({"number": "1380013800a"}, "undialable_number"),
                          ({"number": "anonymous"}, "undialable_number"),
                          ({"number": "13900139000", "queue": "nosuch"}, "unknown_queue")):
            err = await api.call("POST", "/api/callbacks", sup, json_body=bad,
                                 expect=404 if code == "unknown_queue" else 400)
            assert err["code"] == code and err["message"]["zh"] and err["message"]["en"]
        await api.call("POST", "/api/callbacks", agent, json_body={"number": "13900139000"},
                       expect=403)
        assert len((await api.call("GET", "/api/callbacks?all=1", sup))["callbacks"]) == 1
        made = await api.call("POST", "/api/callbacks", sup,
                              json_body={"number": "13900139000", "call_id": "1796521099.1"})
        assert (made["callback"]["queue"], made["callback"]["reason"],
                made["callback"]["original_call_id"]) == ("hotline", "operator", "1796521099.1")
        assert made["callback"]["state"] == "scheduled"
        assert "Originate" not in sent
