"""The supervision policy ([supervision] of the staff policy file): read and checked,
each mistake naming the file and the key in English and Chinese."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.supervision.errors import StaffPolicyError
from ivr.supervision.policy import ALL_QUEUES, load_supervision_policy
from ivr.supervision.state import MODES

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_policy_reads() -> None:
    policy = load_supervision_policy(ROOT / "staff.toml")
    assert policy.supervisors and all(s.phones for s in policy.supervisors.values())


def test_missing_file_is_an_empty_policy(tmp_path: Path) -> None:
    policy = load_supervision_policy(tmp_path / "none.toml")
    assert policy.supervisors == {} and policy.show_agent is False


def test_modes_are_trace_13s_options() -> None:
    assert MODES == {"listen": "qES", "whisper": "qESw", "barge": "qESB"}


def test_wildcard_queue(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_text('[supervision.supervisors.a]\nphones = ["PJSIP/8001"]\nqueues = ["*"]\n')
    sup = load_supervision_policy(p).supervisors["a"]
    assert ALL_QUEUES in sup.queues and sup.supervises("anything") and sup.supervises(None)


@pytest.mark.parametrize(("text", "match"), [
    ("[supervision]\nshow_agent = 1\n", "show_agent must be true or false"),
    ("[supervision]\nlisten = true\n", "unknown key"),
    ('[supervision.supervisors.a]\nphones = []\nqueues = ["q"]\n', "at least one phone"),
    ('[supervision.supervisors.a]\nphones = ["bad phone"]\nqueues = ["q"]\n', "Tech/resource"),
    ('[supervision.supervisors.a]\nphones = ["PJSIP/1"]\nqueues = []\n', "at least one queue"),
    ('[supervision.supervisors.a]\nphones = ["PJSIP/1"]\nqueues = "q"\n', "list of non-empty"),
    ('[supervision.supervisors.a]\nphones = ["PJSIP/1"]\nqueues = ["q"]\npin = 1\n',
     "unknown key"),
    ("[supervision\n", "cannot read"),
])
def test_bad_policy_names_file_and_key(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "staff.toml"
    p.write_text(text)
    with pytest.raises(StaffPolicyError, match=match) as info:
        load_supervision_policy(p)
    assert str(p) in str(info.value) and " / " in str(info.value)
