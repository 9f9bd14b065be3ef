"""The JSON Schema for editors (ivr/dialplan/schema/dialplan.v1.json) agrees with the
loader: the shipped files pass it, typical mistakes fail it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from ivr.dialplan.loader import definition_files
from tests.test_dialplan_support import MINIMAL, ROOT, SHIPPED

SCHEMA = ROOT / "ivr" / "dialplan" / "schema" / "dialplan.v1.json"


class _EditorLoader(yaml.SafeLoader):
    """YAML as an editor's language server sees it (YAML 1.2: dates stay strings)."""


_EditorLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load(text: str) -> Any:
    return yaml.load(text, Loader=_EditorLoader)  # noqa: S506 - a SafeLoader subclass


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_shipped_files_pass_the_schema(validator: jsonschema.protocols.Validator) -> None:
    files = definition_files(SHIPPED)
    assert files
    for path in files:
        errors = list(validator.iter_errors(load(path.read_text(encoding="utf-8"))))
        assert errors == [], f"{path}: {[e.message for e in errors]}"
    assert list(validator.iter_errors(load(MINIMAL))) == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('        options: {"1": queue, "2": dept}',
         '        options: {"1": queue, "2": dept}\n        tmeout: 5'),  # unknown key
        ("        type: menu", "        type: menu-of-doom"),  # unknown step type
        ('to: "17:30"', 'to: "25:00"'),  # invalid time
        ("version: 1", "version: 2"),
        ('    barge_in: {"9": en}', '    barge_in: {"99": en}'),  # not a digit
    ],
)
def test_mistakes_fail_the_schema(
    validator: jsonschema.protocols.Validator, old: str, new: str
) -> None:
    assert old in MINIMAL
    assert list(validator.iter_errors(load(MINIMAL.replace(old, new)))) != []


def test_docs_reference_the_schema() -> None:
    docs = (ROOT / "docs" / "dialplans.md").read_text(encoding="utf-8")
    assert "ivr/dialplan/schema/dialplan.v1.json" in docs
    assert Path(SCHEMA).is_file()
