"""The live index of calls: which channels (``Uniqueid``) are up and the call
(``Linkedid``) each belongs to.

One instance is shared by whoever needs to know it, so the bridge keeps one Linkedid
tracker, not one per feature: the call-event builder keeps it up to date (a channel from
its ``Newchannel``, an adopted or resumed call's channels, gone at its ``Hangup``, when a
resync finds it no longer listed, or when its call is swept) and the service-level
figures (:mod:`ivr.callstats`) read it and hear when a call ends.  A reader with no
builder feeds its own instance with :meth:`CallTracker.feed`.

Bounded: a call leaves when its last channel does (listeners registered with
:meth:`CallTracker.on_call_ended` hear it, in wire order); :meth:`CallTracker.prune`
drops channels whose ``Hangup`` was missed while nobody was listening.  Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, KeysView

from ivr.ami.messages import Event

CallEndedListener = Callable[[str], None]
"""Called with the Linkedid of a call whose last known channel went away."""


class CallTracker:
    __slots__ = ("channel_call", "call_channels", "_listeners")

    def __init__(self) -> None:
        self.channel_call: dict[str, str] = {}
        """Uniqueid → Linkedid of every live channel (read it; change it through the
        methods)."""
        self.call_channels: dict[str, set[str]] = {}
        """Linkedid → the Uniqueids of its live channels (read it, do not change it)."""
        self._listeners: list[CallEndedListener] = []

    # -- reading ---------------------------------------------------------------------

    def __len__(self) -> int:
        """Calls with at least one live channel."""
        return len(self.call_channels)

    def __contains__(self, linkedid: object) -> bool:
        return linkedid in self.call_channels

    @property
    def channel_count(self) -> int:
        return len(self.channel_call)

    def call_of(self, uniqueid: str) -> str | None:
        return self.channel_call.get(uniqueid)

    def channels(self, linkedid: str) -> frozenset[str]:
        return frozenset(self.call_channels.get(linkedid, ()))

    def calls(self) -> KeysView[str]:
        """The Linkedids of the live calls."""
        return self.call_channels.keys()

    def on_call_ended(self, listener: CallEndedListener) -> None:
        self._listeners.append(listener)

    # -- changing --------------------------------------------------------------------

    def add(self, uniqueid: str, linkedid: str) -> None:
        """Channel ``uniqueid`` is up in call ``linkedid``."""
        old = self.channel_call.get(uniqueid)
        if old == linkedid:
            return
        if old is not None:
            self.remove(uniqueid)
        self.channel_call[uniqueid] = linkedid
        chans = self.call_channels.get(linkedid)
        if chans is None:
            self.call_channels[linkedid] = {uniqueid}
        else:
            chans.add(uniqueid)

    def remove(self, uniqueid: str) -> str | None:
        """Channel ``uniqueid`` is gone; its call's Linkedid (None if unknown).  The call
        ends when it was its last channel."""
        linkedid = self.channel_call.pop(uniqueid, None)
        if linkedid is None:
            return None
        chans = self.call_channels[linkedid]
        chans.discard(uniqueid)
        if not chans:
            del self.call_channels[linkedid]
            self._ended(linkedid)
        return linkedid

    def drop_call(self, linkedid: str) -> None:
        """Forget call ``linkedid`` and its channels (a call ended without their
        ``Hangup``: swept, or lost while nobody listened)."""
        chans = self.call_channels.pop(linkedid, None)
        if chans is None:
            return
        for uid in chans:
            self.channel_call.pop(uid, None)
        self._ended(linkedid)

    def prune(self, mark: Iterable[str], live: Collection[str]) -> int:
        """After a (re)connect: channels of ``mark`` (:meth:`snapshot` taken before asking
        Asterisk) that ``live`` (what it lists) lacks hung up unheard: removed.  Returns
        how many."""
        gone = [uid for uid in mark if uid not in live and uid in self.channel_call]
        for uid in gone:
            self.remove(uid)
        return len(gone)

    def snapshot(self) -> frozenset[str]:
        """The live channels now (the mark for :meth:`prune`)."""
        return frozenset(self.channel_call)

    def feed(self, event: Event) -> None:
        """For a reader that keeps its own tracker: ``Newchannel`` adds a channel,
        ``Hangup`` removes it; other events change nothing."""
        name = event.name
        if name == "Newchannel":
            uid = event.get("Uniqueid") or ""
            if uid:
                self.add(uid, event.get("Linkedid") or uid)
        elif name == "Hangup":
            self.remove(event.get("Uniqueid") or "")

    def _ended(self, linkedid: str) -> None:
        for listener in self._listeners:
            listener(linkedid)
