"""The agents' catalog in dialplans/: pause reasons (validated, schema included) and each
queue's wrap-up, rendered as queues.conf ``wrapuptime``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ivr.agents.catalog import AgentCatalog
from ivr.agents.errors import UnknownPauseReason
from ivr.dialplan import load_definition
from ivr.dialplan.loader import parse_definition
from ivr.dialplan.render import render
from tests.test_dialplan_support import SHIPPED, write_definition

SCHEMA = Path(__file__).parent.parent / "ivr/dialplan/schema/dialplan.v1.json"


def test_shipped_catalog_and_rendered_wrapup(tmp_path: Path) -> None:
    d = load_definition(SHIPPED)
    cat = AgentCatalog.from_definition(d)
    assert cat.pause_reasons["lunch"] == "午休 lunch"
    assert cat.reason_label("training") == "培训 training"
    assert cat.reason_label("小结 after-call work") == "小结 after-call work"  # by label too
    assert cat.reason_code("午休 lunch") == "lunch" and cat.reason_code("wrap-up") is None
    with pytest.raises(UnknownPauseReason, match=r"'shopping' is not in the catalog.*"
                       r"lunch \(午休 lunch\).*暂停原因"):
        cat.reason_label("shopping")
    folder = write_definition(tmp_path / "dp")
    (folder / "agents.yaml").write_text(
        "version: 1\nqueues:\n  desk: {strategy: ringall, wrapup: 20}\n", encoding="utf-8")
    d2 = load_definition(folder)
    assert AgentCatalog.from_definition(d2).wrapup["desk"] == 20
    conf = render(d2, "v").files["queues.conf"]
    assert "persistentmembers = yes" in conf
    desk = conf.split("[desk]")[1].split("\n[")[0]
    assert "wrapuptime = 20" in desk
    assert "wrapuptime = 0" in conf.split("[english]")[1].split("\n[")[0]


@pytest.mark.parametrize(("text", "message"), [
    ("pause_reasons:\n  lunch: 午休\n", "pause reason 'lunch' must be a mapping"),
    ("pause_reasons:\n  lunch: {}\n", "'label'"),
    ("pause_reasons:\n  lunch: {label: \"a;b\"}\n", "without control characters, ';'"),
    ("pause_reasons:\n  lunch: {label: \"午休, lunch\"}\n", "';', '|' or ','"),
    ("pause_reasons:\n  lunch: {label: \"x\"}\n  tea: {label: \"x\"}\n",
     "already the label of pause reason 'lunch'"),
    ("pause_reasons:\n  \"午 休\": {label: \"x\"}\n", "not a valid name"),
    ("queues:\n  desk: {wrapup: -1}\n", "'wrapup' of queue 'desk'"),
    ("queues:\n  desk: {wrapup: 7200}\n", "'wrapup' of queue 'desk'"),
])
def test_bad_catalog_entries_are_errors(tmp_path: Path, text: str, message: str) -> None:
    folder = write_definition(tmp_path / "dp")
    (folder / "agents.yaml").write_text("version: 1\n" + text, encoding="utf-8")
    definition, problems = parse_definition(folder)
    assert definition is None
    assert any(message in p.message and p.where.file.endswith("agents.yaml")
               for p in problems), problems


def test_schema_describes_the_catalog() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    reasons = schema["properties"]["pause_reasons"]["additionalProperties"]
    assert reasons["required"] == ["label"] and reasons["additionalProperties"] is False
    wrapup = schema["properties"]["queues"]["additionalProperties"]["properties"]["wrapup"]
    assert (wrapup["minimum"], wrapup["maximum"]) == (0, 3600)
