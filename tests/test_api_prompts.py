"""Voice prompts over the HTTP API (ivr/api/prompt_routes.py): real recordings (made
with ffmpeg) uploaded raw and as a form, imported into a copy of the prompts directory
in Asterisk's format; admins only; oversized, empty, non-audio and badly named uploads
refused with nothing changed; the check; every response checked against the document."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from ivr.api import prompt_routes
from ivr.prompts.formats import inspect_audio
from ivr.prompts.manifest import IMPORTED, load_manifest
from ivr.sim import Emulator, EmulatorConfig
from ivr.sim.clock import VirtualClock
from tests.test_api import Api, api_app, check_response
from tests.test_dialplan_support import SHIPPED
from tests.test_prompts_audio import ffmpeg_tone

PROMPTS = SHIPPED.parent / "prompts"


async def _form(api: Api, path: str, token: str, field: str, data: bytes, filename: str,
                content_type: str, expect: int) -> dict[str, object]:
    form = aiohttp.FormData()
    form.add_field(field, data, filename=filename, content_type=content_type)
    async with api.http.put(api.base + path, data=form,
                            headers={"Authorization": f"Bearer {token}"}) as resp:
        body = await resp.json()
        check_response("PUT", path, resp.status, resp.headers["Content-Type"], body)
        assert resp.status == expect, body
        return body  # type: ignore[no-any-return]


def test_upload_names_are_plain_file_names() -> None:
    assert prompt_routes._original("../../etc/录音 hold.mp3", "audio/mpeg") == "hold.mp3"
    assert prompt_routes._original("a b.wav", "audio/wav") == "a_b.wav"
    assert prompt_routes._original(None, "audio/x-wav; codecs=1") == "upload.x-wav"
    assert prompt_routes._original("..", "application/octet-stream") == "upload.bin"


async def test_upload_import_check_and_refusals(
        tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    prompts = tmp_path / "prompts"
    shutil.copytree(PROMPTS, prompts)
    studio = ffmpeg_tone(tmp_path / "studio.wav", rate=44100, channels=2, volume=0.05)
    mp3 = ffmpeg_tone(tmp_path / "hold.mp3", rate=44100, channels=2, volume=0.9,
                      codec=["-c:a", "libmp3lame", "-b:a", "64k"])
    async with Emulator(EmulatorConfig(clock=VirtualClock())) as emu, \
            api_app(tmp_path, redis_url, emu, prompts_dir=prompts) as (api, app):
        admin = await api.token("admin")
        sup = await api.token("supervisor")
        before = (prompts / "zh" / "welcome.wav").read_bytes()

        # admins only: nothing read, nothing changed
        for who in (sup, await api.token("agent", agent="SIP/wangfang")):
            await api.call("PUT", "/api/prompts/zh/welcome", who, data=studio.read_bytes(),
                           expect=403)
            await api.call("GET", "/api/prompts/check", who, expect=403)

        # a raw body: converted to 8 kHz mono 16-bit PCM, level-normalised, recorded
        done = await api.call("PUT", "/api/prompts/zh/welcome?peak_dbfs=-6", admin,
                              data=studio.read_bytes(), headers={"Content-Type": "audio/wav"})
        assert (done["file"], done["original"]) == ("zh/welcome.wav", "upload.wav")
        assert 950 <= done["duration_ms"] <= 1050 and -6.3 <= done["peak_dbfs"] <= -5.7
        info = inspect_audio(prompts / "zh" / "welcome.wav")
        assert (info.codec, info.sample_rate, info.channels, info.sample_width) == (
            "pcm", 8000, 1, 2)
        assert info.problems() == []
        entry = load_manifest(prompts).get("zh", "welcome")
        assert entry is not None and entry.source == IMPORTED
        assert entry.original == "upload.wav"

        # a form's 'file' part (an MP3), a new prompt name
        done = await _form(api, "/api/prompts/en/hold-notice", admin, "file",
                           mp3.read_bytes(), "hold.mp3", "audio/mpeg", 200)
        assert done["original"] == "hold.mp3"
        assert inspect_audio(prompts / "en" / "hold-notice.wav").sample_rate == 8000

        # refused, nothing changed: not audio, empty, bad names and levels, no 'file'
        now = (prompts / "zh" / "welcome.wav").read_bytes()
        assert now != before
        err = await api.call("PUT", "/api/prompts/zh/welcome", admin,
                             data=b"this is not audio" * 100, expect=400)
        assert err["code"] == "invalid_audio" and "nothing imported" in err["message"]["en"]
        assert str(tmp_path) not in json.dumps(err) and "/tmp" not in json.dumps(err)
        err = await api.call("PUT", "/api/prompts/zh/welcome", admin, data=b"", expect=400)
        assert err["code"] == "invalid_upload"
        for path, code in (("/api/prompts/zh/bad%20name", "invalid_prompt"),
                           ("/api/prompts/x..y/welcome", "invalid_prompt"),
                           ("/api/prompts/zh/welcome?peak_dbfs=loud", "invalid_level"),
                           ("/api/prompts/zh/welcome?peak_dbfs=3", "invalid_audio")):
            err = await api.call("PUT", path, admin, data=studio.read_bytes(), expect=400)
            assert err["code"] == code, (path, err)
        err = await _form(api, "/api/prompts/zh/welcome", admin, "other", b"x", "a.wav",
                          "audio/wav", 400)
        assert err["code"] == "invalid_upload"
        assert (prompts / "zh" / "welcome.wav").read_bytes() == now

        # oversized (a smaller limit here): 413, by its Content-Length or as it streams
        monkeypatch.setattr(prompt_routes, "MAX_UPLOAD", 64 * 1024)
        big = ffmpeg_tone(tmp_path / "long.wav", rate=8000, channels=1, volume=0.5,
                          seconds=5)  # 80 kB
        err = await api.call("PUT", "/api/prompts/zh/welcome", admin,
                             data=big.read_bytes(), expect=413)
        assert err["code"] == "payload_too_large"

        async def chunks() -> AsyncIterator[bytes]:
            data = big.read_bytes()
            for i in range(0, len(data), 8192):
                yield data[i:i + 8192]

        async with api.http.put(api.base + "/api/prompts/zh/welcome", data=chunks(),
                                headers={"Authorization": f"Bearer {admin}"}) as resp:
            assert resp.status == 413 and resp.headers.get("Content-Length") is not None
            assert (await resp.json())["code"] == "payload_too_large"
        err = await _form(api, "/api/prompts/zh/welcome", admin, "file", big.read_bytes(),
                          "long.wav", "audio/wav", 413)
        assert (prompts / "zh" / "welcome.wav").read_bytes() == now

        # the check: every catalog prompt there; one removed is an error
        report = await api.call("GET", "/api/prompts/check?lang=zh", admin)
        assert report["languages"] == ["zh"] and report["errors"] == 0 and report["ok"]
        (prompts / "zh" / "welcome.wav").unlink()
        report = await api.call("GET", "/api/prompts/check?lang=zh", admin)
        assert not report["ok"] and [(p["name"], p["kind"]) for p in report["problems"]
                                     if p["severity"] == "error"] == [("welcome", "missing")]
        err = await api.call("GET", "/api/prompts/check?lang=xx", admin, expect=400)
        assert err["code"] == "invalid_language"

        records = (await api.call("GET", "/api/audit", admin))["records"]
        imports = [(r["role"], r["target"], r["result"]) for r in records[::-1]
                   if r["action"] == "prompts.import"]
        assert imports[:4] == [("supervisor", "", "forbidden"),  # refused before the handler
                               ("agent", "", "forbidden"),
                               ("admin", "zh/welcome", "ok"), ("admin", "en/hold-notice", "ok")]
        assert imports[-1] == ("admin", "zh/welcome", "payload_too_large")
