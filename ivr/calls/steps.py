"""What the per-call IVR reports about each step of a call (its output type).

Each step names its call by the call's id, Asterisk's ``Linkedid``, which the rendered
dialplan passes to the AGI (``call=${CHANNEL(linkedid)}``), so whoever reads the steps
(the call-event builder) finds the call directly, in whatever order the AMI events and
the steps arrive.  ``uniqueid`` is the channel running the IVR (``agi_uniqueid``), kept
as the step's source.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

# Kinds of IVR steps (the ``ivr.*`` event types are ``"ivr." + kind``).
STEP_KINDS = frozenset(
    {
        "entered",  # the call entered an entry point (data: entry, dialled, version)
        "prompt",  # a prompt was played (data: prompt, language)
        "choice",  # the caller chose a menu option (data: menu, digits, target)
        "timeout",  # no input before the menu's timeout (data: menu, attempt)
        "invalid",  # input matched no option (data: menu, digits, attempt)
        "language",  # the language was set (data: language)
        "tag",  # a tag/variable was set (data: name, value)
        "lookup",  # ticket-status lookup (data: result, found)
        "callback",  # a callback was requested (data: number)
        "exit",  # the IVR left the call: to queue / transfer / hangup (data: to, target…)
        "error",  # the IVR failed and the call took its fallback (data: reason)
    }
)


@dataclass(frozen=True, slots=True)
class IvrStep:
    call_id: str  # the call's Linkedid (``?call=`` of the AGI request)
    uniqueid: str  # agi_uniqueid of the channel running the IVR
    kind: str  # one of STEP_KINDS
    entry: str  # the entry point / dialled number (e.g. "12345")
    step: str = ""  # the step id in the dialplan definition
    data: Mapping[str, str] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.kind not in STEP_KINDS:
            raise ValueError(f"unknown IVR step kind {self.kind!r}")


@dataclass(frozen=True, slots=True)
class ServiceStep:
    """What a slice's service did to a call in progress on an agent's request (a transfer
    asked for, its outcome; a three-way leg …): one call event of ``type`` (a type of
    ``ivr.events.model.EVENT_TYPES``, e.g. ``transfer.completed``) with ``data``, in the
    call's seq order, its source ``{kind: service, name: service, uniqueid}``.
    ``routing`` facts (``department`` …, :data:`ivr.calls.state.ROUTING_KEYS`) are set on
    the call before the event is built, so the event and the ticket carry them."""

    call_id: str  # the call's Linkedid
    service: str  # the slice that acted ("transfers", "threeway" …)
    type: str  # the call event type
    data: Mapping[str, str | int | float | bool | None] = field(default_factory=dict)
    uniqueid: str = ""  # the channel it acted on, if one
    routing: Mapping[str, str] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)


StepReporter = Callable[[IvrStep], Awaitable[None]]
"""An async callable the IVR runtime awaits for every step (never raises into the IVR)."""
