"""Supervision sessions: one supervisor on one agent call, in memory (pure, no I/O).

A session goes ``ringing`` (the supervisor's phone is called) → ``active`` (ChanSpy is
attached: ``ChanSpyStart``) → ``ended``; or ``ringing`` → ``failed`` (the phone did not
answer, the call ended first: nothing happened to the call).  A mode change re-originates
ChanSpy with the new options (as trace 13 does), so an active session is ``ringing``
again, with ``switching_from`` set, until the new leg's ``ChanSpyStart``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MODES: dict[str, str] = {"listen": "qES", "whisper": "qESw", "barge": "qESB"}
"""ChanSpy options per mode (trace 13): q quiet (no beep, no name), E exit when the spied-on
channel hangs up, S stop when there is nothing to spy on; w whisper to the agent, B barge
(both hear)."""

MODE_LABELS = {"listen": "监听", "whisper": "耳语", "barge": "强插"}

LIVE = ("ringing", "active")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts (the API principal: token id, role, name)."""

    token_id: str
    role: str
    name: str


@dataclass(slots=True)
class Session:
    id: str
    actor: Actor
    phone: str  # the supervisor's interface ChanSpy is originated to
    call_id: str
    queue: str | None
    agent: str | None  # the agent (queue member name) of the call
    spyee: str  # the agent's channel name ChanSpy is given
    spyee_uid: str
    mode: str
    status: str = "ringing"
    created_at: float = 0.0
    joined_at: float | None = None
    ended_at: float | None = None
    reason: str | None = None  # why it ended or failed
    spyer: str | None = None  # the originated channel running ChanSpy (…;1 for Local)
    action_id: str | None = None  # the Originate's ActionID
    switching_from: str | None = None  # the mode before a switch being originated
    leaving: bool = False
    modes: list[str] = field(default_factory=list)  # every mode it was in, in order

    @property
    def live(self) -> bool:
        return self.status in LIVE

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "supervisor": self.actor.name, "phone": self.phone,
                "call_id": self.call_id, "queue": self.queue, "agent": self.agent,
                "channel": self.spyee, "mode": self.mode, "status": self.status,
                "created_at": self.created_at, "joined_at": self.joined_at,
                "ended_at": self.ended_at, "reason": self.reason,
                "switching_from": self.switching_from, "modes": list(self.modes)}


class Sessions:
    """The sessions of this process (ended ones kept, bounded, for the console)."""

    MAX_ENDED = 1000

    def __init__(self) -> None:
        self.by_id: dict[str, Session] = {}

    def add(self, s: Session) -> None:
        self.by_id[s.id] = s
        ended = [k for k, v in self.by_id.items() if not v.live]
        for k in ended[:max(0, len(ended) - self.MAX_ENDED)]:
            del self.by_id[k]

    def live(self) -> list[Session]:
        return [s for s in self.by_id.values() if s.live]

    def of_actor(self, name: str) -> Session | None:
        return next((s for s in self.live() if s.actor.name == name), None)

    def on_phone(self, phone: str) -> Session | None:
        return next((s for s in self.live() if s.phone == phone), None)

    def by_spyer(self, channel: str) -> Session | None:
        return next((s for s in self.live() if s.spyer == channel), None)

    def by_action(self, action_id: str) -> Session | None:
        return next((s for s in self.live() if s.action_id == action_id), None)

    def starting(self, spyer: str, spyee: str) -> Session | None:
        """The ringing session whose leg this ``ChanSpyStart`` is: its originated channel,
        or (the OriginateResponse not read yet) a channel of its phone on its spyee."""
        for s in self.live():
            if s.status != "ringing" or s.spyee != spyee:
                continue
            if s.spyer == spyer or (s.spyer is None and spyer.startswith(s.phone + "-")):
                return s
        return None
