"""The live calls: every call in progress (:class:`~ivr.calls.state.CallState`, by
Linkedid), the Linkedid tracker of their channels, the conferences each call owns, the
ids of the calls that ended lately, and the live channels, bridges and conferences with
where each channel waits or talks (:class:`~ivr.calls.channels.LiveChannels`).

The call-event builder (:mod:`ivr.events.builder`) changes it, in wire order, from AMI
events and IVR steps, and reads it to decide what call events to emit; other readers
(the service-level figures, an HTTP API) read the same instance.  A call is opened
(:meth:`CallModel.open`) when its first channel or an IVR step shows it, or resumed from
its checkpoint (:meth:`CallModel.restore`); its channels join and leave with
:meth:`add_channel` / :meth:`remove_channel`; :meth:`end` takes it out with every
channel and conference it held.

Bounded: an ended call leaves memory at once (only its id is remembered, at most
:data:`MAX_ENDED_REMEMBERED`, so late events or steps of it do not open it again).
Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import OrderedDict

from ivr.calls.channels import Channel, LiveChannels
from ivr.calls.state import CallState
from ivr.calls.tracker import CallTracker

# ids of calls that ended in this process (never opened or adopted again)
MAX_ENDED_REMEMBERED = 10_000


class CallModel:
    __slots__ = ("tracker", "calls", "conferences", "ended", "channels")

    def __init__(self, tracker: CallTracker | None = None) -> None:
        self.tracker = CallTracker() if tracker is None else tracker
        """Every live channel (``Uniqueid``) and its call, tracked calls and untracked
        legs (internal agent/department legs) alike."""
        self.calls: dict[str, CallState] = {}
        """The calls in progress by call id (= Linkedid); read it, change it through the
        methods."""
        self.conferences: dict[str, str] = {}
        """ConfBridge conference name → the call that owns it (its first joiner's)."""
        self.ended: OrderedDict[str, None] = OrderedDict()
        """Ids of the calls that ended lately, oldest first (bounded)."""
        self.channels = LiveChannels()
        """Every live channel (state, caller, connected line, bridge, conference, the
        queue it waits in, the agent it is with), bridges and conferences."""

    # -- reading ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.calls)

    def call(self, call_id: str) -> CallState | None:
        return self.calls.get(call_id)

    def call_of(self, uniqueid: str) -> CallState | None:
        """The call in progress channel ``uniqueid`` belongs to (None for an untracked
        leg or an unknown channel)."""
        lid = self.tracker.channel_call.get(uniqueid)
        return None if lid is None else self.calls.get(lid)

    def untracked_leg(self, uniqueid: str) -> bool:
        """A live channel whose call is not tracked (an internal leg)."""
        lid = self.tracker.channel_call.get(uniqueid)
        return lid is not None and lid not in self.calls

    def has_ended(self, call_id: str) -> bool:
        return call_id in self.ended

    def channels_of(self, call_id: str) -> list[Channel]:
        """The live channels of call ``call_id`` that the channel table knows."""
        table = self.channels.channels
        return [c for uid in self.tracker.call_channels.get(call_id, ())
                if (c := table.get(uid)) is not None]

    def waiting_in(self, call_id: str) -> str | None:
        """The queue a channel of the call waits in now (None: none)."""
        return next((c.queue for c in self.channels_of(call_id) if c.queue), None)

    def agent_of(self, call_id: str) -> str | None:
        """The queue member (agent) the call is with now (None: none)."""
        return next((c.agent for c in self.channels_of(call_id) if c.agent), None)

    def agent_interface_of(self, call_id: str) -> str | None:
        """The interface of the queue member the call is with now (what an agent's API
        token names; :meth:`agent_of` is its member name)."""
        return next((c.agent_interface for c in self.channels_of(call_id)
                     if c.agent_interface), None)

    def conference_owner(self, conference: str) -> CallState | None:
        cid = self.conferences.get(conference)
        return None if cid is None else self.calls.get(cid)

    # -- changing --------------------------------------------------------------------

    def open(self, call: CallState) -> None:
        """A call in progress: its channels join the tracker, it owns its conferences."""
        self.calls[call.call_id] = call
        for uid in call.channels:
            self.tracker.add(uid, call.call_id)
        for conf in call.conferences:
            self.conferences[conf] = call.call_id

    def restore(self, call: CallState) -> None:
        """Resume a call from its checkpoint (replacing a call of the same id)."""
        old = self.calls.get(call.call_id)
        if old is not None:
            for uid in old.channels:
                self.tracker.remove(uid)
        self.open(call)

    def reset(self) -> None:
        """No call, channel, bridge or conference any more (the ids of the calls that
        ended are kept: they do not open again); the tracker's listeners hear nothing."""
        self.calls.clear()
        self.conferences.clear()
        self.tracker.channel_call.clear()
        self.tracker.call_channels.clear()
        self.channels.channels.clear()
        self.channels.bridges.clear()
        self.channels.conferences.clear()

    def add_channel(self, call: CallState, uniqueid: str) -> None:
        call.channels.add(uniqueid)
        self.tracker.add(uniqueid, call.call_id)

    def remove_channel(self, call: CallState, uniqueid: str) -> None:
        """The channel is gone (the call stays, even without channels, until :meth:`end`)."""
        call.channels.discard(uniqueid)
        self.tracker.remove(uniqueid)

    def own_conference(self, conference: str, call: CallState) -> None:
        self.conferences[conference] = call.call_id
        call.conferences.add(conference)

    def release_conference(self, conference: str) -> CallState | None:
        """The conference ended: the call that owned it (None if none in progress)."""
        owner = self.conference_owner(conference)
        if owner is not None:
            del self.conferences[conference]
            owner.conferences.discard(conference)
        return owner

    def end(self, call: CallState) -> None:
        """The call ended: out of memory with its channels (listeners of the tracker
        hear it) and conferences; its id is remembered (bounded)."""
        cid = call.call_id
        del self.calls[cid]
        self.ended[cid] = None
        if len(self.ended) > MAX_ENDED_REMEMBERED:
            self.ended.popitem(last=False)
        for uid in self.tracker.call_channels.get(cid, ()):  # left when swept or lost
            self.channels.remove(uid)
        self.tracker.drop_call(cid)
        for conf in call.conferences:
            if self.conferences.get(conf) == cid:
                del self.conferences[conf]
