"""Channels, bridges and the ids Asterisk gives them.

A :class:`Channel` carries what an AMI channel snapshot shows (state, caller id,
connected line, dialplan location, uniqueid/linkedid) plus the emulator's own
run-time state: variables, a DTMF queue, a hang-up event and its bridge.  Its
snapshot header block is built once per change and cached (event encoding is the
emulator's hot path).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol, TypeVar, overload

from ivr.errors import IvrError
from ivr.sim.clock import Clock

REAL_TIME = Clock(1.0)  # a channel made without a clock (unit tests): seconds are real


class SimError(IvrError):
    """Base of the emulator's errors."""


class ChannelHungUp(SimError):
    """The channel was hung up while an application ran on it."""


class Redirected(SimError):
    """The channel was sent elsewhere (AMI Redirect/BlindTransfer) while an app ran."""


class State(IntEnum):
    DOWN = 0
    RSRVD = 1
    OFFHOOK = 2
    DIALING = 3
    RING = 4
    RINGING = 5
    UP = 6
    BUSY = 7


STATE_DESC = {
    State.DOWN: "Down",
    State.RSRVD: "Rsrvd",
    State.OFFHOOK: "OffHook",
    State.DIALING: "Dialing",
    State.RING: "Ring",
    State.RINGING: "Ringing",
    State.UP: "Up",
    State.BUSY: "Busy",
}

_BAD = re.compile(r"[\r\n]")


def clean(value: object) -> str:
    """A header value that cannot end its header (CR/LF become spaces)."""
    s = value if isinstance(value, str) else str(value)
    if "\r" in s or "\n" in s:
        return _BAD.sub(" ", s)
    return s


SNAPSHOT_KEYS = (
    "Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName",
    "ConnectedLineNum", "ConnectedLineName", "Language", "AccountCode", "Context",
    "Exten", "Priority", "Uniqueid", "Linkedid",
)


_T = TypeVar("_T")


class Variables(dict[str, str]):
    """A channel's variables, each stored under the name it was set with (``__LANG``);
    looked up as Asterisk does (``ast_var_name()`` strips up to two leading ``_``), so
    ``variables["LANG"]`` / ``.get("LANG")`` / ``"LANG" in variables`` find ``__LANG``."""

    def _key(self, name: str) -> str:
        if dict.__contains__(self, name):
            return name
        for k in ("_" + name, "__" + name):
            if dict.__contains__(self, k):
                return k
        return name

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(self._key(name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(self._key(name))

    @overload
    def get(self, name: str, default: None = None, /) -> str | None: ...

    @overload
    def get(self, name: str, default: str, /) -> str: ...

    @overload
    def get(self, name: str, default: _T, /) -> str | _T: ...

    def get(self, name: str, default: object = None, /) -> object:
        return super().get(self._key(name), default)


class Ids:
    """Uniqueids (``<start epoch>.<n>``) and the 8-hex-digit channel sequence."""

    def __init__(self) -> None:
        self.epoch = int(time.time())
        self._uid = itertools.count(1)
        self._seq = itertools.count(0)

    def uniqueid(self) -> str:
        return f"{self.epoch}.{next(self._uid)}"

    def sequence(self) -> str:
        return f"{next(self._seq):08x}"


_ORDER = itertools.count()
_CDR_SEQ = itertools.count()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Signal(asyncio.Event):
    """An :class:`asyncio.Event` that also resolves futures registered with
    :meth:`watch` when it is set, so a coroutine can wait for the first of several
    signals (or a DTMF digit, or a timeout) on one future, with no task per wait
    (:func:`wait_any`); waiting this way takes one loop iteration from ``set()``."""

    def __init__(self) -> None:
        super().__init__()
        self._watchers: list[asyncio.Future[None]] = []

    def set(self) -> None:
        if self.is_set():
            return
        super().set()
        watchers, self._watchers = self._watchers, []
        for fut in watchers:
            if not fut.done():
                fut.set_result(None)

    def watch(self, fut: asyncio.Future[None]) -> None:
        """Resolve ``fut`` when the signal is set (at once if it is set)."""
        if self.is_set():
            _resolve(fut)
        else:
            self._watchers.append(fut)

    def unwatch(self, fut: asyncio.Future[None]) -> None:
        try:
            self._watchers.remove(fut)
        except ValueError:
            pass

    def then(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (in a later loop iteration, as a waiting task would) once the
        signal is set."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda _f: callback())
        self.watch(fut)


class Watchable(Protocol):
    """What :func:`wait_any` waits on: a :class:`Signal`, a :class:`DigitQueue`."""

    def is_set(self) -> bool: ...

    def watch(self, fut: asyncio.Future[None]) -> None: ...

    def unwatch(self, fut: asyncio.Future[None]) -> None: ...


async def wait_any(signals: Iterable[Watchable], seconds: float | None = None,
                   clock: Clock = REAL_TIME) -> None:
    """Return when one of ``signals`` is set (at once if one is) or after ``seconds``
    of ``clock``'s time (``None``: no limit)."""
    sigs = tuple(signals)
    if any(s.is_set() for s in sigs):
        return
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    for s in sigs:
        s.watch(fut)
    timer = clock.call_later(seconds, _resolve, fut) if seconds is not None else None
    try:
        await fut
    finally:
        if timer is not None:
            timer.cancel()
        for s in sigs:
            s.unwatch(fut)


class DigitQueue:
    """A channel's received DTMF digits (the part of :class:`asyncio.Queue` the emulator
    uses): ``put_nowait`` also resolves the future of a :meth:`Channel.next_dtmf` that
    waits for one."""

    __slots__ = ("_items", "waiter")

    def __init__(self) -> None:
        self._items: deque[str] = deque()
        self.waiter: asyncio.Future[None] | None = None

    def put_nowait(self, digit: str) -> None:
        self._items.append(digit)
        if self.waiter is not None:
            _resolve(self.waiter)

    # Watchable: "set" while a digit is waiting to be read
    def is_set(self) -> bool:
        return bool(self._items)

    def watch(self, fut: asyncio.Future[None]) -> None:
        if self._items:
            _resolve(fut)
        else:
            self.waiter = fut

    def unwatch(self, fut: asyncio.Future[None]) -> None:
        if self.waiter is fut:
            self.waiter = None

    def get_nowait(self) -> str:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


@dataclass
class CdrRecord:
    """One CDR of a channel (party A): its party B (``dest``, "" while alone), start, and
    the disposition a dial gave it (None: from the channel, ANSWERED once answered)."""

    dest: str
    start: float
    disposition: str | None = None
    # the record a dialed channel (AST_FLAG_OUTGOING, not originated: a queue's member
    # leg) starts with; without a party B it is discarded (cdr.c
    # cdr_object_create_public_records: trace 13, a member leg bridged until the end)
    dialed: bool = False
    seq: int = field(default_factory=lambda: next(_CDR_SEQ))  # the chain's order


class Channel:
    """One Asterisk channel."""

    def __init__(
        self,
        name: str,
        uniqueid: str,
        *,
        context: str,
        exten: str,
        priority: int = 1,
        state: State = State.DOWN,
        linkedid: str | None = None,
        language: str = "en",
        created: float = 0.0,
        clock: Clock = REAL_TIME,
    ) -> None:
        self.name = name
        self.clock = clock  # the emulator's: the timeouts below are in its seconds
        self.uniqueid = uniqueid
        self.linkedid = linkedid or uniqueid
        self.state = state
        self.cid_num = "<unknown>"
        self.cid_name = "<unknown>"
        self.conn_num = "<unknown>"
        self.conn_name = "<unknown>"
        self.language = language
        self.accountcode = ""
        self.context = context
        self.exten = exten
        self.priority = priority
        self.app = ""
        self.appdata = ""
        self.variables = Variables()
        self.created = created
        self.answered_at: float | None = None
        self.hungup = False
        self.hangup_cause = 16
        self.wake = Signal()  # set on hang-up or redirect
        self.marks: dict[str, Signal] = {}
        self.dtmf = DigitQueue()
        self.bridge: Bridge | None = None
        self.peer: Channel | None = None  # the other half of a Local pair
        self.jumped = False  # set by Goto-like apps: the executor must not advance
        self.redirect: tuple[str, str, int] | None = None
        self.task: asyncio.Task[None] | None = None
        self.menu_digits: list[str] = []  # scripted caller input, one entry per menu
        self.mixmonitor: object | None = None
        self.on_answer: Callable[[], None] | None = None  # e.g. Originate's success path
        self.on_ringing: Callable[[], None] | None = None  # e.g. the queue's DialState
        # (context, exten, priority) of the last Newexten: manager_channels.c publishes
        # Newexten only when a snapshot's location differs from the previous one
        self.cep_published: tuple[str, str, int] | None = None
        self.before_destroy: list[Callable[[], None]] = []  # after its last dialplan step
        # main/cdr.c, as far as the traces show it: the older channel of a bridged pair is
        # party A and holds the CDR; a channel that leaves a bridge alive finalizes its
        # paired CDR and opens a new one at its next dialplan application
        self.order = next(_ORDER)
        self.cdr_done: list[CdrRecord] = []
        self.cdr_open: CdrRecord | None = CdrRecord("", created)
        self.dtmf_info = False  # a scripted caller's digits come as SIP INFO (end only)
        self._snap: dict[str, str] = {}

    # -- CDR -----------------------------------------------------------------------

    def cdr_pair(self, peer: str, now: float) -> None:
        """This channel (the older one) is party A of a CDR with ``peer`` (the CDR of its
        dial to ``peer`` goes on into the bridge)."""
        if self.cdr_open is not None and self.cdr_open.dest == peer:
            return
        if self.cdr_open is not None and not self.cdr_open.dest:
            self.cdr_open.dest = peer
            return
        if self.cdr_open is not None:
            self.cdr_done.append(self.cdr_open)
        self.cdr_open = CdrRecord(peer, now)

    def cdr_dial(self, peer: str, now: float) -> None:
        """cdr.c handle_dial_message, a DialBegin from this channel to ``peer``: a CDR
        without a party B takes the dial (Single -> Dial); otherwise no CDR of the chain
        accepts it and a new one is appended (a retry, each leg of a ringall)."""
        self.cdr_pair(peer, now)

    def cdr_dial_end(self, peer: str, status: str) -> None:
        """A DialEnd for the CDR whose party B is ``peer`` (dial_state_process_dial_end):
        ANSWER keeps it (dialed-pending, then the bridge); any other status sets NO ANSWER
        (CANCEL and NOANSWER alike, without ``congestion``/cancel options) and finalizes
        it: later DialEnds for it are ignored and the next dial opens a new CDR."""
        r = self.cdr_open
        if r is None or r.dest != peer:
            r = next((d for d in self.cdr_done if d.dest == peer and d.disposition is None),
                     None)
            if r is None:
                return
            if status != "ANSWER":
                r.disposition = "NO ANSWER"
                return
            # ringall: an earlier leg answered; its CDR goes on, the current one ends
            self.cdr_done.remove(r)
            if self.cdr_open is not None:
                self.cdr_done.append(self.cdr_open)
            self.cdr_open = r
            return
        if r.disposition is not None or status == "ANSWER":
            return
        r.disposition = "NO ANSWER"
        self.cdr_done.append(r)
        self.cdr_open = None

    def cdr_bridge_left(self) -> None:
        if self.cdr_open is not None and self.cdr_open.dest:
            self.cdr_done.append(self.cdr_open)
            self.cdr_open = None

    def cdr_dialplan(self, now: float) -> None:
        if self.cdr_open is None:
            self.cdr_open = CdrRecord("", now)

    # -- snapshot ------------------------------------------------------------------

    def changed(self) -> None:
        self._snap.clear()

    def block(self, prefix: str = "") -> str:
        """``Channel: …`` … ``Linkedid: …`` lines, each key prefixed (``Dest``…)."""
        cached = self._snap.get(prefix)
        if cached is not None:
            return cached
        p = prefix  # the SNAPSHOT_KEYS lines in one f-string (built on every change)
        text = (
            f"{p}Channel: {self.name}\r\n{p}ChannelState: {int(self.state)}\r\n"
            f"{p}ChannelStateDesc: {STATE_DESC[self.state]}\r\n"
            f"{p}CallerIDNum: {self.cid_num}\r\n{p}CallerIDName: {self.cid_name}\r\n"
            f"{p}ConnectedLineNum: {self.conn_num}\r\n"
            f"{p}ConnectedLineName: {self.conn_name}\r\n{p}Language: {self.language}\r\n"
            f"{p}AccountCode: {self.accountcode}\r\n{p}Context: {self.context}\r\n"
            f"{p}Exten: {self.exten}\r\n{p}Priority: {self.priority}\r\n"
            f"{p}Uniqueid: {self.uniqueid}\r\n{p}Linkedid: {self.linkedid}\r\n"
        )
        self._snap[prefix] = text
        return text

    # -- mutation ------------------------------------------------------------------

    @property
    def tech(self) -> str:
        return self.name.partition("/")[0]

    @property
    def is_up(self) -> bool:
        return self.state == State.UP

    def set_callerid(self, num: str, name: str) -> None:
        self.cid_num = clean(num) or "<unknown>"
        self.cid_name = clean(name) or "<unknown>"
        self.changed()

    def set_connected(self, num: str, name: str) -> None:
        self.conn_num = clean(num) or "<unknown>"
        self.conn_name = clean(name) or "<unknown>"
        self.changed()

    def set_location(self, context: str, exten: str, priority: int) -> None:
        self.context, self.exten, self.priority = context, exten, priority
        self.changed()

    def set_state(self, state: State) -> None:
        self.state = state
        self.changed()

    def set_language(self, lang: str) -> None:
        self.language = clean(lang)
        self.changed()

    def mark(self, name: str) -> None:
        """Record a milestone (``queued``, ``bridged``, ``answered``…) others can await."""
        self.signal(name).set()

    def signal(self, name: str) -> Signal:
        """The :class:`Signal` of milestone ``name`` (set once it is reached)."""
        sig = self.marks.get(name)
        if sig is None:
            sig = self.marks[name] = Signal()
        return sig

    async def reached(self, name: str) -> None:
        await self.signal(name).wait()

    def interrupt(self) -> None:
        self.wake.set()

    def check(self) -> None:
        """Raise if the channel was hung up or redirected."""
        if self.hungup:
            raise ChannelHungUp(self.name)
        if self.redirect is not None:
            raise Redirected(self.name)

    async def sleep(self, seconds: float | None) -> None:
        """Sleep ``seconds`` of the channel's clock (``None``: forever); raises on hang-up
        or redirect."""
        self.check()
        if seconds is None or seconds > 0:
            await wait_any((self.wake,), seconds, self.clock)
        self.check()
        await asyncio.sleep(0)

    async def until(self, event: asyncio.Event, within: float | None = None) -> bool:
        """Wait for ``event`` up to ``within`` seconds of the channel's clock (``None``: no
        limit); False on timeout; raises on hang-up or redirect."""
        self.check()
        if event.is_set():
            return True
        if isinstance(event, Signal):
            await wait_any((event, self.wake), within, self.clock)
        else:
            waits: set[asyncio.Future[object]] = {asyncio.ensure_future(event.wait()),
                                                  asyncio.ensure_future(self.wake.wait())}
            if within is not None:
                waits.add(asyncio.ensure_future(self.clock.sleep(within)))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
        self.check()
        return event.is_set()

    async def next_dtmf(self, within: float | None) -> str | None:
        """The next DTMF digit received within ``within`` seconds of the channel's clock
        (``None``: no limit), ``None`` on timeout; raises on hang-up."""
        self.check()
        q = self.dtmf
        if not q.empty():
            return q.get_nowait()
        if not self.wake.is_set():
            await wait_any((q, self.wake), within, self.clock)
        if not q.empty():
            return q.get_nowait()
        self.check()
        return None


@dataclass
class Bridge:
    """A basic (two-party) or ConfBridge mixing bridge."""

    uniqueid: str = field(default_factory=lambda: str(uuid.uuid4()))
    type: str = "basic"
    technology: str = "simple_bridge"
    creator: str = "<unknown>"
    name: str = "<unknown>"
    channels: list[Channel] = field(default_factory=list)
    ended: Signal = field(default_factory=Signal)
    transferred: bool = False  # ended by a blind transfer (app_queue: Reason transfer)
    peers_cleared: bool = False  # BRIDGEPEER cleared already (an AMI Hangup dissolves it)
    # channels in the bridge that publish no events (ConfBridge's announcer CBAnn/…;2):
    # counted in BridgeNumChannels and named in BRIDGEPEER
    hidden: list[str] = field(default_factory=list)

    def block(self) -> str:
        return (
            f"BridgeUniqueid: {self.uniqueid}\r\nBridgeType: {self.type}\r\n"
            f"BridgeTechnology: {self.technology}\r\nBridgeCreator: {self.creator}\r\n"
            f"BridgeName: {self.name}\r\n"
            f"BridgeNumChannels: {len(self.channels) + len(self.hidden)}\r\n"
            "BridgeVideoSourceMode: none\r\n"
        )
