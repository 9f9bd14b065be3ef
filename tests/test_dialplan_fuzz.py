"""Bad input never crashes the loader or the validator: any YAML gives problems, never an
exception (hypothesis)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.dialplan.loader import parse_definition
from ivr.dialplan.render import render
from ivr.dialplan.validate import check_definition
from tests.test_dialplan_support import MINIMAL

WORDS = [
    "version", "settings", "languages", "queues", "departments", "priority", "hours",
    "overrides", "surge", "flows", "entries", "type", "play", "menu", "queue", "next",
    "prompts", "options", "start", "steps", "operator", "barge_in", "shortcuts", "weekly",
    "days", "from", "to", "date", "mode", "name", "number", "hotline", "zh", "en", "12345",
    "@operator", "@return", "mon-fri", "09:00", "24:00", "1", "0", "9", "transfer", "to",
    "emergency", "110", "time", "open", "closed", "subflow", "flow", "hangup", "fallback",
]
scalars = st.one_of(
    st.sampled_from(WORDS), st.integers(-5, 100000), st.booleans(), st.none(),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
)
trees = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(WORDS), st.integers(0, 9)), inner,
                        max_size=5),
    ),
    max_leaves=30,
)


def _check(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "a.yaml").write_text(text, encoding="utf-8")
        d, problems = parse_definition(folder)
        if d is not None:
            problems = problems + check_definition(d, lambda n, lang, chain: None)
            if not [p for p in problems if p.severity == "error"]:
                render(d, "0123456789abcdef")  # anything valid renders
        for p in problems:
            assert p.where.line >= 1 and p.message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(WORDS), trees, max_size=6))
def test_random_structures(top: dict[object, object]) -> None:
    _check(yaml.safe_dump({"version": 1, **top}, allow_unicode=True))


@settings(max_examples=150, deadline=None)
@given(st.integers(0, len(MINIMAL) - 1), st.integers(1, 20), st.text(max_size=6))
def test_mangled_real_file(at: int, cut: int, insert: str) -> None:
    _check(MINIMAL[:at] + insert + MINIMAL[at + cut:])


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(WORDS), trees)
def test_random_step_bodies(kind: str, body: object) -> None:
    step = {"type": kind, **body} if isinstance(body, dict) else body
    doc = yaml.safe_load(MINIMAL)
    doc["entries"]["12345"]["steps"]["greeting"] = step
    _check(yaml.safe_dump(doc, allow_unicode=True))
