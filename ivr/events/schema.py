"""The JSON Schema of call events, shipped as package data, and a validator."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

from ivr.events.errors import EventValidationError

SCHEMA_FILE = "call-event.v1.json"


def load_schema() -> dict[str, Any]:
    text = resources.files("ivr.events").joinpath("schema", SCHEMA_FILE).read_text("utf-8")
    obj: dict[str, Any] = json.loads(text)
    return obj


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(load_schema())


def validate_event(obj: Any) -> None:
    """Raise :class:`EventValidationError` naming the first bad field of ``obj``."""
    errors = sorted(_validator().iter_errors(obj), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.path) or "(root)"
        ident = obj.get("id", "?") if isinstance(obj, dict) else "?"
        raise EventValidationError(f"call event {ident}: {where}: {err.message}")
