"""AMI events and IVR steps in, :class:`CallEvent` objects out (pure: no I/O, no clock
unless none is given).

State is kept in the live call model (:attr:`CallEventBuilder.model`,
:class:`ivr.calls.model.CallModel`): per call (:class:`ivr.calls.state.CallState`), keyed
by the call's ``Linkedid``, with the conferences each call owns.  Each channel is mapped
from its ``Uniqueid`` to its call when its ``Newchannel`` is seen, in the model's
Linkedid tracker (:attr:`CallEventBuilder.calls`, :class:`ivr.calls.tracker.
CallTracker`, which other readers such as the service-level figures share); the call
ends (``call.ended``) when
its last channel hangs up.  A call is opened by the ``Newchannel`` of its first
channel (``Uniqueid == Linkedid``) unless that channel starts in one of the
``internal_contexts`` (agent and department legs originated by the bridge: in trace 02
the department leg ``Local/2001@agent-local`` has its own Linkedid); such legs get no
ticket of their own, but their ConfBridge joins/leaves count in the conference's call.

``call.started`` waits until the caller number is known (a ``Local/`` channel is created
with ``<unknown>`` and gets its number from ``NewCallerid``) or until another event of
the call has to be emitted, whichever comes first, so it carries the number when
Asterisk gives one.  Every event carries a snapshot of the call's routing fields.

IVR steps (:class:`~ivr.calls.steps.IvrStep`) name their call by its ``Linkedid``: a step
of a call not open yet (the FastAGI session was faster than the AMI stream, or the call
started while the bridge was not listening) opens it, and the AMI events that follow
join it; a step of a call that ended, or of an internal leg, is dropped and counted
(``events.builder.steps_unmatched``).  Routing facts come from the routing variables of
:data:`ivr.calls.variables.ROUTING_VARS` (``VarSet``), from the steps and from app_queue
(queue joined, agent connected), all through one path, :meth:`CallState.set_routing`.

With ``track_changes`` the builder remembers which calls changed (an event, a routing
variable, a channel, a recording file…); :meth:`CallEventBuilder.take_dirty` hands out
their checkpoints (:meth:`CallState.checkpoint`, JSON) so a caller can store them with
the events, and :meth:`CallEventBuilder.restore` resumes calls from checkpoints after a
restart (same call ids, seq continuing).  :meth:`CallEventBuilder.resync` ends calls
whose channels are no longer live (their Hangup was missed while the bridge was away)
and adopts live calls that started while it was away (``CoreShowChannel`` rows).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ivr.ami.messages import Event
from ivr.calls import variables as V
from ivr.calls.channels import CONSUMED_AMI_EVENTS as CHANNEL_EVENTS
from ivr.calls.channels import HANDLERS as CHANNEL_HANDLERS
from ivr.calls.model import CallModel
from ivr.calls.state import CallState, int_or_none
from ivr.calls.steps import IvrStep, ServiceStep
from ivr.calls.tracker import CallTracker
from ivr.calls.variables import ROUTING_VARS
from ivr.events.model import CallEvent, DataValue, Routing, Source, event_id
from ivr.metrics import METRICS

UNKNOWN_NUMBERS = frozenset({"", "<unknown>", "unknown", "anonymous"})

SURVEY_TAG_NAMES = frozenset({"survey", "survey.score", "survey_score", "SURVEY_SCORE"})

# bound of what resync remembers: channels of unknown calls that hung up after the mark
# (the ids of calls that ended are the call model's, ivr.calls.model)
MAX_GONE_SINCE_MARK = 10_000
DIAL_CHARS = frozenset("0123456789+*#")


@dataclass(frozen=True, slots=True)
class BuilderConfig:
    # agent legs, and the legs of parties added to three-way calls (ivr/threeway: the
    # rendered [ivr-threeway-leg] context dials them): no ticket of their own
    internal_contexts: frozenset[str] = frozenset({"agent-local", "ivr-threeway-leg"})
    # the Asterisk server's system name when there are several ("": the only one): the
    # events' call id is "<server>-<Linkedid>" (Linkedids of two servers can be equal;
    # one that already starts with "<server>-", asterisk.conf systemname, is kept) and
    # they carry "server"
    server: str = ""


def qualify(server: str, linkedid: str) -> str:
    """The call id of ``linkedid`` on ``server`` (unique across servers)."""
    if not server or linkedid.startswith(server + "-"):
        return linkedid
    return f"{server}-{linkedid}"


def _routing(call: CallState) -> Routing:
    return Routing(
        entry=call.entry or call.dialled,
        queue=call.queue,
        agent=call.agent,
        department=call.department,
        priority=call.priority,
        tags=tuple(call.tags),
        anonymous=call.anonymous,
    )


def _duration_s(row: Event) -> int:
    """``Duration: HH:MM:SS`` of a ``CoreShowChannel`` in seconds (0 if absent or bad)."""
    parts = (row.get("Duration") or "").split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return 0
    return int(parts[0]) * 3600 + int(parts[1]) * 60 + int(parts[2])


def _chan_variables(row: Event) -> dict[str, str]:
    """``ChanVariable: NAME=value`` headers (manager.conf ``channelvars``)."""
    out: dict[str, str] = {}
    for item in row.getall("ChanVariable"):
        name, sep, value = item.partition("=")
        if sep and name:
            out[name] = value
    return out


class _NoTracking(set[str]):
    """The change set of a builder that does not track changes: forgets at once."""

    def add(self, element: str) -> None:
        return None


def _num(value: str | None) -> str | None:
    if value is None or value.strip().lower() in UNKNOWN_NUMBERS:
        return None
    return value


class CallEventBuilder:
    """Turns the AMI event stream and IVR steps into per-call ordered CallEvents."""

    def __init__(
        self,
        config: BuilderConfig | None = None,
        clock: Callable[[], float] = time.time,
        *,
        track_changes: bool = False,
        calls: CallTracker | None = None,
    ) -> None:
        self.config = config or BuilderConfig()
        # the live calls this builder keeps (ivr.calls.model), read by whoever needs them
        self.model = CallModel(calls)
        # its Linkedid tracker (shared with other readers, e.g. the service-level
        # figures): every live channel's call, tracked calls and internal legs alike; a
        # channel whose call is not in the model's calls is an untracked leg
        self.calls: CallTracker = self.model.tracker
        self._chan_lid = self.calls.channel_call  # read on the hot path
        self._calls = self.model.calls  # read on the hot path; changed through the model
        self._live = self.model.channels
        self._clock = clock
        # ids of calls changed since the last take_dirty() (ended calls included)
        self._dirty: set[str] = set() if track_changes else _NoTracking()
        # uniqueids of unknown channels hung up since channels_snapshot() (None: no
        # resync pending): resync must not adopt them from a list that predates the Hangup
        self._gone_since_mark: set[str] | None = None
        self._tracker_mark: frozenset[str] | None = None  # every live channel at the mark
        self.unknown_channel_events = 0

    # -- introspection ---------------------------------------------------------

    @property
    def open_calls(self) -> int:
        return len(self._calls)

    def call(self, call_id: str) -> CallState | None:
        return self._calls.get(call_id)

    def call_of(self, uniqueid: str) -> str | None:
        """The open call channel ``uniqueid`` belongs to (None for an internal leg)."""
        call = self.model.call_of(uniqueid)
        return None if call is None else call.call_id

    # -- checkpoints (durable state) ---------------------------------------------

    def take_dirty(self) -> list[tuple[str, str | None]]:
        """``(call id, checkpoint)`` of every call changed since the last call, the
        checkpoint ``None`` for a call that ended; empty unless ``track_changes``."""
        if not self._dirty:
            return []
        calls = self._calls
        out = [(cid, None if (c := calls.get(cid)) is None else c.checkpoint())
               for cid in self._dirty]
        self._dirty.clear()
        return out

    @property
    def dirty(self) -> bool:
        """Some call changed since the last :meth:`take_dirty`."""
        return bool(self._dirty)

    def reset(self) -> None:
        """Forget every call and channel (a bridge that stopped owning its Asterisk's
        call events, ivr/failover: the next owner continues them from the checkpoints).
        The ids of the calls that ended are kept."""
        self.model.reset()
        self._dirty.clear()
        self._gone_since_mark = None
        self._tracker_mark = None

    def restore(self, call: CallState) -> None:
        """Resume a call from its checkpoint (at start, before any event is fed)."""
        self.model.restore(call)

    def channels_snapshot(self) -> dict[str, frozenset[str]]:
        """Each open call's channels now: the ``mark`` for :meth:`resync`."""
        self._gone_since_mark = set()  # a mark whose list never came is forgotten
        self._tracker_mark = self.calls.snapshot()
        return {cid: frozenset(c.channels) for cid, c in self._calls.items()}

    def resync(self, mark: Mapping[str, frozenset[str]], live: Iterable[Event | str],
               now: float | None = None) -> list[CallEvent]:
        """After (re)connecting: ``live`` = the ``CoreShowChannel`` events Asterisk lists
        (a bare Uniqueid string is judged like one but cannot be adopted), ``mark`` =
        :meth:`channels_snapshot` taken before asking.

        First, listed channels the builder does not know (created while the bridge was
        not listening) are *adopted*: one whose ``Linkedid`` is an open call joins it;
        else a call is opened from its ``Linkedid`` group (see :meth:`_adopt`) with
        ``call.started`` data ``adopted: true``; internal legs are remembered as
        untracked, as their ``Newchannel`` would have been.  Then a channel of ``mark``
        that is not live hung up while the bridge was not listening: it is dropped
        (``recording.ready`` if it was recorded) and a call left with no channel ends
        (``call.ended``, ``reason: lost``).  Channels created after ``mark`` are not
        judged (the list may predate them); channels of unknown calls whose ``Hangup``
        came after ``mark`` are not adopted.  Internal legs not listed leave the Linkedid
        tracker too (when ``mark`` came from :meth:`channels_snapshot`)."""
        out: list[CallEvent] = []
        ts = now if now is not None else self._clock()
        rows: list[Event] = []
        live_ids: set[str] = set()
        for item in live:
            if isinstance(item, str):
                live_ids.add(item)
                continue
            uid = item.get("Uniqueid") or ""
            if uid:
                live_ids.add(uid)
                rows.append(item)
        gone_meanwhile = self._gone_since_mark or set()
        self._gone_since_mark = None
        groups: dict[str, list[Event]] = {}
        for row in rows:
            uid = row.get("Uniqueid") or ""
            if uid in self._chan_lid or uid in gone_meanwhile:
                continue
            groups.setdefault(row.get("Linkedid") or uid, []).append(row)
        if groups:
            untracked_calls = {lid for lid in self.calls.calls() if lid not in self._calls}
            for lid, group in groups.items():
                self._adopt(lid, group, untracked_calls, ts, out)
        for cid, chans in mark.items():
            call = self._calls.get(cid)
            if call is None:
                continue
            gone = [uid for uid in chans if uid not in live_ids and uid in call.channels]
            if not gone:
                continue
            src = Source("ami", "CoreShowChannels", "")
            for uid in gone:
                self.model.remove_channel(call, uid)
                if uid in call.recordings:
                    call.recordings.discard(uid)
                    self._emit(out, call, "recording.ready", Source("ami", "CoreShowChannels",
                                                                    uid), ts,
                               {"file": call.recording_files.get(uid), "channel": None})
            self._dirty.add(cid)
            if not call.channels:
                METRICS.inc("events.builder.lost_calls")
                self._end(call, src, ts, out, cause=None, cause_txt=None, reason="lost")
        tracker_mark, self._tracker_mark = self._tracker_mark, None
        if tracker_mark is not None:
            self.calls.prune(tracker_mark, live_ids)
        self._live.rebuild(tracker_mark, rows, live_ids)
        return out

    def _adopt(self, lid: str, group: list[Event], untracked_calls: set[str], ts: float,
               out: list[CallEvent]) -> None:
        """Take on ``group``, the listed channels of call ``lid`` the builder does not
        know.  An open call gets them as channels (internal-context ones as agent legs).
        Otherwise a call is opened when the call's first channel (``Uniqueid ==
        Linkedid``) is listed outside the internal contexts, or, that channel being gone,
        when another of the group is (the oldest such one stands for the caller);
        otherwise, or when ``lid`` is an internal leg's call or a call that ended in this
        process, the group is untracked."""
        internal = self.config.internal_contexts
        call = self._calls.get(lid)
        if call is None:
            first = next((r for r in group if r.get("Uniqueid") == lid), None)
            if first is not None:
                caller_row = first if (first.get("Context") or "") not in internal else None
            else:
                outside = [r for r in group if (r.get("Context") or "") not in internal]
                caller_row = max(outside, key=_duration_s) if outside else None
            if caller_row is None or lid in untracked_calls or self.model.has_ended(lid):
                for row in group:
                    self.calls.add(row.get("Uniqueid") or "", lid)
                return
            call = self._open_adopted(lid, caller_row, group, ts, out)
        src_uid = ""
        for row in group:
            uid = row.get("Uniqueid") or ""
            self.model.add_channel(call, uid)
            if (row.get("Context") or "") in internal:
                call.agent_channels.add(uid)
            elif not src_uid:
                src_uid = uid
            recording = _chan_variables(row).get(V.MIXMONITOR_FILENAME)
            if recording:  # channelvars: a MixMonitor ran on it, its file closes at Hangup
                call.recording_files[uid] = recording
                call.recordings.add(uid)
        self._dirty.add(lid)
        METRICS.inc("events.builder.adopted_channels", len(group))
        for row in group:
            uid = row.get("Uniqueid") or ""
            if uid not in call.agent_channels:
                self._observe(call, row, uid, ts, out)
        if not call.started:
            # the call is live: its ticket must not wait for a number that may never come
            self._start(out, call, Source("ami", "CoreShowChannels", src_uid), ts)

    def _open_adopted(self, lid: str, row: Event, group: list[Event], ts: float,
                      out: list[CallEvent]) -> CallState:
        """A call that started while the bridge was not listening, from its listed
        channels: started ``Duration`` ago (the group's oldest channel), caller and
        language from ``row``, the queue from a caller-side channel running ``Queue``;
        routing variables from ``ChanVariable`` headers (only when manager.conf
        ``channelvars`` lists them).  ``dialled``: ``IVR_ENTRY`` if
        listed, else ``row``'s ``Exten`` when it is a number (once the dialplan moved the
        channel, e.g. to ``ivr-route,s``, it is not the dialled number), else empty."""
        uid = row.get("Uniqueid") or ""
        variables = _chan_variables(row)
        exten = row.get("Exten") or ""
        if variables.get(V.ENTRY):
            dialled, dialled_from = variables[V.ENTRY], V.ENTRY
        elif exten and all(c in DIAL_CHARS for c in exten):
            dialled, dialled_from = exten, "Exten"
        else:
            dialled, dialled_from = "", "unknown"
        call = CallState(call_id=lid, started_at=ts - max(_duration_s(r) for r in group),
                         dialled=dialled, first_uniqueid=lid)
        call.caller = _num(row.get("CallerIDNum"))
        call.language = row.get("Language") or None
        for var, value in variables.items():
            name = var.lstrip("_")
            key = ROUTING_VARS.get(name)
            if key is None and name.startswith(V.TAG_PREFIX):  # a set step's IVR_TAG_<name>
                key = V.TAG_ROUTING.get(name[len(V.TAG_PREFIX):])
            if key is not None:
                call.set_routing(key, value)
        internal = self.config.internal_contexts
        in_queue = next((r for r in group if r.get("Application") == "Queue"
                         and (r.get("Context") or "") not in internal), None)
        if call.queue is None and in_queue is not None:
            # waiting in (or answered from) Queue(<name>,…): QueueCallerJoin was missed
            call.set_routing("queue", (in_queue.get("ApplicationData") or "").split(",")[0]
                             .strip())
        call.started = True
        self.model.open(call)
        METRICS.inc("events.builder.adopted_calls")
        self._emit(out, call, "call.started", Source("ami", "CoreShowChannels", uid), ts,
                   {"first_channel": lid, "adopted": True, "source": "CoreShowChannels",
                    "channel": row.get("Channel"), "first_channel_live": uid == lid,
                    "dialled_from": dialled_from})
        return call

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
        self._dirty.add(call.call_id)
        server = self.config.server
        cid = qualify(server, call.call_id) if server else call.call_id
        out.append(
            CallEvent(
                id=event_id(cid, call.seq, type_),
                type=type_,
                call_id=cid,
                seq=call.seq,
                ts=ts,
                call_started_at=call.started_at,
                dialled=call.dialled,
                caller=call.caller,
                language=call.language,
                routing=_routing(call),
                source=source,
                data=data or {},
                server=server or None,
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
        # the live channels first (model, then events): state, lines, bridges, queues …
        live = CHANNEL_HANDLERS.get(name)
        if live is not None:
            live(self._live, event)
            if name in _CHANNEL_ONLY:
                return out
        handler = _AMI_HANDLERS.get(name)
        if name == "Newchannel":
            self._newchannel(event, ts, out)
            return out
        uid = headers.get("Uniqueid")
        if isinstance(uid, list):
            uid = uid[0]
        lid = self._chan_lid.get(uid) if uid else None
        call = self._calls.get(lid) if lid is not None else None
        if call is not None:
            self._observe(call, event, uid or "", ts, out)
        elif uid and handler is not None and lid is None:
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
            self.model.add_channel(call, uid)
            self._dirty.add(lid)
        elif uid == lid and (ev.get("Context") or "") not in self.config.internal_contexts:
            call = CallState(
                call_id=lid, started_at=ts, dialled=ev.get("Exten") or "", first_uniqueid=uid
            )
            call.channels.add(uid)
            self.model.open(call)
            self._dirty.add(lid)
        else:
            self.calls.add(uid, lid)
            return
        self._observe(call, ev, uid, ts, out)

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
                self._dirty.add(call.call_id)
        if not call.language_explicit:
            lang = ev.get("Language")
            if lang and lang != call.language:
                call.language = lang
                self._dirty.add(call.call_id)
        if not call.started and call.caller is not None:
            self._start(out, call, Source("ami", ev.name, uid), ts)

    def _varset(self, ev: Event, call: CallState | None, ts: float, out: list[CallEvent]) -> None:
        if call is None:
            return
        var = ev.get("Variable") or ""
        value = ev.get("Value") or ""
        uid = ev.get("Uniqueid") or ""
        if var == V.MIXMONITOR_FILENAME:
            call.recording_files[uid] = value
            self._dirty.add(call.call_id)
            return
        # ``Set(__IVR_LANGUAGE=zh)`` (inherited by the agent's channel) is the same
        # routing variable as ``IVR_LANGUAGE``.
        key = ROUTING_VARS.get(var.lstrip("_"))
        if key is None:
            return
        call.set_routing(key, value)
        self._dirty.add(call.call_id)

    def _queue_join(self, ev: Event, call: CallState | None, ts: float,
                    out: list[CallEvent]) -> None:
        if call is None:
            return
        queue = ev.get("Queue")
        if queue:
            call.set_routing("queue", queue)
        self._emit(out, call, "queue.joined", _src(ev), ts,
                   {"queue": ev.get("Queue"), "position": int_or_none(ev.get("Position")),
                    "count": int_or_none(ev.get("Count"))})

    def _queue_abandon(self, ev: Event, call: CallState | None, ts: float,
                       out: list[CallEvent]) -> None:
        if call is None:
            return
        self._emit(out, call, "queue.abandoned", _src(ev), ts,
                   {"queue": ev.get("Queue"), "position": int_or_none(ev.get("Position")),
                    "original_position": int_or_none(ev.get("OriginalPosition")),
                    "hold_time_s": int_or_none(ev.get("HoldTime"))})

    def _queue_leave(self, ev: Event, call: CallState | None, ts: float,
                     out: list[CallEvent]) -> None:
        if call is None:
            return
        self._emit(out, call, "queue.left", _src(ev), ts,
                   {"queue": ev.get("Queue"), "position": int_or_none(ev.get("Position")),
                    "count": int_or_none(ev.get("Count"))})

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
            member = ev.get("MemberName")
            if member:
                call.set_routing("agent", member)
            data["hold_time_s"] = int_or_none(ev.get("HoldTime"))
            data["ring_time_s"] = int_or_none(ev.get("RingTime"))
        else:
            type_ = "agent.completed"
            data["hold_time_s"] = int_or_none(ev.get("HoldTime"))
            data["talk_time_s"] = int_or_none(ev.get("TalkTime"))
            data["reason"] = ev.get("Reason")
        self._emit(out, call, type_, _src(ev), ts, data)

    def _blind(self, ev: Event, call: CallState | None, ts: float, out: list[CallEvent]) -> None:
        call = self._calls.get(ev.get("TransfererLinkedid") or "") or self._calls.get(
            self._chan_lid.get(ev.get("TransfererUniqueid") or "", "")
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
        if ev.name == "ConfbridgeEnd":
            owner = self.model.release_conference(conf)
            if owner is not None:
                self._emit(out, owner, "threeway.ended", _src(ev), ts, {"conference": conf})
            return
        owner = self.model.conference_owner(conf)
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
        if ev.name in ("ConfbridgeMute", "ConfbridgeUnmute"):
            kind = "threeway.muted" if ev.name == "ConfbridgeMute" else "threeway.unmuted"
            self._emit(out, target, kind, _src(ev), ts, data)
            return
        if ev.name == "ConfbridgeJoin":
            if owner is None:
                self.model.own_conference(conf, target)
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
        if ev.name == "MixMonitorMute":
            data["direction"] = ev.get("Direction")
            on = (ev.get("State") or "").strip() in ("1", "true", "yes", "on")
            self._emit(out, call, "recording.muted" if on else "recording.unmuted", _src(ev),
                       ts, data)
            return
        if ev.name == "MixMonitorStart":
            call.recordings.add(uid)
            self._emit(out, call, "recording.started", _src(ev), ts, data)
        else:
            self._emit(out, call, "recording.stopped", _src(ev), ts, data)

    def _hangup(self, ev: Event, call: CallState | None, ts: float, out: list[CallEvent]) -> None:
        uid = ev.get("Uniqueid") or ""
        if call is None:
            gone = self._gone_since_mark
            if (self.calls.remove(uid) is None and gone is not None
                    and len(gone) < MAX_GONE_SINCE_MARK):
                gone.add(uid)
            return
        self.model.remove_channel(call, uid)
        self._dirty.add(call.call_id)
        if uid in call.recordings:
            call.recordings.discard(uid)
            self._emit(out, call, "recording.ready", _src(ev), ts,
                       {"file": call.recording_files.get(uid), "channel": ev.get("Channel")})
        if not call.channels:
            self._end(call, _src(ev), ts, out, cause=int_or_none(ev.get("Cause")),
                      cause_txt=ev.get("Cause-txt"), reason="hangup")

    def _end(self, call: CallState, source: Source, ts: float, out: list[CallEvent], *,
             cause: int | None, cause_txt: str | None, reason: str) -> None:
        for conf in sorted(call.conferences):
            # the call's last channel left a conference still running (its other parties,
            # e.g. a three-way call's department, are let go after): it ends with the call
            self._emit(out, call, "threeway.ended", source, ts,
                       {"conference": conf, "reason": "call-ended"})
        self._emit(out, call, "call.ended", source, ts,
                   {"cause": cause, "cause_txt": cause_txt, "reason": reason,
                    "duration_s": round(ts - call.started_at, 3)})
        self.model.end(call)  # out of memory with its channels and conferences
        self._dirty.add(call.call_id)

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
        """Call events of one IVR step, applied to its call (``step.call_id``)."""
        out: list[CallEvent] = []
        call = self._calls.get(step.call_id)
        if call is None:
            call = self._open_from_step(step)
            if call is None:
                METRICS.inc("events.builder.steps_unmatched")
                return out
        src = Source("ivr", step.kind, step.uniqueid)
        data: dict[str, DataValue] = {"step": step.step, **dict(step.data)}
        if not call.entry and step.entry:
            call.set_routing("entry", step.entry)
        kind = step.kind
        if kind == "entered":
            call.set_routing("entry", step.data.get("entry") or step.entry or call.entry)
        elif kind == "language":
            call.set_routing("language", step.data.get("language", ""))
        elif kind == "exit" and step.data.get("to") == "queue" and step.data.get("target"):
            call.set_routing("queue", step.data["target"])
        elif kind == "tag":
            name = step.data.get("name", "")
            value = step.data.get("value", "")
            if name in SURVEY_TAG_NAMES:
                score = int_or_none(value)
                self._emit(out, call, "survey.scored", src, step.ts,
                           {"score": score if score is not None else value, "step": step.step})
                return out
            key = V.TAG_ROUTING.get(name)
            if key is not None:
                call.set_routing(key, value)
        elif kind == "callback":
            self._emit(out, call, "callback.requested", src, step.ts, data)
            return out
        self._emit(out, call, "ivr." + kind, src, step.ts, data)
        return out

    # -- service steps ---------------------------------------------------------------

    def feed_service(self, step: ServiceStep) -> list[CallEvent]:
        """The call event of a slice's service step (a transfer requested, its outcome …),
        after the step's routing facts are set on the call.  A step of a call that is not
        in progress is dropped and counted (``events.builder.service_unmatched``)."""
        out: list[CallEvent] = []
        call = self._calls.get(step.call_id)
        if call is None:
            METRICS.inc("events.builder.service_unmatched")
            return out
        for key, value in step.routing.items():
            call.set_routing(key, value)
        self._emit(out, call, step.type, Source("service", step.service, step.uniqueid),
                   step.ts, dict(step.data))
        return out

    def _open_from_step(self, step: IvrStep) -> CallState | None:
        """The call a step names when no AMI event opened it yet (the FastAGI session
        can be faster than the AMI stream): opened from the step, its first channel's
        ``Newchannel`` joins it when read.  None for a call that ended, or a step on an
        internal leg, which have no call."""
        cid = step.call_id
        if (not cid or self.model.has_ended(cid) or cid in self.calls
                or self.model.untracked_leg(step.uniqueid)):
            return None
        call = CallState(call_id=cid, started_at=step.ts, dialled=step.entry,
                         first_uniqueid=cid)
        self.model.open(call)
        self._dirty.add(cid)
        METRICS.inc("events.builder.calls_opened_by_step")
        return call


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
    "ConfbridgeMute": CallEventBuilder._conf,
    "ConfbridgeUnmute": CallEventBuilder._conf,
    "MixMonitorStart": CallEventBuilder._mixmonitor,
    "MixMonitorMute": CallEventBuilder._mixmonitor,
    "MixMonitorStop": CallEventBuilder._mixmonitor,
    "Hangup": CallEventBuilder._hangup,
}

# AMI events the call events are built from
_CALL_EVENT_SOURCES = frozenset(_AMI_HANDLERS) | {"Newchannel", "NewCallerid"}
# the ones only the live channels read (the call events never look at them)
_CHANNEL_ONLY = CHANNEL_EVENTS - _CALL_EVENT_SOURCES
# AMI events the builder consumes (an AMI eventfilter may pass only these).
CONSUMED_AMI_EVENTS = _CALL_EVENT_SOURCES | CHANNEL_EVENTS
# the VarSet variables :meth:`CallEventBuilder._varset` reads (``_``/``__`` prefixes too)
CONSUMED_VARIABLES = frozenset(ROUTING_VARS) | {V.MIXMONITOR_FILENAME}
