"""Synthetic calls from a recorded AMI trace (tests and ``bench/events_pipeline.py``).

:func:`load_call_template` reads a trace (e.g. trace 02), keeps the events the builder
consumes (what an AMI ``eventfilter`` would pass), and :func:`synth_call` rewrites the
Uniqueid/Linkedid values, channel names, conference name and caller number so that
call ``n`` is a distinct call with the same shape.
"""

from __future__ import annotations

import re
from pathlib import Path

from ivr.ami.codec import AMIParser
from ivr.ami.messages import Event, Headers
from ivr.events.builder import CONSUMED_AMI_EVENTS, CONSUMED_VARIABLES

_UID_RE = re.compile(r"^\d{6,}\.\d+$")
_CHAN_RE = re.compile(r"-([0-9a-f]{8});")
KEEP_VARS = CONSUMED_VARIABLES


def load_trace(path: str | Path) -> list[Event]:
    parser = AMIParser(group_lists=False)
    items = parser.feed(Path(path).read_bytes()) + parser.feed_eof()
    return [i for i in items if isinstance(i, Event)]


def load_call_template(path: str | Path, *, filtered: bool = True) -> list[Event]:
    """The trace's events (only those the builder consumes when ``filtered``)."""
    events = [e for e in load_trace(path) if "Uniqueid" in e or "TransfererUniqueid" in e
              or e.name == "ConfbridgeEnd"]
    if not filtered:
        return events
    return [e for e in events if e.name in CONSUMED_AMI_EVENTS
            and (e.name != "VarSet" or (e.get("Variable") or "") in KEEP_VARS)]


def synth_call(template: list[Event], n: int, *, base: int = 1_700_000_000) -> list[Event]:
    """Events of synthetic call ``n``: every id, channel, conference and number unique."""
    ids: dict[str, str] = {}
    chans: dict[str, str] = {}
    caller = f"139{n % 100_000_000:08d}"

    def uid(value: str) -> str:
        new = ids.get(value)
        if new is None:
            new = ids[value] = f"{base + n}.{len(ids) + 1}"
        return new

    def chan(m: re.Match[str]) -> str:
        new = chans.get(m.group(1))
        if new is None:
            new = chans[m.group(1)] = f"{(n * 8 + len(chans)) & 0xFFFFFFFF:08x}"
        return f"-{new};"

    out: list[Event] = []
    for ev in template:
        h: Headers = {}
        for k, v in ev.headers.items():
            if isinstance(v, list):
                h[k] = list(v)
                continue
            if _UID_RE.match(v) and (k.endswith("Uniqueid") or k.endswith("Linkedid")):
                v = uid(v)
            elif k.endswith("Channel") or k == "Channel":
                v = _CHAN_RE.sub(chan, v)
            elif k == "Conference":
                v = f"c{n}"
            elif k.endswith("CallerIDNum") and v.startswith("13"):
                v = caller
            h[k] = v
        out.append(Event(h))
    return out
