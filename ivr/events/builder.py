"""AMI events and IVR steps in, :class:`CallEvent` objects out (pure: no I/O, no clock
unless none is given).

State is kept per call, keyed by the call's ``Linkedid``.  Each channel is mapped from its
``Uniqueid`` to its call when its ``Newchannel`` is seen; the call ends (``call.ended``)
when its last channel hangs up.  A call is opened by the ``Newchannel`` of its first
channel (``Uniqueid == Linkedid``) unless that channel starts in one of the
``internal_contexts`` (agent and department legs originated by the bridge: in trace 02
the department leg ``Local/2001@agent-local`` has its own Linkedid); such legs get no
ticket of their own, but their ConfBridge joins/leaves count in the conference's call.

``call.started`` waits until the caller number is known (a ``Local/`` channel is created
with ``<unknown>`` and gets its number from ``NewCallerid``) or until another event of
the call has to be emitted, whichever comes first, so it carries the number when
Asterisk gives one.  Every event carries a snapshot of the call's routing fields.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ivr.ami.messages import Event
from ivr.events.model import CallEvent, DataValue, Routing, Source, event_id
from ivr.events.steps import IvrStep
from ivr.metrics import METRICS

UNKNOWN_NUMBERS = frozenset({"", "<unknown>", "unknown", "anonymous"})
TRUE_WORDS = frozenset({"1", "yes", "true", "on", "y"})

# Channel variables that carry routing decisions (set by the dialplan or the IVR).
ROUTING_VARS: dict[str, str] = {
    "IVR_ENTRY": "entry",
    "IVR_QUEUE": "queue",
    "IVR_DEPT": "department",
    "IVR_DEPARTMENT": "department",
    "IVR_PRIORITY": "priority",
    "IVR_ANONYMOUS": "anonymous",
    "IVR_ANON": "anonymous",
    "IVR_TAGS": "tags",
    "CALLER_TAG": "tag",
    "IVR_LANG": "language",
    "IVR_LANGUAGE": "language",
    "CHANNEL(language)": "language",
    "SURVEY_SCORE": "survey",
    "IVR_SURVEY_SCORE": "survey",
}

SURVEY_TAG_NAMES = frozenset({"survey", "survey.score", "survey_score", "SURVEY_SCORE"})

MAX_PENDING_STEP_CHANNELS = 10_000
MAX_PENDING_STEPS_PER_CHANNEL = 100


@dataclass(frozen=True, slots=True)
class BuilderConfig:
    internal_contexts: frozenset[str] = frozenset({"agent-local"})


@dataclass(slots=True)
class CallState:
    call_id: str
    started_at: float
    dialled: str
    first_uniqueid: str
    caller: str | None = None
    language: str | None = None
    language_explicit: bool = False
    entry: str = ""
    queue: str | None = None
    agent: str | None = None
    department: str | None = None
    priority: int = 0
    tags: list[str] = field(default_factory=list)
    anonymous: bool = False
    seq: int = 0
    started: bool = False
    last_ts: float = 0.0
    channels: set[str] = field(default_factory=set)
    agent_channels: set[str] = field(default_factory=set)
    recording_files: dict[str, str] = field(default_factory=dict)  # uniqueid -> file
    recordings: set[str] = field(default_factory=set)  # uniqueids with a MixMonitor

    def routing(self) -> Routing:
        return Routing(
            entry=self.entry or self.dialled,
            queue=self.queue,
            agent=self.agent,
            department=self.department,
            priority=self.priority,
            tags=tuple(self.tags),
            anonymous=self.anonymous,
        )


def _num(value: str | None) -> str | None:
    if value is None or value.strip().lower() in UNKNOWN_NUMBERS:
        return None
    return value


def _int(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        return None


class CallEventBuilder:
    """Turns the AMI event stream and IVR steps into per-call ordered CallEvents."""

    def __init__(
        self,
        config: BuilderConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or BuilderConfig()
        self._clock = clock
        self._calls: dict[str, CallState] = {}
        self._chan_call: dict[str, str] = {}  # uniqueid -> call id (tracked calls)
        self._untracked: dict[str, str] = {}  # uniqueid -> linkedid (internal legs)
        self._conf_owner: dict[str, str] = {}  # conference name -> call id
        self._pending: OrderedDict[str, list[IvrStep]] = OrderedDict()
        self.unknown_channel_events = 0

    # -- introspection ---------------------------------------------------------

    @property
    def open_calls(self) -> int:
        return len(self._calls)

    def call(self, call_id: str) -> CallState | None:
        return self._calls.get(call_id)

    def call_of(self, uniqueid: str) -> str | None:
        return self._chan_call.get(uniqueid)

    # -- emission --------------------------------------------------------------

    def _emit(
        self,
        out: list[CallEvent],
        call: CallState,
        type_: str,
        source: Source,
        ts: float,
        data: dict[str, DataValue] | None = None,
    ) -> None:
        if not call.started and type_ != "call.started":
            self._start(out, call, source, ts)
        call.seq += 1
        call.last_ts = ts
        out.append(
            CallEvent(
                id=event_id(call.call_id, call.seq, type_),
                type=type_,
                call_id=call.call_id,
                seq=call.seq,
                ts=ts,
                call_started_at=call.started_at,
                dialled=call.dialled,
                caller=call.caller,
                language=call.language,
                routing=call.routing(),
                source=source,
                data=data or {},
            )
        )

    def _start(self, out: list[CallEvent], call: CallState, source: Source, ts: float) -> None:
        call.started = True
        self._emit(out, call, "call.started", source, ts, {"first_channel": call.first_uniqueid})

    # -- AMI ---------------------------------------------------------------------

    def feed_ami(self, event: Event, now: float | None = None) -> list[CallEvent]:
        """Call events produced by one AMI event (often none)."""
        out: list[CallEvent] = []
        # Hot path (every AMI event): headers read straight from the dict; a header that
        # repeats is a list, whose first value is what ``Event.get`` would return.
        headers = event.headers
        name = headers.get("Event")
        if not isinstance(name, str):
            name = event.name
        ts_header = headers.get("Timestamp")
        if isinstance(ts_header, list):
            ts_header = ts_header[0]
        ts = now if now is not None else self._clock()
        if ts_header:
            try:
                ts = float(ts_header)
            except ValueError:
                pass
        handler = _AMI_HANDLERS.get(name)
        if name == "Newchannel":
            self._newchannel(event, ts, out)
            return out
        uid = headers.get("Uniqueid")
        if isinstance(uid, list):
            uid = uid[0]
        call = self._calls.get(self._chan_call.get(uid, "")) if uid else None
        if call is not None:
            self._observe(call, event, uid or "", ts, out)
        elif uid and handler is not None and uid not in self._untracked:
            # A channel whose Newchannel we never saw (bridge started mid-call): counted,
            # not guessed at (its call's seq numbers are unknown).
            self.unknown_channel_events += 1
            METRICS.inc("events.builder.unknown_channel")
        if handler is not None:
            handler(self, event, call, ts, out)
        return out

    def _newchannel(self, ev: Event, ts: float, out: list[CallEvent]) -> None:
        uid = ev.get("Uniqueid") or ""
        lid = ev.get("Linkedid") or uid
        if not uid:
            METRICS.inc("events.builder.bad_ami")
            return
        call = self._calls.get(lid)
        if call is not None:
            call.channels.add(uid)
            self._chan_call[uid] = lid
        elif uid == lid and (ev.get("Context") or "") not in self.config.internal_contexts:
            call = CallState(
                call_id=lid, started_at=ts, dialled=ev.get("Exten") or "", first_uniqueid=uid
            )
            call.channels.add(uid)
            self._calls[lid] = call
            self._chan_call[uid] = lid
        else:
            self._untracked[uid] = lid
            return
        self._observe(call, ev, uid, ts, out)
        steps = self._pending.pop(uid, None)
        if steps:
            for step in steps:
                out.extend(self.feed_step(step))

    def _observe(
        self, call: CallState, ev: Event, uid: str, ts: float, out: list[CallEvent]
    ) -> None:
        """Caller number and language from any event on a caller-side channel."""
        if uid in call.agent_channels:
            return
        if call.caller is None:
            num = _num(ev.get("CallerIDNum"))
            if num is not None:
                call.caller = num
        if not call.language_explicit:
            lang = ev.get("Language")
            if lang:
                call.language = lang
        if not call.started and call.caller is not None:
            self._start(out, call, Source("ami", ev.name, uid), ts)

    def _varset(self, ev: Event, call: CallState | None, ts: float, out: list[CallEvent]) -> None:
        if call is None:
            return
        var = ev.get("Variable") or ""
        value = ev.get("Value") or ""
        uid = ev.get("Uniqueid") or ""
        if var == "MIXMONITOR_FILENAME":
            call.recording_files[uid] = value
            return
        # ``Set(__IVR_LANGUAGE=zh)`` (inherited by the agent's channel) is the same
        # routing variable as ``IVR_LANGUAGE``.
        key = ROUTING_VARS.get(var.lstrip("_"))
        if key is None:
            return
        if key == "survey":
            self._emit(out, call, "survey.scored", Source("ami", "VarSet", uid), ts,
                       {"score": _int(value) if _int(value) is not None else value,
                        "variable": var})
            return
        self._set_routing(call, key, value)

    @staticmethod
    def _set_routing(call: CallState, key: str, value: str) -> None:
        if key == "entry":
            call.entry = value
        elif key == "queue":
            call.queue = value or None
        elif key == "department":
            call.department = value or None
        elif key == "priority":
            prio = _int(value)
            if prio is not None and prio >= 0:
                call.priority = prio
        elif key == "anonymous":
            call.anonymous = value.strip().lower() in TRUE_WORDS
        elif key == "tags":
            for tag in value.split(","):
                tag = tag.strip()
                if tag and tag not in call.tags:
                    call.tags.append(tag)
        elif key == "tag":
            if value and value not in call.tags:
                call.tags.append(value)
        elif key == "language":
            if value:
                call.language = value
                call.language_explicit = True

    def _queue_join(self, ev: Event, call: CallState | None, ts: float,
                    out: list[CallEvent]) -> None:
        if call is None:
            return
        call.queue = ev.get("Queue") or call.queue
        self._emit(out, call, "queue.joined", _src(ev), ts,
                   {"queue": ev.get("Queue"), "position": _int(ev.get("Position")),
                    "count": _int(ev.get("Count"))})

    def _queue_abandon(self, ev: Event, call: CallState | None, ts: float,
                       out: list[CallEvent]) -> None:
        if call is None:
            return
        self._emit(out, call, "queue.abandoned", _src(ev), ts,
                   {"queue": ev.get("Queue"), "position": _int(ev.get("Position")),
                    "original_position": _int(ev.get("OriginalPosition")),
                    "hold_time_s": _int(ev.get("HoldTime"))})

    def _queue_leave(self, ev: Event, call: CallState | None, ts: float,
                     out: list[CallEvent]) -> None:
        if call is None:
            return
        self._emit(out, call, "queue.left", _src(ev), ts,
                   {"queue": ev.get("Queue"), "position": _int(ev.get("Position")),
                    "count": _int(ev.get("Count"))})

    def _agent(self, ev: Event, call: CallState | None, ts: float, out: list[CallEvent]) -> None:
        if call is None:
            return
        dest = ev.get("DestUniqueid")
        if dest:
            call.agent_channels.add(dest)
        name = ev.name
        data: dict[str, DataValue] = {
            "queue": ev.get("Queue"),
            "agent": ev.get("MemberName"),
            "interface": ev.get("Interface"),
        }
        if name == "AgentCalled":
            type_ = "agent.called"
        elif name == "AgentConnect":
            type_ = "agent.connected"
            call.agent = ev.get("MemberName") or call.agent
            data["hold_time_s"] = _int(ev.get("HoldTime"))
            data["ring_time_s"] = _int(ev.get("RingTime"))
        else:
            type_ = "agent.completed"
            data["hold_time_s"] = _int(ev.get("HoldTime"))
            data["talk_time_s"] = _int(ev.get("TalkTime"))
            data["reason"] = ev.get("Reason")
        self._emit(out, call, type_, _src(ev), ts, data)

    def _blind(self, ev: Event, call: CallState | None, ts: float, out: list[CallEvent]) -> None:
        call = self._calls.get(ev.get("TransfererLinkedid") or "") or self._calls.get(
            self._chan_call.get(ev.get("TransfererUniqueid") or "", "")
        )
        if call is None:
            return
        self._emit(out, call, "transfer.blind", Source("ami", ev.name,
                                                       ev.get("TransfererUniqueid") or ""), ts,
                   {"result": ev.get("Result"), "context": ev.get("Context"),
                    "extension": ev.get("Extension"),
                    "transferer_channel": ev.get("TransfererChannel"),
                    "transferee_channel": ev.get("TransfereeChannel"),
                    "external": (ev.get("IsExternal") or "").lower() == "yes"})

    def _attended(self, ev: Event, call: CallState | None, ts: float,
                  out: list[CallEvent]) -> None:
        call = None
        for key in ("OrigTransfererLinkedid", "SecondTransfererLinkedid",
                    "TransfereeLinkedid", "TransferTargetLinkedid"):
            call = self._calls.get(ev.get(key) or "")
            if call is not None:
                break
        if call is None:
            return
        self._emit(out, call, "transfer.attended",
                   Source("ami", ev.name, ev.get("OrigTransfererUniqueid") or ""), ts,
                   {"result": ev.get("Result"), "dest_type": ev.get("DestType"),
                    "dest_app": ev.get("DestApp"),
                    "transferer_channel": ev.get("OrigTransfererChannel"),
                    "target_channel": ev.get("SecondTransfererChannel")
                    or ev.get("TransferTargetChannel"),
                    "external": (ev.get("IsExternal") or "").lower() == "yes"})

    def _conf(self, ev: Event, call: CallState | None, ts: float, out: list[CallEvent]) -> None:
        conf = ev.get("Conference") or ""
        uid = ev.get("Uniqueid") or ""
        owner = self._calls.get(self._conf_owner.get(conf, ""))
        if ev.name == "ConfbridgeEnd":
            if owner is not None:
                del self._conf_owner[conf]
                self._emit(out, owner, "threeway.ended", _src(ev), ts, {"conference": conf})
            return
        target = owner or call
        if target is None:
            return
        if uid in target.agent_channels:
            role = "agent"
        elif uid in target.channels:
            role = "caller"
        else:
            role = "external"
        data: dict[str, DataValue] = {"conference": conf, "role": role,
                                      "channel": ev.get("Channel")}
        if ev.name == "ConfbridgeJoin":
            if owner is None:
                self._conf_owner[conf] = target.call_id
                self._emit(out, target, "threeway.started", _src(ev), ts, {"conference": conf})
            if role == "external":
                data["number"] = _num(ev.get("CallerIDNum"))
            self._emit(out, target, "threeway.joined", _src(ev), ts, data)
        else:
            self._emit(out, target, "threeway.left", _src(ev), ts, data)

    def _mixmonitor(self, ev: Event, call: CallState | None, ts: float,
                    out: list[CallEvent]) -> None:
        if call is None:
            return
        uid = ev.get("Uniqueid") or ""
        data: dict[str, DataValue] = {"file": call.recording_files.get(uid),
                                      "channel": ev.get("Channel")}
        if ev.name == "MixMonitorStart":
            call.recordings.add(uid)
            self._emit(out, call, "recording.started", _src(ev), ts, data)
        else:
            self._emit(out, call, "recording.stopped", _src(ev), ts, data)

    def _hangup(self, ev: Event, call: CallState | None, ts: float, out: list[CallEvent]) -> None:
        uid = ev.get("Uniqueid") or ""
        if call is None:
            self._untracked.pop(uid, None)
            self._pending.pop(uid, None)
            return
        self._chan_call.pop(uid, None)
        call.channels.discard(uid)
        if uid in call.recordings:
            call.recordings.discard(uid)
            self._emit(out, call, "recording.ready", _src(ev), ts,
                       {"file": call.recording_files.get(uid), "channel": ev.get("Channel")})
        if not call.channels:
            self._end(call, _src(ev), ts, out, cause=_int(ev.get("Cause")),
                      cause_txt=ev.get("Cause-txt"), reason="hangup")

    def _end(self, call: CallState, source: Source, ts: float, out: list[CallEvent], *,
             cause: int | None, cause_txt: str | None, reason: str) -> None:
        self._emit(out, call, "call.ended", source, ts,
                   {"cause": cause, "cause_txt": cause_txt, "reason": reason,
                    "duration_s": round(ts - call.started_at, 3)})
        del self._calls[call.call_id]
        for uid in call.channels:
            self._chan_call.pop(uid, None)
        for conf in [c for c, owner in self._conf_owner.items() if owner == call.call_id]:
            del self._conf_owner[conf]

    def sweep(self, now: float, max_idle: float) -> list[CallEvent]:
        """End calls with no event for ``max_idle`` seconds (a lost Hangup, a bridge that
        missed part of the stream) so their state cannot leak; ``reason`` says so."""
        out: list[CallEvent] = []
        for call in [c for c in self._calls.values() if now - max(c.last_ts, c.started_at)
                     > max_idle]:
            METRICS.inc("events.builder.swept")
            self._end(call, Source("ami", "sweep", ""), now, out, cause=None, cause_txt=None,
                      reason="expired")
        return out

    # -- IVR steps -----------------------------------------------------------------

    def feed_step(self, step: IvrStep) -> list[CallEvent]:
        out: list[CallEvent] = []
        call = self._calls.get(self._chan_call.get(step.uniqueid, ""))
        if call is None:
            if step.uniqueid in self._untracked:
                return out
            # The AGI session may report before the AMI Newchannel was read: hold it.
            pending = self._pending.get(step.uniqueid)
            if pending is None:
                if len(self._pending) >= MAX_PENDING_STEP_CHANNELS:
                    _, dropped = self._pending.popitem(last=False)
                    METRICS.inc("events.builder.steps_unmatched", len(dropped))
                pending = self._pending[step.uniqueid] = []
            if len(pending) < MAX_PENDING_STEPS_PER_CHANNEL:
                pending.append(step)
            else:
                METRICS.inc("events.builder.steps_unmatched")
            return out
        src = Source("ivr", step.kind, step.uniqueid)
        data: dict[str, DataValue] = {"step": step.step, **dict(step.data)}
        if not call.entry and step.entry:
            call.entry = step.entry
        kind = step.kind
        if kind == "entered":
            call.entry = step.data.get("entry") or step.entry or call.entry
        elif kind == "language":
            self._set_routing(call, "language", step.data.get("language", ""))
        elif kind == "exit" and step.data.get("to") == "queue" and step.data.get("target"):
            call.queue = step.data["target"]
        elif kind == "tag":
            name = step.data.get("name", "")
            value = step.data.get("value", "")
            if name in SURVEY_TAG_NAMES:
                score = _int(value)
                self._emit(out, call, "survey.scored", src, step.ts,
                           {"score": score if score is not None else value, "step": step.step})
                return out
            key = {"department": "department", "priority": "priority",
                   "anonymous": "anonymous", "tags": "tags", "tag": "tag",
                   "queue": "queue"}.get(name)
            if key is not None:
                self._set_routing(call, key, value)
        elif kind == "callback":
            self._emit(out, call, "callback.requested", src, step.ts, data)
            return out
        self._emit(out, call, "ivr." + kind, src, step.ts, data)
        return out

    def feed_many(self, events: Iterable[Event]) -> list[CallEvent]:
        out: list[CallEvent] = []
        for ev in events:
            out.extend(self.feed_ami(ev))
        return out


def _src(ev: Event) -> Source:
    return Source("ami", ev.name, ev.get("Uniqueid") or "")


_Handler = Callable[[CallEventBuilder, Event, CallState | None, float, list[CallEvent]], None]

_AMI_HANDLERS: dict[str, _Handler] = {
    "VarSet": CallEventBuilder._varset,
    "QueueCallerJoin": CallEventBuilder._queue_join,
    "QueueCallerAbandon": CallEventBuilder._queue_abandon,
    "QueueCallerLeave": CallEventBuilder._queue_leave,
    "AgentCalled": CallEventBuilder._agent,
    "AgentConnect": CallEventBuilder._agent,
    "AgentComplete": CallEventBuilder._agent,
    "BlindTransfer": CallEventBuilder._blind,
    "AttendedTransfer": CallEventBuilder._attended,
    "ConfbridgeJoin": CallEventBuilder._conf,
    "ConfbridgeLeave": CallEventBuilder._conf,
    "ConfbridgeEnd": CallEventBuilder._conf,
    "MixMonitorStart": CallEventBuilder._mixmonitor,
    "MixMonitorStop": CallEventBuilder._mixmonitor,
    "Hangup": CallEventBuilder._hangup,
}

# AMI events the builder consumes (an AMI eventfilter may pass only these).
CONSUMED_AMI_EVENTS = frozenset(_AMI_HANDLERS) | {"Newchannel", "NewCallerid"}
# the VarSet variables :meth:`CallEventBuilder._varset` reads (``_``/``__`` prefixes too)
CONSUMED_VARIABLES = frozenset(ROUTING_VARS) | {"MIXMONITOR_FILENAME"}
