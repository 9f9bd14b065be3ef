"""Quality review end to end (emulator, the application with its recordings worker,
Redis, the ticket backend, real HTTP): a recorded agent call is archived, sampled for the
day, reviewed by a reviewer of its queue (timeline, recording with HTTP Range), refused to
a reviewer of another queue and to agents; a score off the form is refused and nothing is
stored or sent; a score on the form is a quality.scored call event after the archive; the
agent sees it and appeals once (quality.appealed)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from ivr.ami.client import AMISettings
from ivr.api.auth import TokenStore
from ivr.app import PIPELINE, AppOptions, build_app, running
from ivr.events.model import CallEvent
from ivr.quality.service import QUALITY
from ivr.sim.callers import CallerScript
from ivr.sim.emulator import Emulator, EmulatorConfig
from ivr.ticketsink.server import TicketSink
from tests.test_api import Api
from tests.test_recordings_app import settings_for
from tests.test_supervision_e2e import POLICY, long_agents_etc

FAST = AMISettings(ping_interval=0)
QUALITY_POLICY = POLICY + """
[quality]
share_per_agent = 0.5

[quality.reviewers."王质检"]
queues = ["hotline"]

[quality.reviewers."赵质检"]
queues = ["english"]
"""
GOOD = {"greeting": 15, "listening": 20, "accuracy": 25, "dispatch": 18, "closing": 10}


def of_call(sink: TicketSink, call_id: str) -> list[dict[str, Any]]:
    return [e for t in sink.store.tickets.values() if t.call_id == call_id for e in t.events]


@pytest.mark.timeout(120)
async def test_sample_review_score_appeal(tmp_path: Path, redis_url: str) -> None:
    policy = tmp_path / "staff.toml"
    policy.write_text(QUALITY_POLICY, encoding="utf-8")
    archive = tmp_path / "archive"
    prefix = f"test:q:{uuid.uuid4().hex[:8]}:api"
    async with Emulator(EmulatorConfig(etc=long_agents_etc(tmp_path), speed=20)) as emu, \
            TicketSink(b"s3cret") as sink:
        settings = settings_for(emu, sink, redis_url, staff_policy=policy,
                                recordings_dir=archive, http_port=0)
        app = build_app(settings, AppOptions(watch_s=None, ami=FAST, api_prefix=prefix))
        async with aioredis.from_url(redis_url) as redis, running(app) as runner, \
                aiohttp.ClientSession() as http:
            host, port = runner.addresses[0][:2]
            api = Api(http, f"http://{host}:{port}", TokenStore(redis, prefix), redis)
            wang, _ = await api.tokens.create("supervisor", name="王质检")
            zhao, _ = await api.tokens.create("supervisor", name="赵质检")
            agent, _ = await api.tokens.create("agent", name="1001",
                                               agent="Local/1001@agent-local/n")
            other, _ = await api.tokens.create("agent", name="1002",
                                               agent="Local/1002@agent-local/n")
            # a recorded agent call
            connected = asyncio.Event()
            ids: list[str] = []

            def listen(evs: list[CallEvent]) -> None:
                for e in evs:
                    if e.type == "agent.connected":
                        ids.append(e.call_id)
                        connected.set()
            app[PIPELINE].add_listener(listen)
            h = await emu.place_call(CallerScript(number="13900139000", exten="6000",
                                                  talk_time=None, patience=None))
            async with asyncio.timeout(20):
                await connected.wait()
            call_id = ids[0]  # the recording hooks start MixMonitor at the answer
            await emu.clock.sleep(3.0)
            emu.pbx.request_hangup(h.channel, 16)
            await h.wait()
            async with asyncio.timeout(60):
                await sink.wait_for(lambda st: any(
                    e["type"] == "recording.ready" and e["data"].get("stage") == "archived"
                    for e in of_call(sink, call_id)))
            await app[QUALITY].flush()

            # sampling: reviewers only
            await api.call("POST", "/api/quality/sample", agent, json_body={}, expect=403)
            drawn = await api.call("POST", "/api/quality/sample", wang, json_body={})
            (mine,) = [r for r in drawn["reviews"] if r["call_id"] == call_id]
            assert "agent_share" in mine["reasons"] and mine["status"] == "pending"
            assert mine["agent_interface"] == "Local/1001@agent-local/n"
            assert mine["caller"] != "13900139000" and "head" not in mine
            day = drawn["day"]
            # a reviewer sees only the queues they review
            listed = await api.call("GET", f"/api/quality/reviews?day={day}", zhao)
            assert listed["reviews"] == []
            refused = await api.call("GET", f"/api/quality/reviews/{call_id}", zhao,
                                     expect=403)
            assert refused["code"] == "outside_reviewed_queues"
            review = await api.call("GET", f"/api/quality/reviews/{call_id}", wang)
            types = [t["type"] for t in review["timeline"]]
            assert types[0] == "call.started" and "agent.connected" in types
            assert "recording.started" in types and types[-1] == "recording.ready"
            assert [i["key"] for i in review["form"]] == list(GOOD)

            # the recording, with seeking (HTTP Range), audited; not for another queue
            url = f"{api.base}/api/quality/reviews/{call_id}/recording"
            auth = {"Authorization": f"Bearer {wang}"}
            async with http.get(url, headers=auth) as resp:
                assert resp.status == 200 and resp.content_type == "audio/mpeg"
                whole = await resp.read()
            assert hashlib.sha256(whole).hexdigest() == review["recordings"][0]["sha256"]
            async with http.get(url, headers={**auth, "Range": "bytes=100-199"}) as resp:
                assert resp.status == 206
                assert resp.headers["Content-Range"] == f"bytes 100-199/{len(whole)}"
                assert await resp.read() == whole[100:200]
            async with http.get(url, headers={"Authorization": f"Bearer {zhao}"}) as resp:
                assert resp.status == 403

            # off the form: refused, nothing stored or sent
            for bad in ({**GOOD, "greeting": 16}, {k: v for k, v in GOOD.items()
                                                   if k != "closing"},
                        {**GOOD, "tone": 5}, {**GOOD, "accuracy": "25"},
                        {**GOOD, "dispatch": -1}):
                err = await api.call("POST", f"/api/quality/reviews/{call_id}/score", wang,
                                     json_body={"scores": bad}, expect=400)
                assert err["code"] == "off_form_score" and err["message"]["zh"]
            await api.call("POST", f"/api/quality/reviews/{call_id}/score", agent,
                           json_body={"scores": GOOD}, expect=403)
            assert (await api.call("GET", f"/api/quality/reviews/{call_id}", wang)
                    )["status"] == "pending"
            assert await api.call("GET", "/api/quality/my-scores", agent) == {"reviews": []}

            scored = await api.call("POST", f"/api/quality/reviews/{call_id}/score", wang,
                                    json_body={"scores": GOOD, "comment": "答复准确"})
            assert scored["status"] == "scored" and scored["total"] == 88
            again = await api.call("POST", f"/api/quality/reviews/{call_id}/score", wang,
                                   json_body={"scores": GOOD}, expect=409)
            assert again["code"] == "review_conflict"
            # the agent sees its score and appeals, once; another agent can do neither
            (own,) = (await api.call("GET", "/api/quality/my-scores", agent))["reviews"]
            assert own["total"] == 88 and own["scores"] == GOOD
            assert await api.call("GET", "/api/quality/my-scores", other) == {"reviews": []}
            assert (await api.call("POST", f"/api/quality/reviews/{call_id}/appeal", other,
                                   json_body={"reason": "x"}, expect=403)
                    )["code"] == "not_own_call"
            appealed = await api.call("POST", f"/api/quality/reviews/{call_id}/appeal", agent,
                                      json_body={"reason": "派单正确，请复核"})
            assert appealed["status"] == "appealed"
            await api.call("POST", f"/api/quality/reviews/{call_id}/appeal", agent,
                           json_body={"reason": "again"}, expect=409)

            async with asyncio.timeout(30):
                await sink.wait_for(lambda st: any(
                    e["type"] == "quality.appealed" for e in of_call(sink, call_id)))
            events = of_call(sink, call_id)
            tail = [e["type"] for e in events][-4:]
            assert tail == ["call.ended", "recording.ready", "quality.scored",
                            "quality.appealed"]
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            (q,) = [e for e in events if e["type"] == "quality.scored"]
            assert q["data"]["total"] == 88 and q["data"]["score_greeting"] == 15
            assert q["data"]["reviewer"] == "王质检"
            records = (await api.call("GET", "/api/audit", wang))["records"]
            acts = [(r["action"], r["result"]) for r in reversed(records)
                    if r["action"].startswith("quality.")]
            assert acts.count(("quality.score", "off_form_score")) == 5
            assert acts.count(("quality.recording", "ok")) == 2
            assert ("quality.recording", "outside_reviewed_queues") in acts
            assert ("quality.score", "ok") in acts and ("quality.appeal", "ok") in acts
