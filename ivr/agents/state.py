"""Live state of Asterisk's queues, their members (agents) and waiting callers.

Pure: no I/O, no clock of its own (``now`` — seconds since the epoch, Asterisk's
``LastCall`` clock — is passed in).  Fed the AMI events app_queue emits, in wire order
(:meth:`QueueState.apply`), and rebuilt from a ``QueueStatus`` list
(:meth:`QueueState.begin_resync` … :meth:`QueueState.apply_status`) after every
(re)connect.  Events that arrive while a ``QueueStatus`` is in flight are newer than or
as new as the list for the members and callers they touch (the AMI client may hand
events that followed ``QueueStatusComplete`` to the handlers before the list's caller
resumes), so those members and callers keep what the events said; the list decides for
everything else, and what it does not list is gone.

A member's state, in the order a supervisor reads it::

    paused       QueuePause'd (with a reason): never offered a call
    in_call      talking to a queue caller, or its device is in use
    ringing      offered a call (AgentCalled) or its device rings
    wrapup       within the queue's wrapuptime after its last call: not offered a call
    unavailable  its device is unavailable / invalid (not registered)
    available    may be offered the next call
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ivr.ami.messages import Event

DEVICE_STATES: Mapping[int, str] = {
    0: "unknown", 1: "not_inuse", 2: "inuse", 3: "busy", 4: "invalid", 5: "unavailable",
    6: "ringing", 7: "ringinuse", 8: "onhold",
}
MEMBER_STATES = ("paused", "in_call", "ringing", "wrapup", "unavailable", "available")

_MEMBER_EVENTS = frozenset({"QueueMemberAdded", "QueueMemberRemoved", "QueueMemberPause",
                            "QueueMemberStatus", "QueueMemberPenalty",
                            "QueueMemberRinginuse"})
_CALLER_EVENTS = frozenset({"QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon"})
_AGENT_EVENTS = frozenset({"AgentCalled", "AgentConnect", "AgentComplete",
                           "AgentRingNoAnswer", "AgentDump"})
CONSUMED_AMI_EVENTS = _MEMBER_EVENTS | _CALLER_EVENTS | _AGENT_EVENTS
"""The AMI events the state reads (the bridge's event filter lets them through)."""


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        return default


def _float(value: str | None, default: float = 0.0) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except ValueError:
        return default


@dataclass(slots=True)
class Member:
    """One member (agent) of one queue, as app_queue describes it."""

    queue: str
    interface: str
    name: str = ""
    state_interface: str = ""
    membership: str = "dynamic"  # dynamic (logged in), static (queues.conf), realtime
    penalty: int = 0
    calls_taken: int = 0
    last_call: int = 0  # epoch seconds of the end of its last call (0: none)
    last_pause: int = 0
    login_time: int = 0
    in_call: bool = False
    status: int = 0  # AST_DEVICE_* of its StateInterface (DEVICE_STATES)
    paused: bool = False
    paused_reason: str = ""
    wrapuptime: int = 0  # the member's own; 0 = the queue's
    ringinuse: bool | None = None  # not in QueueStatus
    offered: str | None = None  # Uniqueid of the caller it is being offered (AgentCalled)

    @property
    def dynamic(self) -> bool:
        return self.membership == "dynamic"

    def wrapup_until(self, queue_wrapup: int) -> float:
        """When its wrap-up ends (epoch seconds; 0 when it had no call)."""
        wrapup = self.wrapuptime or queue_wrapup
        return float(self.last_call + wrapup) if self.last_call and wrapup else 0.0

    def state(self, now: float, queue_wrapup: int = 0) -> str:
        """One of :data:`MEMBER_STATES` (see the module's docstring)."""
        if self.paused:
            return "paused"
        if self.in_call or self.status in (2, 3, 8):
            return "in_call"
        if self.offered is not None or self.status in (6, 7):
            return "ringing"
        if now < self.wrapup_until(queue_wrapup):
            return "wrapup"
        if self.status in (4, 5):
            return "unavailable"
        return "available"

    def update(self, event: Event) -> None:
        """Every field a member event (QueueMember*, or QueueStatus's QueueMember) has."""
        get = event.get
        self.name = get("MemberName") or get("Name") or self.name
        self.state_interface = get("StateInterface") or self.state_interface
        self.membership = get("Membership") or self.membership
        self.penalty = _int(get("Penalty"), self.penalty)
        self.calls_taken = _int(get("CallsTaken"), self.calls_taken)
        self.last_call = _int(get("LastCall"), self.last_call)
        self.last_pause = _int(get("LastPause"), self.last_pause)
        self.login_time = _int(get("LoginTime"), self.login_time)
        if "InCall" in event:
            self.in_call = get("InCall") == "1"
        self.status = _int(get("Status"), self.status)
        if "Paused" in event:
            self.paused = get("Paused") == "1"
        if "PausedReason" in event or "Paused" in event:
            self.paused_reason = (get("PausedReason") or "") if self.paused else ""
        self.wrapuptime = _int(get("Wrapuptime"), self.wrapuptime)
        if "Ringinuse" in event:
            self.ringinuse = get("Ringinuse") == "1"

    def to_dict(self, now: float, queue_wrapup: int = 0) -> dict[str, Any]:
        return {
            "queue": self.queue, "interface": self.interface, "name": self.name,
            "state_interface": self.state_interface, "membership": self.membership,
            "penalty": self.penalty, "state": self.state(now, queue_wrapup),
            "paused": self.paused, "paused_reason": self.paused_reason,
            "in_call": self.in_call, "device": DEVICE_STATES.get(self.status, "unknown"),
            "calls_taken": self.calls_taken, "last_call": self.last_call,
            "login_time": self.login_time,
            "wrapup_until": self.wrapup_until(queue_wrapup) or None,
        }


@dataclass(slots=True)
class Caller:
    """A caller waiting in a queue (QueueCallerJoin / QueueStatus's QueueEntry)."""

    uniqueid: str
    channel: str
    number: str
    name: str
    position: int
    joined_at: float  # epoch seconds (from the state's ``now``)
    linkedid: str | None = None
    priority: int = 0


@dataclass(slots=True)
class Queue:
    name: str
    strategy: str = ""
    max: int = 0
    completed: int = 0
    abandoned: int = 0
    holdtime: int = 0
    talktime: int = 0
    service_level: int = 0
    service_level_perf: float = 0.0
    weight: int = 0
    members: dict[str, Member] = field(default_factory=dict)
    callers: dict[str, Caller] = field(default_factory=dict)
    # caller Uniqueid -> the members it was offered to (AgentCalled): a caller leaving
    # clears their offer without a pass over every member (3,000 at the national peak)
    offered_to: dict[str, set[str]] = field(default_factory=dict)

    def params(self, event: Event) -> None:
        get = event.get
        self.strategy = get("Strategy") or self.strategy
        self.max = _int(get("Max"), self.max)
        self.completed = _int(get("Completed"), self.completed)
        self.abandoned = _int(get("Abandoned"), self.abandoned)
        self.holdtime = _int(get("Holdtime"), self.holdtime)
        self.talktime = _int(get("TalkTime"), self.talktime)
        self.service_level = _int(get("ServiceLevel"), self.service_level)
        self.service_level_perf = _float(get("ServicelevelPerf"), self.service_level_perf)
        self.weight = _int(get("Weight"), self.weight)

    def waiting(self) -> list[Caller]:
        return sorted(self.callers.values(), key=lambda c: c.position)


class QueueState:
    """Queues by name; see the module's docstring."""

    CONSUMED_AMI_EVENTS = CONSUMED_AMI_EVENTS

    def __init__(self, wrapup: Mapping[str, int] | None = None) -> None:
        self.queues: dict[str, Queue] = {}
        self.wrapup: dict[str, int] = dict(wrapup or {})  # queue → wrapuptime (s)
        self.ready = False  # a complete QueueStatus has been applied
        self.resyncs = 0
        self._touched: set[tuple[str, str, str]] | None = None  # during a resync

    # -- reading -----------------------------------------------------------------------

    def queue_wrapup(self, queue: str) -> int:
        return self.wrapup.get(queue, 0)

    def member(self, queue: str, interface: str) -> Member | None:
        q = self.queues.get(queue)
        return None if q is None else q.members.get(interface)

    def memberships(self, interface: str) -> list[Member]:
        """The queues ``interface`` is a member of (one Member per queue)."""
        return [q.members[interface] for q in self.queues.values() if interface in q.members]

    def members(self) -> Iterator[Member]:
        for q in self.queues.values():
            yield from q.members.values()

    def offerable(self, queue: str, now: float) -> list[Member]:
        """The members of ``queue`` app_queue may offer the next call to (not paused, not
        in wrap-up, not busy)."""
        q = self.queues.get(queue)
        if q is None:
            return []
        wrapup = self.queue_wrapup(queue)
        return [m for m in q.members.values() if m.state(now, wrapup) == "available"]

    def summary(self, queue: str, now: float) -> dict[str, Any]:
        """Members by state, callers waiting, longest wait: what ``ivr queues status``
        shows for one queue."""
        q = self.queues[queue]
        wrapup = self.queue_wrapup(queue)
        by_state = dict.fromkeys(MEMBER_STATES, 0)
        for m in q.members.values():
            by_state[m.state(now, wrapup)] += 1
        waiting = q.waiting()
        return {
            "queue": q.name, "strategy": q.strategy, "wrapup": wrapup,
            "members": len(q.members), "agents_by_state": by_state,
            "waiting": len(waiting),
            "longest_wait_s": round(max((now - c.joined_at for c in waiting), default=0.0), 1),
            "completed": q.completed, "abandoned": q.abandoned,
        }

    def snapshot(self, now: float) -> dict[str, Any]:
        """Everything, as plain data (``--json``, and the HTTP API later)."""
        return {
            "ready": self.ready,
            "queues": [
                {**self.summary(name, now),
                 "agents": [m.to_dict(now, self.queue_wrapup(name))
                            for m in sorted(q.members.values(), key=lambda m: m.interface)],
                 "callers": [{"position": c.position, "uniqueid": c.uniqueid,
                              "number": c.number, "name": c.name,
                              "wait_s": round(now - c.joined_at, 1)} for c in q.waiting()]}
                for name, q in sorted(self.queues.items())
            ],
        }

    # -- live events -------------------------------------------------------------------

    def apply(self, event: Event, now: float) -> bool:
        """Apply one AMI event; True when it was one the state reads."""
        name = event.name
        if name in _MEMBER_EVENTS:
            self._member_event(name, event)
        elif name in _CALLER_EVENTS:
            self._caller_event(name, event, now)
        elif name in _AGENT_EVENTS:
            self._agent_event(name, event, now)
        else:
            return False
        return True

    def _queue(self, name: str) -> Queue:
        q = self.queues.get(name)
        if q is None:
            q = self.queues[name] = Queue(name)
        return q

    def _touch(self, kind: str, queue: str, key: str) -> None:
        if self._touched is not None:
            self._touched.add((kind, queue, key))

    def _member_event(self, name: str, event: Event) -> None:
        queue, interface = event.get("Queue"), event.get("Interface")
        if not queue or not interface:
            return
        q = self._queue(queue)
        self._touch("m", queue, interface)
        if name == "QueueMemberRemoved":
            q.members.pop(interface, None)
            return
        m = q.members.get(interface)
        if m is None:
            m = q.members[interface] = Member(queue, interface)
        m.update(event)

    def _caller_event(self, name: str, event: Event, now: float) -> None:
        queue, uniqueid = event.get("Queue"), event.get("Uniqueid")
        if not queue or not uniqueid:
            return
        q = self._queue(queue)
        self._touch("c", queue, uniqueid)
        if name == "QueueCallerJoin":
            q.callers[uniqueid] = Caller(
                uniqueid=uniqueid, channel=event.get("Channel") or "",
                number=event.get("CallerIDNum") or "", name=event.get("CallerIDName") or "",
                position=_int(event.get("Position"), len(q.callers) + 1), joined_at=now,
                linkedid=event.get("Linkedid"), priority=_int(event.get("Priority")))
            return
        gone = q.callers.pop(uniqueid, None)
        if gone is not None:  # app_queue moves everyone behind one place up
            for c in q.callers.values():
                if c.position > gone.position:
                    c.position -= 1
        if name == "QueueCallerAbandon":
            q.abandoned += 1
        for interface in q.offered_to.pop(uniqueid, ()):  # offered to nobody any more
            m = q.members.get(interface)
            if m is not None and m.offered == uniqueid:
                m.offered = None

    def _agent_event(self, name: str, event: Event, now: float) -> None:
        queue, interface = event.get("Queue"), event.get("Interface")
        if not queue or not interface:
            return
        m = self.member(queue, interface)
        if m is None:
            return
        self._touch("m", queue, interface)
        if name == "AgentCalled":
            m.offered = event.get("Uniqueid") or ""
            self._queue(queue).offered_to.setdefault(m.offered, set()).add(interface)
        elif name in ("AgentRingNoAnswer", "AgentDump"):
            m.offered = None
        elif name == "AgentConnect":
            m.offered = None
            m.in_call = True
        elif name == "AgentComplete":
            m.offered = None
            m.in_call = False
            # QueueMemberStatus (eventmemberstatus) brings Asterisk's LastCall next;
            # without it the call ended now
            m.last_call = max(m.last_call, int(now))
            self._queue(queue).completed += 1

    # -- resync (QueueStatus) ----------------------------------------------------------

    def begin_resync(self) -> None:
        """A ``QueueStatus`` (all queues) is about to be sent: from now on, what events
        touch is newer than (or as new as) the list."""
        self._touched = set()

    def abort_resync(self) -> None:
        """The list did not come whole: keep the live state as it is."""
        self._touched = None

    def apply_status(self, events: Iterable[Event], now: float) -> None:
        """Rebuild from a complete ``QueueStatus`` list (QueueParams / QueueMember /
        QueueEntry events) for every queue."""
        touched = self._touched or set()
        self._touched = None
        old = self.queues
        new: dict[str, Queue] = {}
        for ev in events:
            name, queue = ev.name, ev.get("Queue")
            if not queue:
                continue
            if name == "QueueParams":
                q = new[queue] = Queue(queue)
                q.params(ev)
                continue
            q = new.get(queue) or new.setdefault(queue, Queue(queue))
            if name == "QueueMember":
                interface = ev.get("Location") or ev.get("Interface")
                if interface:
                    m = Member(queue, interface)
                    m.update(ev)
                    before = old.get(queue)
                    prev = before.members.get(interface) if before else None
                    if prev is not None:  # what QueueStatus does not say
                        m.ringinuse, m.offered = prev.ringinuse, prev.offered
                    q.members[interface] = m
            elif name == "QueueEntry":
                uid = ev.get("Uniqueid")
                if uid:
                    before = old.get(queue)
                    prev_c = before.callers.get(uid) if before else None
                    q.callers[uid] = Caller(
                        uniqueid=uid, channel=ev.get("Channel") or "",
                        number=ev.get("CallerIDNum") or "",
                        name=ev.get("CallerIDName") or "",
                        position=_int(ev.get("Position"), len(q.callers) + 1),
                        joined_at=now - _int(ev.get("Wait")),
                        linkedid=prev_c.linkedid if prev_c else None,
                        priority=_int(ev.get("Priority")))
        for kind, queue, key in touched:  # events during the resync win
            before = old.get(queue)
            q = new.setdefault(queue, Queue(queue))
            table: dict[str, Any] = q.members if kind == "m" else q.callers
            prev_table: dict[str, Any] = ({} if before is None else
                                          before.members if kind == "m" else before.callers)
            if key in prev_table:
                table[key] = prev_table[key]
            else:
                table.pop(key, None)
        for q in new.values():  # the offers kept, indexed again
            q.offered_to = {}
            for m in q.members.values():
                if m.offered is not None:
                    q.offered_to.setdefault(m.offered, set()).add(m.interface)
        self.queues = new
        self.ready = True
        self.resyncs += 1
