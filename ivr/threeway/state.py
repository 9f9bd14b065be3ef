"""The three-way calls in progress (pure: no I/O, no clock): who is in each conference,
each added party's leg and its fate, from the service's requests and the AMI events.

One :class:`Session` per call (its conference is named after the call id); the caller
and the agent are redirected into it, each added party is a :class:`Leg` originated into
it.  :meth:`ThreeWays.feed` takes an AMI event and returns what must happen next as
:class:`Effect` values (call events to emit, channels to hang up, a conference to end),
which the service (:mod:`ivr.threeway.service`) carries out:

* a leg's channels are known from the ``VarSet`` of ``IVR_TW_LEG=<call>/<leg>`` that the
  Originate sets on both halves; its ``;1`` joins the conference when it answers
  (``threeway.answered``, the department reaches the ticket) or hangs up before
  (``threeway.failed``: no answer, busy, failed — the fallback is offered);
* the caller leaving ends the conference (every party kicked, a ringing leg hung up);
* the agent leaving leaves the caller with the parties (``threeway.agent_left``);
* a caller left with nobody (no agent, no party, nothing ringing) is kicked too, so no
  conference is left with one person in it; ``ConfbridgeEnd`` forgets the session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ivr.ami.messages import Event
from ivr.calls import variables as V

LegState = Literal["ringing", "up", "failed", "left", "dropped"]
Role = Literal["caller", "agent", "leg"]

CONSUMED_AMI_EVENTS = frozenset({"VarSet", "ConfbridgeJoin", "ConfbridgeLeave",
                                 "ConfbridgeEnd", "Hangup"})
CONSUMED_VARIABLES = frozenset({V.TW_LEG})

# Hangup causes of a leg that never answered → the reason reported, the most telling
# first (both halves of the leg hang up: one with the far end's cause, busy 17, the other
# with what Asterisk propagated)
_REASONS = (("17", "busy"), ("34", "congestion"), ("21", "rejected"), ("1", "unallocated"),
            ("3", "unallocated"), ("19", "no-answer"), ("18", "no-answer"),
            ("16", "no-answer"))


def failure_reason(causes: list[str]) -> str:
    """What the Hangup causes of an unanswered leg's channels say went wrong."""
    return next((reason for cause, reason in _REASONS if cause in causes), "failed")


@dataclass
class Party:
    role: Role
    channel: str
    uniqueid: str
    joined: bool = False
    left: bool = False
    muted: bool = False


@dataclass
class Leg:
    id: str
    target: str | None  # the directory id (None: a number not in the directory)
    kind: str  # department / emergency / interpreter / partner / number
    number: str
    label: str
    department: str | None  # what goes to the ticket when it answers
    fallback: dict[str, str] = field(default_factory=dict)
    state: LegState = "ringing"
    channels: dict[str, str] = field(default_factory=dict)  # uniqueid -> name
    party: Party | None = None  # once it joined
    reason: str = ""
    kicked: bool = False
    causes: list[str] = field(default_factory=list)  # of its channels gone unanswered

    @property
    def live(self) -> bool:
        return self.state in ("ringing", "up")

    def data(self) -> dict[str, str | None]:
        return {"leg": self.id, "target": self.target, "kind": self.kind,
                "number": self.number, "label": self.label}


@dataclass
class Session:
    call_id: str
    conference: str
    caller: Party
    agent: Party | None
    agent_name: str | None = None
    legs: dict[str, Leg] = field(default_factory=dict)
    next_leg: int = 1
    ending: bool = False

    def new_leg_id(self) -> str:
        leg = f"leg-{self.next_leg}"
        self.next_leg += 1
        return leg

    def parties(self) -> int:
        """The parties in it or on their way: caller, agent (until it left), live legs."""
        n = 0 if self.caller.left else 1
        n += 1 if self.agent is not None and not self.agent.left else 0
        return n + sum(1 for leg in self.legs.values() if leg.live)

    def ringing(self) -> Leg | None:
        return next((leg for leg in self.legs.values() if leg.state == "ringing"), None)

    def party(self, name: str) -> Party | None:
        """``caller``, ``agent`` or a leg id: the party in the conference (None: not
        joined, or left)."""
        if name == "caller":
            p: Party | None = self.caller
        elif name == "agent":
            p = self.agent
        else:
            leg = self.legs.get(name)
            p = None if leg is None else leg.party
        return p if p is not None and p.joined and not p.left else None

    def names(self) -> list[str]:
        names = [n for n in ("caller", "agent") if self.party(n) is not None]
        return names + [leg.id for leg in self.legs.values() if leg.live]


@dataclass(frozen=True)
class Effect:
    """What the service must do after an event."""

    kind: Literal["emit", "hangup", "end", "settle"]
    call_id: str
    type: str = ""  # emit: the call event type
    data: dict[str, str | None] = field(default_factory=dict)
    routing: dict[str, str] = field(default_factory=dict)
    channel: str = ""  # hangup: the channel name; end: the conference; emit: source uid
    leg: Leg | None = None  # settle: the leg whose outcome is known


class ThreeWays:
    """Every three-way session by call id, and the indexes AMI events are matched by."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self._by_conference: dict[str, Session] = {}
        self._legs: dict[str, tuple[Session, Leg]] = {}  # channel uniqueid -> leg

    # -- the service's requests ------------------------------------------------------

    def open(self, session: Session) -> None:
        self.sessions[session.call_id] = session
        self._by_conference[session.conference] = session

    def close(self, session: Session) -> None:
        self.sessions.pop(session.call_id, None)
        if self._by_conference.get(session.conference) is session:
            del self._by_conference[session.conference]
        for leg in session.legs.values():
            for uid in leg.channels:
                self._legs.pop(uid, None)

    def session_of_conference(self, conference: str) -> Session | None:
        return self._by_conference.get(conference)

    # -- AMI events ---------------------------------------------------------------------

    def feed(self, ev: Event) -> list[Effect]:
        name = ev.name
        if name == "VarSet":
            return self._varset(ev)
        if name == "ConfbridgeJoin":
            return self._join(ev)
        if name == "ConfbridgeLeave":
            return self._leave(ev)
        if name == "ConfbridgeEnd":
            session = self._by_conference.get(ev.get("Conference") or "")
            if session is not None:
                self.close(session)
            return []
        if name == "Hangup":
            return self._hangup(ev)
        return []

    def _varset(self, ev: Event) -> list[Effect]:
        if (ev.get("Variable") or "").lstrip("_") != V.TW_LEG:
            return []
        call_id, _, leg_id = (ev.get("Value") or "").rpartition("/")
        session = self.sessions.get(call_id)
        leg = None if session is None else session.legs.get(leg_id)
        uid = ev.get("Uniqueid") or ""
        if session is None or leg is None or not uid:
            return []
        leg.channels[uid] = ev.get("Channel") or ""
        self._legs[uid] = (session, leg)
        if session.ending or leg.state != "ringing":  # the call is ending: not wanted now
            return [Effect("hangup", call_id, channel=leg.channels[uid])]
        return []

    def _join(self, ev: Event) -> list[Effect]:
        session = self._by_conference.get(ev.get("Conference") or "")
        if session is None:
            return []
        uid = ev.get("Uniqueid") or ""
        if uid == session.caller.uniqueid:
            session.caller.joined = True
            session.caller.channel = ev.get("Channel") or session.caller.channel
            return []
        if session.agent is not None and uid == session.agent.uniqueid:
            session.agent.joined = True
            session.agent.channel = ev.get("Channel") or session.agent.channel
            return []
        found = self._legs.get(uid)
        if found is None or found[0] is not session:
            return []
        leg = found[1]
        leg.party = Party("leg", ev.get("Channel") or "", uid, joined=True)
        if leg.state != "ringing" or session.ending:
            return [Effect("hangup", session.call_id, channel=leg.party.channel)]
        leg.state = "up"
        routing = {"department": leg.department} if leg.department else {}
        return [Effect("emit", session.call_id, "threeway.answered",
                       {**leg.data(), "conference": session.conference,
                        "channel": leg.party.channel}, routing, uid),
                Effect("settle", session.call_id, leg=leg)]

    def _leave(self, ev: Event) -> list[Effect]:
        session = self._by_conference.get(ev.get("Conference") or "")
        if session is None:
            return []
        return self._gone(session, ev.get("Uniqueid") or "")

    def _hangup(self, ev: Event) -> list[Effect]:
        uid = ev.get("Uniqueid") or ""
        found = self._legs.pop(uid, None)
        if found is not None:
            session, leg = found
            leg.channels.pop(uid, None)
            if leg.state == "ringing" and leg.party is None:
                # a channel of the leg went before it joined: once all of them are gone it
                # did not answer, for the most telling of their causes
                leg.causes.append(ev.get("Cause") or "")
                if leg.channels:
                    return []
                return self._failed(session, leg, failure_reason(leg.causes))
            return self._gone(session, uid)
        for session in list(self.sessions.values()):
            if uid in (session.caller.uniqueid,
                       session.agent.uniqueid if session.agent else None):
                return self._gone(session, uid)
        return []

    def reconcile(self, session: Session, present: set[str]) -> list[Effect]:
        """After a reconnect: ``present`` = the Uniqueids ``ConfbridgeList`` shows in the
        session's conference; the caller, the agent or a party that joined and is not
        there left while the bridge was away (what follows is as if it was heard)."""
        out: list[Effect] = []
        parties = [session.caller, session.agent,
                   *(leg.party for leg in session.legs.values() if leg.state == "up")]
        for party in parties:
            if party is not None and party.joined and not party.left \
                    and party.uniqueid not in present:
                out += self._gone(session, party.uniqueid)
        return out

    def _failed(self, session: Session, leg: Leg, reason: str) -> list[Effect]:
        leg.state = "failed"
        leg.reason = reason
        out = [Effect("hangup", session.call_id, channel=name)
               for name in leg.channels.values()]
        if not session.ending:
            out.append(Effect("emit", session.call_id, "threeway.failed",
                              {**leg.data(), "reason": reason, **leg.fallback}))
        out.append(Effect("settle", session.call_id, leg=leg))
        return out + self.alone(session)

    def _gone(self, session: Session, uid: str) -> list[Effect]:
        """A party left the conference or hung up (whichever comes first)."""
        out: list[Effect] = []
        caller, agent = session.caller, session.agent
        if uid == caller.uniqueid:
            if caller.left:
                return []
            caller.left = True
            return self._end(session)
        if agent is not None and uid == agent.uniqueid:
            if agent.left:
                return []
            agent.left = True
            if not session.ending:
                out.append(Effect("emit", session.call_id, "threeway.agent_left",
                                  {"agent": session.agent_name, "channel": agent.channel,
                                   "conference": session.conference}))
            return out + self.alone(session)
        found = next(((leg.party, leg) for leg in session.legs.values()
                      if leg.party is not None and leg.party.uniqueid == uid), None)
        if found is None:
            return []
        party, leg = found
        if party.left:
            return []
        party.left = True
        if leg.state == "up":
            leg.state = "dropped" if leg.kicked else "left"
            if not session.ending:
                out.append(Effect("emit", session.call_id,
                                  "threeway.dropped" if leg.kicked else "threeway.hungup",
                                  {**leg.data(), "conference": session.conference}))
        return out + self.alone(session)

    def alone(self, session: Session) -> list[Effect]:
        """The caller with nobody (the agent left, no party up or ringing): ended."""
        agent_in = session.agent is not None and not session.agent.left
        if session.ending or agent_in or any(leg.live for leg in session.legs.values()):
            return []
        return self._end(session)

    def _end(self, session: Session) -> list[Effect]:
        if session.ending:
            return []
        session.ending = True
        out: list[Effect] = []
        for leg in session.legs.values():
            if leg.state == "ringing":
                leg.state = "failed"
                leg.reason = "caller-gone" if session.caller.left else "cancelled"
                out += [Effect("hangup", session.call_id, channel=name)
                        for name in leg.channels.values()]
                out.append(Effect("emit", session.call_id, "threeway.failed",
                                  {**leg.data(), "reason": leg.reason}))
                out.append(Effect("settle", session.call_id, leg=leg))
        out.append(Effect("end", session.call_id, channel=session.conference))
        return out
