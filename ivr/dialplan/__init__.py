"""The multilingual IVR definition: ``dialplans/*.yaml`` → model → validation →
Asterisk configuration → publish.  See docs/dialplans.md."""

from ivr.dialplan.errors import DialplanError, Problem, PublishError
from ivr.dialplan.hours import OpenState, definition_is_open, is_open
from ivr.dialplan.loader import load_definition, parse_definition
from ivr.dialplan.model import Definition, Entry

__all__ = [
    "Definition",
    "DialplanError",
    "Entry",
    "OpenState",
    "Problem",
    "PublishError",
    "definition_is_open",
    "is_open",
    "load_definition",
    "parse_definition",
]
