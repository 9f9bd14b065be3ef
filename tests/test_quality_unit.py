"""Quality review, the pure parts: the policy's form (validated, zh/en labels, maxima
adding up to 100), the day's sample (shares per agent and queue, every low score,
complaint and 110 call; deterministic), the call record from events, and muted stretches
of a recording staying silent through archiving."""

from __future__ import annotations

import math
import wave
from dataclasses import replace
from pathlib import Path

import pytest

from ivr.events.model import CallEvent, Routing, Source, event_id
from ivr.quality.errors import QualityPolicyError
from ivr.quality.policy import DEFAULT_FORM, QualityPolicy, load_quality_policy
from ivr.quality.sampling import sample
from ivr.quality.state import CallRecord, record_of
from ivr.recordings.audio import AudioSegment, process  # pydub, imported quietly
from ivr.recordings.policy import Rule

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_policy_form_adds_up() -> None:
    p = load_quality_policy(ROOT / "staff.toml")
    assert sum(i.max for i in p.form) == 100 and all(i.zh and i.en for i in p.form)
    assert [i.key for i in DEFAULT_FORM] == ["greeting", "listening", "accuracy", "dispatch",
                                             "closing"]


@pytest.mark.parametrize(("text", "match"), [
    ('[[quality.form]]\nkey = "a"\nzh = "甲"\nen = "A"\nmax = 60\n', "add up to 60"),
    ('[[quality.form]]\nkey = "A b"\nzh = "甲"\nen = "A"\nmax = 100\n', "lower-case"),
    ('[[quality.form]]\nkey = "a"\nzh = ""\nen = "A"\nmax = 100\n', "zh label"),
    ('[[quality.form]]\nkey = "a"\nen = "A"\nmax = 100\n', "missing"),
    ("[quality]\nshare_per_agent = 2\n", "share 0..1"),
    ("[quality]\nsample = 1\n", "unknown key"),
    ('[quality.reviewers.w]\nqueue = ["q"]\n', "queues"),
])
def test_bad_quality_policy(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "staff.toml"
    p.write_text(text)
    with pytest.raises(QualityPolicyError, match=match) as info:
        load_quality_policy(p)
    assert str(p) in str(info.value) and " / " in str(info.value)


def rec(i: int, agent: str = "A", queue: str = "hotline", **kw: object) -> CallRecord:
    base = CallRecord(call_id=f"c{i}", day="2026-12-06", started_at=1000.0 + i, dialled="12345",
                      caller="13800138000", language="zh", routing={}, queue=queue,
                      agent=agent, agent_interface=f"Local/{agent}@agent-local/n", tags=[],
                      survey_score=None, police=False, last_seq=9, ended_at=2000.0 + i,
                      recordings=[{"location": f"x/{i}.mp3"}])
    return replace(base, **kw)  # type: ignore[arg-type]


def test_sample_shares_and_mandatory_calls() -> None:
    policy = QualityPolicy(share_per_agent=0.1, share_per_queue=0.05, min_per_agent=1)
    records = ([rec(i, "A") for i in range(30)] + [rec(100 + i, "B") for i in range(5)]
               + [rec(200, "B", survey_score=1), rec(201, "B", survey_score=3),
                  rec(202, "C", tags=["投诉"]), rec(203, "C", police=True),
                  rec(204, "C", recordings=[], survey_score=1)])  # not recorded: never
    got = sample(records, policy)
    per_agent = {a: sum("agent_share" in got.get(r.call_id, []) for r in records
                        if r.agent == a) for a in "ABC"}
    assert per_agent == {"A": 3, "B": 1, "C": 1}  # ceil(10 %), at least one
    assert sum("queue_share" in v for v in got.values()) == math.ceil(0.05 * 39)
    assert "low_score" in got["c200"] and "low_score" not in got.get("c201", [])
    assert "complaint" in got["c202"] and "police" in got["c203"] and "c204" not in got
    assert sample(list(reversed(records)), policy) == got  # order does not matter


def ev(seq: int, type_: str, **data: object) -> CallEvent:
    return CallEvent(id=event_id("L1", seq, type_), type=type_, call_id="L1", seq=seq,
                     ts=1796521849.0 + seq, call_started_at=1796521849.0, dialled="12345",
                     caller="13300133000", language="zh",
                     routing=Routing(entry="main", queue="hotline", agent="Agent 1001",
                                     tags=("complaint",)),
                     source=Source("ami", "x"), data=data)  # type: ignore[arg-type]


def test_record_of_a_call() -> None:
    r = record_of([ev(1, "call.started"),
                   ev(2, "agent.connected", interface="Local/1001@agent-local/n"),
                   ev(3, "threeway.joined", role="external", number="110"),
                   ev(4, "survey.scored", score=2),
                   ev(5, "call.ended")], frozenset({"110"}))
    assert (r.agent_interface, r.survey_score, r.police, r.last_seq, r.day) == (
        "Local/1001@agent-local/n", 2, True, 5, "2026-12-06")
    assert r.tags == ["complaint"] and [t["type"] for t in r.timeline][-1] == "call.ended"
    assert r.timeline[2]["data"]["number"] == "110"  # 110 kept, other numbers masked


def _tone_with_muted_stretch(path: Path) -> None:
    """What MixMonitor writes while a direction is muted: the audiohook hands it cleared
    (zero) frames (main/audiohook.c, AST_AUDIOHOOK_MUTE_READ/WRITE → ast_frame_clear)."""
    rate = 8000
    samples = []
    for n in range(rate * 3):
        muted = rate <= n < 2 * rate  # second 2 of 3
        samples.append(0 if muted else int(8000 * math.sin(2 * math.pi * 440 * n / rate)))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(s.to_bytes(2, "little", signed=True) for s in samples))


@pytest.mark.parametrize("fmt", ["mp3", "opus"])
def test_muted_stretch_stays_silent_in_the_archive(tmp_path: Path, fmt: str) -> None:
    raw = tmp_path / "rec.wav"
    _tone_with_muted_stretch(raw)
    arc = process(raw, tmp_path / f"out.{fmt}", Rule(channels="mono", format=fmt,
                                                      level_dbfs=-3.0))
    seg = AudioSegment.from_file(arc.path)
    loud, muted = seg[200:800], seg[1200:1800]
    assert loud.dBFS > -12  # normalised to -3 dBFS peak
    assert muted.rms == 0 or muted.dBFS < -60  # silent, not raised by normalisation
