"""The live channels, bridges and conferences, and where each channel waits or talks:
built from AMI events in wire order, rebuilt from ``CoreShowChannels`` after every
(re)connect.

* a :class:`Channel` per live channel (``Uniqueid``): its call (``Linkedid``), name,
  state (``ChannelStateDesc``), caller and connected line, the bridge and the ConfBridge
  conference it is in, the queue it waits in and the agent (queue member) it is with;
* a :class:`Bridge` per live bridge (``BridgeCreate``/``BridgeEnter``/``BridgeLeave``/
  ``BridgeDestroy``) with its channels;
* the ConfBridge conferences (``ConfbridgeJoin``/``Leave``/``End``) with their channels.

:meth:`LiveChannels.rebuild` takes the ``CoreShowChannel`` rows Asterisk lists after a
(re)connect: a row says the channel's state, caller, connected line, ``BridgeId`` and the
application it runs (``Queue(<name>,…)`` and not bridged: waiting in that queue;
``ConfBridge(<name>,…)``: in that conference), so bridges and conferences are rebuilt from
the channels in them.  The agent a call is with is not listed: known again from the next
``AgentConnect``.

Bounded: a channel leaves at its ``Hangup`` (or when a resync does not list it, or its
call is swept), a bridge at its ``BridgeDestroy`` or when it has no channel left after a
resync, a conference with its last channel.  Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from ivr.ami.messages import Event

UNKNOWN_NUMBERS = frozenset({"", "<unknown>", "unknown"})


@dataclass(slots=True)
class Channel:
    uniqueid: str
    linkedid: str
    name: str = ""
    state: str = ""  # ChannelStateDesc: Down, Ring, Ringing, Up, Busy …
    caller: str | None = None  # CallerIDNum
    caller_name: str | None = None
    connected: str | None = None  # ConnectedLineNum: who the channel talks to
    connected_name: str | None = None
    bridge: str | None = None  # BridgeUniqueid of the bridge it is in
    conference: str | None = None  # the ConfBridge conference it is in
    queue: str | None = None  # the queue it waits in (QueueCallerJoin … Leave/Abandon)
    agent: str | None = None  # the queue member it is with (AgentConnect … AgentComplete)
    agent_interface: str | None = None  # that member's interface (e.g. SIP/1001)


@dataclass(slots=True)
class Bridge:
    id: str
    type: str = ""  # BridgeType: basic, …
    technology: str = ""  # BridgeTechnology: simple_bridge, softmix …
    channels: set[str] = field(default_factory=set)


def _num(value: str | None) -> str | None:
    return None if value is None or value.strip().lower() in UNKNOWN_NUMBERS else value


def _first_arg(data: str | None) -> str | None:
    """``Queue(q-complaints,t,,,300)``'s ``ApplicationData`` → ``q-complaints``."""
    return (data or "").split(",")[0].strip() or None


class LiveChannels:
    __slots__ = ("channels", "bridges", "conferences")

    def __init__(self) -> None:
        self.channels: dict[str, Channel] = {}
        """Uniqueid → the live channel (read it; change it through the methods)."""
        self.bridges: dict[str, Bridge] = {}
        self.conferences: dict[str, set[str]] = {}
        """ConfBridge conference name → the Uniqueids of the channels in it."""

    # -- reading ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.channels)

    def get(self, uniqueid: str) -> Channel | None:
        return self.channels.get(uniqueid)

    # -- AMI events, in wire order -------------------------------------------------------

    def feed(self, event: Event) -> None:
        """Apply one AMI event (those of :data:`CONSUMED_AMI_EVENTS`; others change
        nothing)."""
        handler = HANDLERS.get(event.name)
        if handler is not None:
            handler(self, event)

    def _channel(self, ev: Event) -> Channel | None:
        return self.channels.get(ev.get("Uniqueid") or "")

    def _newchannel(self, ev: Event) -> None:
        uid = ev.get("Uniqueid") or ""
        if not uid:
            return
        self.channels[uid] = Channel(
            uniqueid=uid, linkedid=ev.get("Linkedid") or uid, name=ev.get("Channel") or "",
            state=ev.get("ChannelStateDesc") or "", caller=_num(ev.get("CallerIDNum")),
            caller_name=_num(ev.get("CallerIDName")),
            connected=_num(ev.get("ConnectedLineNum")),
            connected_name=_num(ev.get("ConnectedLineName")))

    def _newstate(self, ev: Event) -> None:
        chan = self._channel(ev)
        if chan is not None:
            chan.state = ev.get("ChannelStateDesc") or chan.state
            self._lines(chan, ev)

    def _lines(self, chan: Channel, ev: Event) -> None:
        """Caller and connected line as the event says them (every channel event has
        them)."""
        chan.caller = _num(ev.get("CallerIDNum"))
        chan.caller_name = _num(ev.get("CallerIDName"))
        chan.connected = _num(ev.get("ConnectedLineNum"))
        chan.connected_name = _num(ev.get("ConnectedLineName"))

    def _newlines(self, ev: Event) -> None:  # NewCallerid, NewConnectedLine
        chan = self._channel(ev)
        if chan is not None:
            self._lines(chan, ev)

    def _rename(self, ev: Event) -> None:
        chan = self._channel(ev)
        if chan is not None:
            chan.name = ev.get("Newname") or chan.name

    def _hangup(self, ev: Event) -> None:
        self.remove(ev.get("Uniqueid") or "")

    def _bridge_create(self, ev: Event) -> None:
        bid = ev.get("BridgeUniqueid") or ""
        if bid and bid not in self.bridges:
            self.bridges[bid] = Bridge(bid, ev.get("BridgeType") or "",
                                       ev.get("BridgeTechnology") or "")

    def _bridge_enter(self, ev: Event) -> None:
        bid = ev.get("BridgeUniqueid") or ""
        chan = self._channel(ev)
        if not bid or chan is None:
            return
        self._bridge_create(ev)
        if chan.bridge is not None and chan.bridge != bid:
            self._leave_bridge(chan)
        self.bridges[bid].channels.add(chan.uniqueid)
        chan.bridge = bid

    def _bridge_leave(self, ev: Event) -> None:
        chan = self._channel(ev)
        if chan is not None and chan.bridge == (ev.get("BridgeUniqueid") or ""):
            self._leave_bridge(chan)

    def _leave_bridge(self, chan: Channel) -> None:
        bridge = self.bridges.get(chan.bridge or "")
        if bridge is not None:
            bridge.channels.discard(chan.uniqueid)
        chan.bridge = None

    def _bridge_destroy(self, ev: Event) -> None:
        bridge = self.bridges.pop(ev.get("BridgeUniqueid") or "", None)
        if bridge is None:
            return
        for uid in bridge.channels:
            chan = self.channels.get(uid)
            if chan is not None and chan.bridge == bridge.id:
                chan.bridge = None

    def _conf_join(self, ev: Event) -> None:
        conf = ev.get("Conference") or ""
        chan = self._channel(ev)
        if not conf or chan is None:
            return
        if chan.conference is not None and chan.conference != conf:
            self._leave_conference(chan)
        self.conferences.setdefault(conf, set()).add(chan.uniqueid)
        chan.conference = conf

    def _conf_leave(self, ev: Event) -> None:
        chan = self._channel(ev)
        if chan is not None and chan.conference == (ev.get("Conference") or ""):
            self._leave_conference(chan)

    def _leave_conference(self, chan: Channel) -> None:
        members = self.conferences.get(chan.conference or "")
        if members is not None:
            members.discard(chan.uniqueid)
            if not members:
                del self.conferences[chan.conference or ""]
        chan.conference = None

    def _conf_end(self, ev: Event) -> None:
        for uid in self.conferences.pop(ev.get("Conference") or "", set()):
            chan = self.channels.get(uid)
            if chan is not None:
                chan.conference = None

    def _queue_join(self, ev: Event) -> None:
        chan = self._channel(ev)
        if chan is not None:
            chan.queue = ev.get("Queue") or None

    def _queue_leave(self, ev: Event) -> None:  # QueueCallerLeave, QueueCallerAbandon
        chan = self._channel(ev)
        if chan is not None:
            chan.queue = None

    def _agent_connect(self, ev: Event) -> None:
        chan = self._channel(ev)  # the caller's channel (Uniqueid); the agent's: Dest…
        if chan is not None:
            chan.agent = ev.get("MemberName") or ev.get("Interface") or None
            chan.agent_interface = ev.get("Interface") or None

    def _agent_complete(self, ev: Event) -> None:
        chan = self._channel(ev)
        if chan is not None:
            chan.agent = chan.agent_interface = None

    # -- removing and rebuilding -----------------------------------------------------------

    def remove(self, uniqueid: str) -> Channel | None:
        """The channel is gone: out of its bridge and conference too."""
        chan = self.channels.pop(uniqueid, None)
        if chan is not None:
            if chan.bridge is not None:
                self._leave_bridge(chan)
            if chan.conference is not None:
                self._leave_conference(chan)
        return chan

    def rebuild(self, mark: Collection[str] | None, listed: Iterable[Event],
                live: Collection[str] = ()) -> None:
        """After a (re)connect: ``listed`` = the ``CoreShowChannel`` rows, ``live`` = every
        listed Uniqueid (rows without one included), ``mark`` = the live channels before
        asking (None: none judged).  Channels of ``mark`` not listed hung up unheard:
        removed; listed channels are taken as listed (new ones added); bridges and
        conferences are rebuilt from the channels in them (a bridge keeps its type)."""
        rows = [r for r in listed if r.get("Uniqueid")]
        listed_ids = {r.get("Uniqueid") or "" for r in rows} | set(live)
        if mark is not None:
            for uid in [u for u in mark if u not in listed_ids and u in self.channels]:
                self.remove(uid)
        for row in rows:
            uid = row.get("Uniqueid") or ""
            chan = self.channels.get(uid)
            if chan is None:
                chan = self.channels[uid] = Channel(uniqueid=uid,
                                                    linkedid=row.get("Linkedid") or uid)
            chan.linkedid = row.get("Linkedid") or chan.linkedid
            chan.name = row.get("Channel") or chan.name
            chan.state = row.get("ChannelStateDesc") or chan.state
            self._lines(chan, row)
            app = row.get("Application") or ""
            bridged = bool(row.get("BridgeId"))
            # in Queue() and not bridged: waiting (bridged: answered, QueueCallerLeave sent)
            in_queue = (_first_arg(row.get("ApplicationData"))
                        if app == "Queue" and not bridged else None)
            if in_queue != chan.queue:  # an agent known from AgentConnect is kept
                chan.agent = chan.agent_interface = None
            chan.queue = in_queue
            chan.conference = (_first_arg(row.get("ApplicationData"))
                               if app == "ConfBridge" else None)
            chan.bridge = row.get("BridgeId") or None
        old = self.bridges
        self.bridges = {}
        self.conferences = {}
        for chan in self.channels.values():
            if chan.bridge is not None:
                bridge = self.bridges.get(chan.bridge)
                if bridge is None:
                    was = old.get(chan.bridge)
                    bridge = self.bridges[chan.bridge] = Bridge(
                        chan.bridge, was.type if was else "", was.technology if was else "")
                bridge.channels.add(chan.uniqueid)
            if chan.conference is not None:
                self.conferences.setdefault(chan.conference, set()).add(chan.uniqueid)


_Handler = Callable[[LiveChannels, Event], None]

HANDLERS: dict[str, _Handler] = {
    "Newchannel": LiveChannels._newchannel,
    "Newstate": LiveChannels._newstate,
    "NewCallerid": LiveChannels._newlines,
    "NewConnectedLine": LiveChannels._newlines,
    "Rename": LiveChannels._rename,
    "Hangup": LiveChannels._hangup,
    "BridgeCreate": LiveChannels._bridge_create,
    "BridgeEnter": LiveChannels._bridge_enter,
    "BridgeLeave": LiveChannels._bridge_leave,
    "BridgeDestroy": LiveChannels._bridge_destroy,
    "ConfbridgeJoin": LiveChannels._conf_join,
    "ConfbridgeLeave": LiveChannels._conf_leave,
    "ConfbridgeEnd": LiveChannels._conf_end,
    "QueueCallerJoin": LiveChannels._queue_join,
    "QueueCallerLeave": LiveChannels._queue_leave,
    "QueueCallerAbandon": LiveChannels._queue_leave,
    "AgentConnect": LiveChannels._agent_connect,
    "AgentComplete": LiveChannels._agent_complete,
}

CONSUMED_AMI_EVENTS = frozenset(HANDLERS)
"""The AMI events :meth:`LiveChannels.feed` reads."""
