"""The satisfaction survey (一次一评, issue 10) on the emulator with the shipped definition,
the IVR on the real FastAGI server, on the virtual clock: when the agent ends the call the
caller goes on (Queue option ``c``) to the survey in the call's language; a key 1–5 is one
``survey.scored`` call event; no key, a hang-up during the survey or the caller ending the
call: no score and no error."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ivr.ami.messages import Event
from ivr.calls.steps import IvrStep
from ivr.events.builder import CallEventBuilder
from ivr.events.model import CallEvent
from ivr.sim.app_queue import AgentScript
from tests.test_fast_path import HOTLINE, Rig, _caller, etc, rig

__all__ = ["etc"]  # the fixture, imported for pytest

AGENTS = [AgentScript(i, ring_time=1.0, talk_time=3.0) for i in HOTLINE]  # agent ends


class Log:
    """AMI events as emitted, each with how many IVR steps were reported before it: the
    builder is fed both in the order they happened."""

    def __init__(self, steps: list[IvrStep]) -> None:
        self.steps = steps
        self.ami: list[tuple[int, dict[str, str]]] = []

    def __call__(self, name: str, body: str) -> None:
        headers = dict(line.split(": ", 1) for line in body.split("\r\n") if ": " in line)
        headers["Event"] = name
        self.ami.append((len(self.steps), headers))

    def call_events(self) -> list[CallEvent]:
        b = CallEventBuilder()
        out: list[CallEvent] = []
        fed = 0
        for before, headers in self.ami:
            while fed < before:
                out += b.feed_step(self.steps[fed])
                fed += 1
            out += b.feed_ami(Event(headers))
        for s in self.steps[fed:]:
            out += b.feed_step(s)
        return out


async def _run(r: Rig, **kw: object) -> tuple[list[CallEvent], list[tuple[str, str]], str]:
    log = Log(r.steps)
    r.emu.bus.tap.append(log)
    h = await r.emu.place_call(_caller(**kw))
    async with asyncio.timeout(60):
        await h.wait()
    apps = [(app, data) for _, app, data in r.seen.apps(h.name)]
    return log.call_events(), apps, h.name


def _scores(events: list[CallEvent]) -> list[object]:
    return [e.data["score"] for e in events if e.type == "survey.scored"]


def _no_errors(r: Rig, events: list[CallEvent]) -> None:
    assert not [s for s in r.steps if s.kind == "error"]
    assert not [e for e in events if e.type == "ivr.error"]


async def test_score_4_after_the_agent_hangs_up(tmp_path: Path, etc: Path) -> None:
    async with rig(tmp_path, etc, AGENTS) as r:
        # nothing during the greeting, 4 at the survey; the caller never hangs up
        events, apps, name = await _run(r, menu_digits=["", "4"], talk_time=None)
        assert _scores(events) == [4]
        reads = [d for a, d in apps if a == "Read"]
        assert reads[-1] == "IVR_SURVEY,zh/survey,1,,1,5"
        assert ("Playback", "zh/survey-thanks") in apps
        # the agent's legs never ran the survey
        for _, n, h in r.seen.events:
            if n == "Newexten" and h.get("Channel") != name:
                assert "survey" not in h.get("AppData", "")
        assert [e.type for e in events].count("call.ended") == 1
        _no_errors(r, events)


async def test_one_retry_after_an_invalid_key(tmp_path: Path, etc: Path) -> None:
    async with rig(tmp_path, etc, AGENTS) as r:
        events, apps, _ = await _run(r, menu_digits=["", "7", "2"], talk_time=None)
        assert _scores(events) == [2]
        assert [d for a, d in apps if a == "Read"].count("IVR_SURVEY,zh/survey,1,,1,5") == 2


async def test_two_invalid_keys_no_score(tmp_path: Path, etc: Path) -> None:
    async with rig(tmp_path, etc, AGENTS) as r:
        events, apps, _ = await _run(r, menu_digits=["", "7", "9", "3"], talk_time=None)
        assert _scores(events) == []
        assert [d for a, d in apps if a == "Read"].count("IVR_SURVEY,zh/survey,1,,1,5") == 2
        _no_errors(r, events)


async def test_no_key_no_score(tmp_path: Path, etc: Path) -> None:
    async with rig(tmp_path, etc, AGENTS) as r:
        events, apps, _ = await _run(r, menu_digits=["", ""], talk_time=None)
        assert _scores(events) == []
        assert any(a == "Read" and d.startswith("IVR_SURVEY,") for a, d in apps)
        assert ("Playback", "zh/survey-thanks") not in apps
        _no_errors(r, events)


async def test_caller_hangs_up_during_the_survey(tmp_path: Path, etc: Path) -> None:
    async with rig(tmp_path, etc, AGENTS) as r:
        # connected ~1 s after the notice, the agent talks 3 s: hang up inside the survey
        events, apps, _ = await _run(r, menu_digits=["", ""], talk_time=None,
                                     hangup_after=1.0 + 3.0 + 8.0)
        assert any(a == "Read" and d.startswith("IVR_SURVEY,") for a, d in apps)
        assert _scores(events) == []
        assert [e.type for e in events].count("call.ended") == 1
        _no_errors(r, events)


async def test_no_survey_when_the_caller_ends_the_call(tmp_path: Path, etc: Path) -> None:
    agents = [AgentScript(i, ring_time=1.0) for i in HOTLINE]  # the caller ends it
    async with rig(tmp_path, etc, agents) as r:
        events, apps, _ = await _run(r, menu_digits=["", "4"], talk_time=2.0)
        assert not any(d.startswith("IVR_SURVEY") for _, d in apps)
        assert _scores(events) == []
        assert any(e.type == "agent.connected" for e in events)
        _no_errors(r, events)
