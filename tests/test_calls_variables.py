"""Every dialplan variable name the product sets or reads is in ivr/calls/variables.py,
and the call-event builder reads only names something of ours sets."""

from __future__ import annotations

import datetime as dt
import random
import re
from pathlib import Path

from ivr.calls import variables as V
from ivr.dialplan.loader import load_definition
from ivr.dialplan.render import render
from ivr.events.builder import CONSUMED_VARIABLES
from ivr.flow.engine import (
    CallContext,
    CallEngine,
    Collect,
    Exit,
    Input,
    Lookup,
    LookupResult,
    Reply,
)

SHIPPED = Path(__file__).resolve().parent.parent / "dialplans"
NAMES = {v for k, v in vars(V).items() if k.isupper() and isinstance(v, str)}
NAME = r"[A-Za-z_][A-Za-z0-9_]*(?:\([a-z]+\))?"


def _bare(name: str) -> str:
    return name.lstrip("_")


def rendered_names() -> tuple[set[str], set[str]]:
    """(names the rendered extensions.conf reads or sets, names it sets)."""
    text = render(load_definition(SHIPPED), "v1").files["extensions.conf"]
    sets = set(re.findall(rf"Set\(({NAME})=", text)) | set(re.findall(rf"Read\(({NAME}),", text))
    globals_ = text.split("[globals]", 1)[1].split("\n[", 1)[0]
    sets |= set(re.findall(rf"^({NAME})\s*=", globals_, re.M))
    reads = set(re.findall(rf"\$\{{({NAME})", text)) - {"IF"}
    return {_bare(n) for n in sets | reads}, {_bare(n) for n in sets}


def exit_names(runs: int = 300) -> set[str]:
    """Names the IVR's exit sets, over many calls into every shipped entry."""
    d = load_definition(SHIPPED)
    rnd = random.Random(9)
    names: set[str] = set()
    for n in range(runs):
        entry = list(d.entries.values())[n % len(d.entries)]
        when = dt.datetime(2026, 3, 4, 10 + n % 12, tzinfo=dt.UTC)  # open and closed
        ctx = CallContext(d, entry, "v1", "1.1", "13800000000", call_id="1.1",
                          clock=lambda when=when: when)
        run = CallEngine(ctx).run()
        action = next(run)
        for _ in range(100):
            reply: Reply = None
            if isinstance(action, Collect):
                reply = Input(rnd.choice(["", "0", "1", "2", "3", "4", "9", "*"]))
            elif isinstance(action, Lookup):
                reply = LookupResult(rnd.choice(["found", "none", "unavailable"]))
            elif isinstance(action, Exit):
                names |= {_bare(k) for k, _ in action.variables}
            try:
                action = run.send(reply)
            except StopIteration:
                break
    return names


def test_every_name_is_in_the_variables_module() -> None:
    used, _ = rendered_names()
    assert used - NAMES == set()
    ivr = exit_names()
    assert {n for n in ivr if not n.startswith(V.TAG_PREFIX)} - NAMES == set()
    assert any(n.startswith(V.TAG_PREFIX) for n in ivr)  # the shipped set step


def test_the_builder_reads_only_names_we_set() -> None:
    _, rendered_sets = rendered_names()
    set_by_us = rendered_sets | exit_names()
    assert set(V.ROUTING_VARS) <= set_by_us
    assert CONSUMED_VARIABLES == set(V.ROUTING_VARS) | {V.MIXMONITOR_FILENAME}
    for name in V.TAG_ROUTING:
        assert re.fullmatch(r"[a-z]+", name)  # IVR_TAG_<name> stays MSet-safe
