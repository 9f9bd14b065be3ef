"""``ivr agents …`` and ``ivr queues status`` against the emulator, with the one settings
model (IVR_AMI_* here; a settings file works the same)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from ivr.cli import main
from ivr.demo import SIM_AMI_SECRET, SIM_AMI_USER
from ivr.sim import Emulator, EmulatorConfig
from ivr.sim.clock import VirtualClock
from tests.test_agents_e2e import dialplans_with_desk, etc_with_desk


async def ivr(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_agents_and_queues_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    async with Emulator(EmulatorConfig(etc=etc_with_desk(tmp_path),
                                       clock=VirtualClock())) as emu:
        for key, value in {"IVR_AMI_HOST": "127.0.0.1", "IVR_AMI_PORT": str(emu.ami_port),
                           "IVR_AMI_USER": SIM_AMI_USER, "IVR_AMI_SECRET": SIM_AMI_SECRET,
                           "IVR_DIALPLANS_DIR": str(dialplans_with_desk(tmp_path)),
                           "IVR_ASTERISK_CONF_DIR": str(tmp_path / "conf")}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("IVR_CONFIG", raising=False)

        code, out, err = await ivr(capsys, "agents", "login", "PJSIP/2001", "--queue", "desk",
                                   "--queue", "hotline:3", "--name", "王芳")
        assert code == 0, err
        assert "desk" in out and "王芳" in out and "空闲 available" in out
        assert "penalty 3" in out
        members = {m.interface: m for m in emu.queues.queues["hotline"].members}
        assert members["PJSIP/2001"].penalty == 3 and members["PJSIP/2001"].name == "王芳"

        code, out, err = await ivr(capsys, "agents", "pause", "PJSIP/2001", "lunch")
        assert code == 0, err
        assert out.count("暂停 paused") == 2 and "午休 lunch" in out

        code, out, err = await ivr(capsys, "agents", "pause", "PJSIP/2001", "shopping")
        assert code == 2 and out == ""
        assert "'shopping' is not in the catalog" in err and "暂停原因" in err

        code, out, err = await ivr(capsys, "agents", "pause", "PJSIP/9999", "lunch")
        assert code == 2 and "not logged in to any queue" in err

        code, out, err = await ivr(capsys, "queues", "status", "desk")
        assert code == 0, err
        head, *rows = out.splitlines()
        assert head.startswith("desk: 0 waiting / 排队") and "暂停 paused 1" in head
        assert "wrap-up 30 s" in head
        assert any("PJSIP/2001" in r and "午休 lunch" in r for r in rows)

        code, out, err = await ivr(capsys, "queues", "status", "--json")
        assert code == 0, err
        queues = {q["queue"]: q for q in json.loads(out)["queues"]}
        (agent,) = [a for a in queues["desk"]["agents"] if a["interface"] == "PJSIP/2001"]
        assert (agent["state"], agent["paused_reason"]) == ("paused", "午休 lunch")

        code, out, err = await ivr(capsys, "queues", "status", "nosuch")
        assert code == 2 and "unknown queue 'nosuch'" in err

        code, out, err = await ivr(capsys, "agents", "unpause", "PJSIP/2001", "--queue",
                                   "desk")
        assert code == 0, err
        code, out, err = await ivr(capsys, "agents", "status", "PJSIP/2001", "--json")
        states = {a["queue"]: (a["state"], a["paused_reason_code"])
                  for a in json.loads(out)["agents"]}
        assert states == {"desk": ("available", None), "hotline": ("paused", "lunch")}

        code, out, err = await ivr(capsys, "agents", "logout", "PJSIP/2001")
        assert code == 0, err
        assert "logged out of desk, hotline" in out
        assert all(m.interface != "PJSIP/2001" for q in emu.queues.queues.values()
                   for m in q.members)

        monkeypatch.setenv("IVR_AMI_SECRET", "wrong")
        code, out, err = await ivr(capsys, "agents", "status")
        assert code == 1 and "cannot reach Asterisk" in err
