"""``ivr callbacks list|status|cancel`` over a private Redis: jobs listed with masked
numbers, one job's history, a cancel (its call event stored in the outbox), and the bad
input — an unknown or finished job — exiting 2 with a zh/en message, nothing changed."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest

from ivr.callbacks.service import CallbacksConfig, CallbackService
from ivr.callbacks.state import Job, Origin
from ivr.cli import main
from ivr.config import load_settings
from ivr.dialplan import load_definition
from ivr.events.model import CallEvent
from ivr.events.outbox import keys_for
from ivr.redisconn import connect as redis_connect
from tests.test_dialplan_support import SHIPPED


def _config(tmp_path: Path, redis_url: str) -> Path:
    f = tmp_path / "ivr.toml"
    f.write_text(f'[redis]\nurl = "{redis_url}"\n[events]\n'
                 f'stream_prefix = "test:cbcli:{uuid.uuid4().hex[:8]}"\n'
                 f'[paths]\ndialplans_dir = "{SHIPPED}"\n'
                 f'asterisk_conf_dir = "{tmp_path / "conf"}"\n', "utf-8")
    return f


def _add_job(config: Path, number: str) -> Job:
    settings = load_settings(config, env={})

    async def run() -> Job:
        redis = redis_connect(settings.redis_url)
        emitted: list[CallEvent] = []

        async def emit(events: list[CallEvent]) -> None:
            emitted.extend(events)

        try:
            svc = CallbackService(CallbacksConfig.from_settings(settings), redis,
                                  ami=lambda: None, emit=emit,
                                  definition=lambda: load_definition(SHIPPED))
            return await svc.request(number, queue="hotline", reason="abandoned",
                                     origin=Origin("1796521051.6", "12345", "zh", "12345",
                                                   time.time()))
        finally:
            await redis.aclose()

    return asyncio.run(run())


def _stream_types(config: Path) -> list[str]:
    settings = load_settings(config, env={})
    keys = keys_for(settings.events)

    async def run() -> list[str]:
        redis = redis_connect(settings.redis_url)
        try:
            out: list[str] = []
            for stream in keys.streams:
                for _, fields in await redis.xrange(stream):
                    out.append(CallEvent.loads(fields[b"e"]).type)
            return out
        finally:
            await redis.aclose()

    return asyncio.run(run())


def test_list_status_cancel(tmp_path: Path, redis_url: str,
                            capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, redis_url)
    job = _add_job(config, "13800138000")
    assert main(["callbacks", "list", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert job.id in out and "scheduled 待回拨" in out and "13800138000" not in out
    assert main(["callbacks", "list", "--json", "--config", str(config)]) == 0
    [shown] = json.loads(capsys.readouterr().out)
    assert (shown["id"], shown["state"], shown["original_call_id"]) == (
        job.id, "scheduled", "1796521051.6")
    assert main(["callbacks", "status", job.id, "--config", str(config)]) == 0
    assert "1796521051.6" in capsys.readouterr().out
    assert main(["callbacks", "cancel", job.id, "--config", str(config)]) == 0
    assert "cancelled / 已取消" in capsys.readouterr().out
    assert "callback.cancelled" in _stream_types(config)
    assert main(["callbacks", "list", "--config", str(config)]) == 0
    assert "no callback jobs / 无回拨任务" in capsys.readouterr().out
    # bad input: exit 2, a clear zh/en message, nothing changed
    assert main(["callbacks", "cancel", job.id, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "already cancelled" in err and "已结束" in err
    assert main(["callbacks", "cancel", "cb-20261206-000000000000",
                 "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "unknown callback job" in err and "不存在" in err
    assert main(["callbacks", "list", "--all", "--json", "--config", str(config)]) == 0
    assert [j["state"] for j in json.loads(capsys.readouterr().out)] == ["cancelled"]
