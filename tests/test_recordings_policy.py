"""The recording policy (the ``recordings:`` section of dialplans/): default, exceptions
per entry and per queue, validated with file and line, names checked against the
definition, in the editors' JSON Schema."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml

from ivr.dialplan import load_definition
from ivr.dialplan.errors import DialplanError
from ivr.recordings.policy import RecordingPolicy, Rule, policy_of

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "ivr" / "dialplan" / "schema" / "dialplan.v1.json"


def _with_policy(tmp_path: Path, text: str) -> Path:
    d = tmp_path / "dialplans"
    shutil.copytree(ROOT / "dialplans", d)
    (d / "recordings.yaml").write_text("version: 1\n" + text, "utf-8")
    return d


def test_default_records_every_call_in_stereo_mp3() -> None:
    assert RecordingPolicy().rule_for("12345", "hotline") == Rule(True, "stereo", "mp3", -3.0)


def test_shipped_policy() -> None:
    policy = policy_of(load_definition(ROOT / "dialplans"))
    assert policy.rule_for("12345", "hotline") == Rule(True, "stereo", "mp3", -3.0)
    assert policy.rule_for("12345", "english").channels == "mono"


def test_queue_exception_wins_over_the_entry_exception(tmp_path: Path) -> None:
    d = _with_policy(tmp_path, """
recordings:
  default: {format: opus}
  entries:
    "12333": {record: false, channels: mono}
  queues:
    social: {record: true}
""")
    policy = policy_of(load_definition(d))
    assert policy.rule_for("12345", None) == Rule(True, "stereo", "opus", -3.0)
    assert policy.rule_for("12333", None) == Rule(False, "mono", "opus", -3.0)
    assert policy.rule_for("12333", "social") == Rule(True, "mono", "opus", -3.0)


@pytest.mark.parametrize(("text", "message"), [
    ("recordings:\n  default: {format: wav}\n", "'format' of recordings.default"),
    ("recordings:\n  entries:\n    '12345': {level_dbfs: 3}\n",
     "'level_dbfs' of recordings.entries.12345 must be a number from -60 to 0"),
    ("recordings:\n  queues:\n    hotline: {recrod: true}\n",
     "unknown key 'recrod' in recordings.queues.hotline"),
    ("recordings:\n  queues:\n    nope: {record: false}\n",
     "recordings.queues: undefined queue 'nope'"),
    ("recordings:\n  entries:\n    '99999': {record: false}\n",
     "recordings.entries: undefined entry '99999'"),
])
def test_invalid_policy_names_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    d = _with_policy(tmp_path, text)
    with pytest.raises(DialplanError) as err:
        load_definition(d, display_root=d)
    assert "recordings.yaml:" in str(err.value)
    assert message in str(err.value)


def test_schema_has_the_section() -> None:
    schema = json.loads(SCHEMA.read_text("utf-8"))
    ok = yaml.safe_load((ROOT / "dialplans" / "recordings.yaml").read_text("utf-8"))
    jsonschema.validate(ok, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"version": 1, "recordings": {"default": {"format": "wav"}}},
                            schema)
