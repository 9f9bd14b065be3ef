"""The emulated PBX core: channel registry, Local channel pairs, answer/hang-up with
their event sequences, variables and dialplan functions, and the dialplan executor.

Applications live in :mod:`ivr.sim.apps` (and app_queue/confbridge/mixmonitor/
agi_client); they receive the :class:`Pbx` and the channel.
"""

from __future__ import annotations

import asyncio
import logging
import random
import weakref
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ivr.asterisk.errors import ExprError
from ivr.asterisk.extensions import Priority
from ivr.log import event as log_event
from ivr.metrics import METRICS
from ivr.sim.clock import Clock
from ivr.sim.dialplan import Dialplan
from ivr.sim.events import EventBus
from ivr.sim.expr import builtin_function
from ivr.sim.expr import substitute as expr_substitute
from ivr.sim.model import Channel, ChannelHungUp, Ids, Redirected, State, clean

log = logging.getLogger("ivr.sim.pbx")

_FUNCTIONS = frozenset({"CALLERID", "CHANNEL", "GLOBAL", "LOCAL", "EXCEPTION"})

# What chan_sip sets when an RTP call ends (values as in trace 08, receive-only stream).
_RTP_QOS = (
    ("RTPAUDIOQOS", "ssrc=0;themssrc=0;lp=0;rxjitter=0.000000;rxcount=0;txjitter=0.000000;"
     "txcount=0;rlp=0;rtt=0.000000;rxmes=0.000000;txmes=0.000000"),
    ("RTPAUDIOQOSJITTER", "minrxjitter=000.000000;maxrxjitter=000.000000;"
     "avgrxjitter=000.000000;stdevrxjitter=000.000000;mintxjitter=000.000000;"
     "maxtxjitter=000.000000;avgtxjitter=000.000000;stdevtxjitter=000.000000;"),
    ("RTPAUDIOQOSLOSS", "minrxlost=000.000000;maxrxlost=000.000000;avgrxlost=000.000000;"
     "stdevrxlost=000.000000;mintxlost=000.000000;maxtxlost=000.000000;"
     "avgtxlost=000.000000;stdevtxlost=000.000000;"),
    ("RTPAUDIOQOSRTT", "minrtt=000.000000;maxrtt=000.000000;avgrtt=000.000000;"
     "stdevrtt=000.000000;"),
    ("RTPAUDIOQOSMES", "minrxmes=000.000000;maxrxmes=000.000000;avgrxmes=000.000000;"
     "stdevrxmes=000.000000;mintxmes=000.000000;maxtxmes=000.000000;"
     "avgtxmes=000.000000;stdevtxmes=000.000000;"),
)


def _strip_underscores(name: str) -> str:
    """``ast_var_name()``: the name without up to two leading underscores."""
    if name.startswith("__"):
        return name[2:]
    return name[1:] if name.startswith("_") else name


@lru_cache(maxsize=4096)
def _aliases(name: str) -> tuple[str, ...]:
    """The other names of variable ``name`` (with up to two leading ``_`` or none) that
    setting it replaces (``pbx_builtin_setvar_helper``)."""
    base = _strip_underscores(name)
    return tuple(k for k in (base, "_" + base, "__" + base) if k != name)


# channel variables that are the channel's own fields (pbx_variables.c builtins)
_BUILTIN_VARS: dict[str, Callable[[Channel], str]] = {
    "EXTEN": lambda ch: ch.exten, "CONTEXT": lambda ch: ch.context,
    "PRIORITY": lambda ch: str(ch.priority), "CHANNEL": lambda ch: ch.name,
    "UNIQUEID": lambda ch: ch.uniqueid, "LANGUAGE": lambda ch: ch.language,
}


@lru_cache(maxsize=4096)
def _lookup_names(name: str) -> tuple[str, ...]:
    """The keys a read of channel variable ``name`` tries, in order: as written, then
    with one to four leading ``_`` (``Variables`` finds ``X``, ``_X``, ``__X`` for
    ``X``; ``_X`` and ``__X`` are tried in turn, each with its own aliases)."""
    return (name, "_" + name, "__" + name, "___" + name, "____" + name)


class _Scope:
    """:class:`ivr.sim.expr.Scope` over a channel of the emulator."""

    def __init__(self, pbx: Pbx, ch: Channel | None) -> None:
        self.pbx, self.ch = pbx, ch

    def get_var(self, name: str) -> str | None:
        return self.pbx.get_var(self.ch, name)

    def call_function(self, name: str, args: str) -> str | None:
        upper = name.strip().upper()
        if upper in _FUNCTIONS or upper in self.pbx.functions:
            return self.pbx.function(self.ch, upper, args)
        return None

App = Callable[["Pbx", Channel, str], Awaitable[None]]


@dataclass
class GosubFrame:
    """app_stack.c ``struct gosub_stack_frame``: the return address, how many ``ARGn`` the
    frame masks, and its variables (``ARGn``, ``ARGC``, ``LOCAL()`` ones), newest first,
    each with the channel variables of that name it hides until the frame is released."""

    context: str
    exten: str
    priority: int
    arguments: int
    names: list[str] = field(default_factory=list)
    hidden: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


@dataclass
class _CdrView:
    """What a CDR shows of a channel that runs its ``h`` extension: cdr.conf's
    ``endbeforehexten`` (default yes) finalizes the CDR when the ``h`` extension starts."""

    context: str
    exten: str
    app: str
    appdata: str
    end: float


@dataclass
class CallRecord:
    """What happened to one caller channel (for the emulator's summary)."""

    channel: str
    uniqueid: str
    start: float
    queued_at: float | None = None
    answered_by_agent_at: float | None = None
    end: float | None = None
    abandoned: bool = False
    queue: str = ""
    agi_status: str = ""
    entry: str = ""  # the number dialled (a placed call's extension)
    answered_at: float | None = None  # the caller's channel answered
    agent_called_at: float | None = None  # the call's first AgentCalled (a member rung)

    @property
    def time_to_agent(self) -> float | None:
        """Seconds from the answer to the first member rung (None: never rung)."""
        if self.answered_at is None or self.agent_called_at is None:
            return None
        return max(0.0, self.agent_called_at - self.answered_at)

    @property
    def wait(self) -> float | None:
        if self.queued_at is None:
            return None
        stop = self.answered_by_agent_at if self.answered_by_agent_at is not None else self.end
        return None if stop is None else max(0.0, stop - self.queued_at)


MAX_RECORDS = 20_000  # finished calls beyond this are folded into Folded counters


@dataclass
class Folded:
    """Summary counters of finished calls no longer kept one by one."""

    placed: int = 0
    answered: int = 0
    abandoned: int = 0
    agi_failures: int = 0
    waits: int = 0
    wait_sum: float = 0.0
    wait_max: float = 0.0

    def add(self, rec: CallRecord) -> None:
        self.placed += 1
        self.answered += rec.answered_by_agent_at is not None
        self.abandoned += rec.abandoned
        self.agi_failures += rec.agi_status == "FAILURE"
        w = rec.wait
        if w is not None:
            self.waits += 1
            self.wait_sum += w
            self.wait_max = max(self.wait_max, w)


@dataclass
class PbxOptions:
    agi_host: str | None = None  # override the host/port of every agi:// URL
    agi_port: int | None = None
    prompts: Path | None = None
    default_prompt_seconds: float = 2.0
    strict_prompts: bool = False  # True: prompts not found anywhere fail (result=-1)
    # AGI ``GET DATA a&b``: False (default) answers as Asterisk 20 does (one file named
    # "a&b": 200 result=-1); True plays a then b (a logged deviation).
    getdata_split_prompts: bool = False
    moh: bool = True  # the default MOH class plays (MusicOnHoldStart, CEL STREAM_BEGIN)
    record_dir: Path | None = None
    seed: int | None = None


class Pbx:
    def __init__(self, dialplan: Dialplan, clock: Clock, bus: EventBus,
                 options: PbxOptions | None = None) -> None:
        self.dialplan = dialplan
        self.clock = clock
        self.bus = bus
        self.options = options or PbxOptions()
        self.ids = Ids()
        self.channels: dict[str, Channel] = {}
        self.globals: dict[str, str] = dict(dialplan.globals)
        self.apps: dict[str, App] = {}
        # dialplan functions a module adds (app_queue's QUEUE_MEMBER): name -> read
        self.functions: dict[str, Callable[[Channel | None, str], str]] = {}
        self.records: dict[str, CallRecord] = {}
        self.folded = Folded()
        self.linked: dict[str, int] = {}
        self.random = random.Random(self.options.seed)
        self.tasks: set[asyncio.Task[None]] = set()
        self.processed = 0
        # app_stack.c's stack datastore (top frame last); pbx.c's exception datastore
        # (reason, context, exten, priority) read by EXCEPTION()
        self.gosub_stacks: weakref.WeakKeyDictionary[Channel, list[GosubFrame]] = (
            weakref.WeakKeyDictionary())
        self.exceptions: weakref.WeakKeyDictionary[Channel, tuple[str, str, str, int]] = (
            weakref.WeakKeyDictionary())
        self._cdr_views: weakref.WeakKeyDictionary[Channel, _CdrView] = (
            weakref.WeakKeyDictionary())
        # blocking file work (MixMonitor files) off the event loop, one writer thread
        self._io: ThreadPoolExecutor | None = None
        self.io_pending: set[asyncio.Future[None]] = set()

    # -- registry ------------------------------------------------------------------

    def find(self, name: str) -> Channel | None:
        return self.channels.get(name)

    def spawn(self, coro: Awaitable[None], name: str = "") -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def run_io(self, fn: Callable[[], None]) -> asyncio.Future[None]:
        """Run blocking file work ``fn`` in the PBX's writer thread (in order of
        submission); :meth:`drain_io` waits for what is still pending."""
        if self._io is None:
            self._io = ThreadPoolExecutor(1, thread_name_prefix="ivr-sim-io")
        fut = asyncio.get_running_loop().run_in_executor(self._io, fn)
        self.io_pending.add(fut)
        fut.add_done_callback(self.io_pending.discard)
        return fut

    async def drain_io(self) -> None:
        """Wait for the pending file work and stop the writer thread."""
        if self.io_pending:
            await asyncio.wait(set(self.io_pending))
        if self._io is not None:
            self._io.shutdown(wait=True)  # idle by now: joins at once
            self._io = None

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            METRICS.inc("sim.task_errors")
            log_event(log, logging.ERROR, "sim.task_failed", error=repr(exc))

    def new_channel(self, name: str, context: str, exten: str, *, state: State = State.DOWN,
                    linkedid: str | None = None, priority: int = 1, cel: bool = True,
                    announce: bool = True) -> Channel:
        ch = Channel(name, self.ids.uniqueid(), context=context, exten=exten, priority=priority,
                     state=state, linkedid=linkedid, created=self.clock.wall(), clock=self.clock)
        self.channels[name] = ch
        self.linked[ch.linkedid] = self.linked.get(ch.linkedid, 0) + 1
        self.processed += 1
        if announce:
            self.bus.newchannel(ch)
        if cel:
            self.bus.cel(ch, "CHAN_START")
        return ch

    def local_pair(self, exten: str, context: str, linkedid: str | None = None
                   ) -> tuple[Channel, Channel]:
        seq = self.ids.sequence()
        base = f"Local/{exten}@{context}-{seq}"
        one = self.new_channel(base + ";1", context, exten, linkedid=linkedid, cel=False,
                               announce=False)
        two = self.new_channel(base + ";2", context, exten, state=State.RING,
                               linkedid=one.linkedid, cel=False, announce=False)
        one.peer, two.peer = two, one
        self.bus.cel(one, "CHAN_START")
        self.bus.newchannel(one)
        self.bus.cel(two, "CHAN_START")
        self.bus.newchannel(two)
        return one, two

    # -- variables -----------------------------------------------------------------

    def get_var(self, ch: Channel | None, name: str) -> str:
        fname, paren, arg = name.partition("(")
        if paren:
            arg = arg[:-1] if arg.endswith(")") else arg
            return self.function(ch, fname.upper(), arg)
        if ch is not None:
            builtin = _BUILTIN_VARS.get(name)
            if builtin is not None:
                return builtin(ch)
            variables = ch.variables
            for k in _lookup_names(name):
                value = dict.get(variables, k)
                if value is not None:
                    return value
        return self.globals.get(name, "")

    def function(self, ch: Channel | None, fname: str, arg: str) -> str:
        """Read dialplan function ``fname(arg)`` (``arg`` already substituted): the
        channel's own (GLOBAL, CALLERID, CHANNEL), else :mod:`ivr.sim.expr`'s
        built-ins (IF, LEN, ISNULL, EXISTS); unknown or failing ones read as empty."""
        if fname == "GLOBAL":
            return self.globals.get(arg, "")
        module_function = self.functions.get(fname)
        if module_function is not None:
            return module_function(ch, arg)
        if ch is not None and fname == "LOCAL":
            return self.local_read(ch, arg)
        if ch is not None and fname == "EXCEPTION":
            return self._exception_read(ch, arg)
        if ch is None or fname not in ("CALLERID", "CHANNEL"):
            try:
                return builtin_function(fname, arg) or ""
            except ExprError as exc:
                METRICS.inc("sim.expr_error")
                log_event(log, logging.WARNING, "sim.expr_error", function=fname, args=arg,
                          error=str(exc))
                return ""
        if fname == "CALLERID":
            key = arg.lower()
            num = "" if ch.cid_num == "<unknown>" else ch.cid_num
            nm = "" if ch.cid_name == "<unknown>" else ch.cid_name
            if key == "num":
                return num
            if key == "name":
                return nm
            if key == "all":
                return f'"{nm}" <{num}>'
            return ""
        # CHANNEL
        return {"language": ch.language, "name": ch.name, "uniqueid": ch.uniqueid,
                "linkedid": ch.linkedid, "state": ch.state.name.title(),
                "channeltype": ch.tech}.get(arg.lower(), "")

    def set_var(self, ch: Channel | None, name: str, value: str) -> None:
        if value.__class__ is not str or "\r" in value or "\n" in value:
            value = clean(value)
        if ch is not None and "(" not in name:  # the common case: a channel variable
            # pbx_builtin_setvar_helper: an existing variable of the same name without its
            # leading "_"/"__" is replaced; the variable keeps the name as written and the
            # VarSet event carries it so ("Variable: __IVR_LANGUAGE").
            variables = ch.variables
            for k in _aliases(name):
                variables.pop(k, None)
            variables[name] = value
            self.bus.varset_clean(ch, name, value)
            return
        fname, paren, arg = name.partition("(")
        if paren:
            arg = arg[:-1] if arg.endswith(")") else arg
            f = fname.upper()
            if f == "GLOBAL":
                self.globals[arg] = value
                self.bus.varset(None, arg, value)
            elif ch is not None and f == "CHANNEL" and arg.lower() == "language":
                ch.set_language(value)
            elif ch is not None and f == "LOCAL":
                self.local_write(ch, arg, value)
            elif ch is not None and f == "CALLERID":
                if arg.lower() == "num":
                    ch.set_callerid(value, ch.cid_name)
                elif arg.lower() == "name":
                    ch.set_callerid(ch.cid_num, value)
                self.bus.newcallerid(ch)
            return
        self.globals[name] = value  # no channel: a global variable
        self.bus.varset(None, name, value)

    def inherit(self, parent: Channel, child: Channel) -> None:
        """Copy ``_VAR`` (one level) and ``__VAR`` (all levels) variables."""
        for k, v in parent.variables.items():
            if k.startswith("__"):
                child.variables[k] = v
            elif k.startswith("_"):
                child.variables[k[1:]] = v

    # -- Gosub frames (apps/app_stack.c) -------------------------------------------

    def frame_set_var(self, ch: Channel, frame: GosubFrame, name: str, value: str) -> None:
        """``frame_set_var``: a variable new to the frame is pushed over any of the same
        name (``pbx_builtin_pushvar_helper``: no VarSet), one it has is set (VarSet);
        either way ``VarSet LOCAL(name)`` follows."""
        value = clean(value)
        if name not in frame.names:
            frame.names.insert(0, name)  # AST_LIST_INSERT_HEAD
            base = _strip_underscores(name)
            frame.hidden[name] = [(k, ch.variables.pop(k))
                                  for k in (base, "_" + base, "__" + base)
                                  if k in ch.variables.keys()]
            ch.variables[name] = value
        else:
            self.set_var(ch, name, value)
        self.bus.varset(ch, f"LOCAL({name})", value)

    def release_frame(self, ch: Channel, frame: GosubFrame) -> None:
        """``gosub_release_frame``: each frame variable, newest first, is unset as
        ``pbx_builtin_setvar_helper(chan, name, NULL)`` does (VarSet with an empty value
        when it was not empty) and what it hid comes back (no event)."""
        for name in frame.names:
            base = _strip_underscores(name)
            old = next((ch.variables.pop(k) for k in (base, "_" + base, "__" + base)
                        if k in ch.variables.keys()), "")
            if old:
                self.bus.varset(ch, name, "")
            for k, v in frame.hidden.get(name, ()):
                ch.variables[k] = v
        frame.names.clear()

    def local_read(self, ch: Channel, name: str) -> str:
        """``LOCAL(name)``: the variable if the top frame has it, else empty."""
        frames = self.gosub_stacks.get(ch)
        if not frames or name not in frames[-1].names:
            return ""
        return self.get_var(ch, name)

    def local_write(self, ch: Channel, name: str, value: str) -> None:
        frames = self.gosub_stacks.get(ch)
        if frames is None:
            log_event(log, logging.ERROR, "sim.local_outside_gosub", channel=ch.name,
                      detail=f"Tried to set LOCAL({name}), but we aren't within a Gosub "
                             "routine")
        elif frames:
            self.frame_set_var(ch, frames[-1], name, value)

    def _exception_read(self, ch: Channel, what: str) -> str:
        exc = self.exceptions.get(ch)
        if exc is None:
            return ""
        key = what.strip().upper()
        if key == "REASON":
            return exc[0]
        if key == "CONTEXT":
            return exc[1]
        if key.startswith("EXTEN"):
            return exc[2]
        return str(exc[3]) if key == "PRIORITY" else ""

    def substitute(self, ch: Channel | None, text: str) -> str:
        if "$" not in text:
            return text
        try:
            return expr_substitute(text, _Scope(self, ch))
        except ExprError as exc:
            METRICS.inc("sim.expr_error")
            log_event(log, logging.WARNING, "sim.expr_error", text=text, error=str(exc))
            return ""

    # -- answer / hang-up ----------------------------------------------------------

    def answer(self, ch: Channel, app: str = "Answer", data: str = "") -> None:
        if ch.state == State.UP or ch.hungup:
            return
        ch.set_state(State.UP)
        ch.answered_at = self.clock.wall()
        rec = self.records.get(ch.uniqueid)
        if rec is not None and rec.answered_at is None:
            rec.answered_at = self.clock.now()
        self.bus.newstate(ch)
        # CEL ANSWER comes from the snapshot turning Up: ;2 before the ;1 it answers.
        self.bus.cel(ch, "ANSWER", ch.app, ch.appdata)
        self.local_in_use(ch)
        peer = ch.peer
        if peer is not None and not peer.hungup and peer.state != State.UP:
            # The outward half of a Local pair is answered when its ;2 answers.
            peer.set_state(State.UP)
            peer.answered_at = ch.answered_at
            self.bus.newstate(peer)
            self.bus.cel(peer, "ANSWER", peer.app, peer.appdata, ani=True)
            self.local_in_use(peer)
            peer.mark("answered")
            if peer.on_answer is not None:
                callback, peer.on_answer = peer.on_answer, None
                callback()
        ch.mark("answered")
        if ch.on_answer is not None:
            callback, ch.on_answer = ch.on_answer, None
            callback()

    def local_in_use(self, ch: Channel) -> None:
        """A Local half that rings or answers: its device (``Local/exten@context``, not
        cached) publishes INUSE, once per half (traces 04, 07)."""
        if ch.tech == "Local":
            self.bus.device_state(ch.name.rsplit(";", 1)[0].rsplit("-", 1)[0], "INUSE")

    def request_hangup(self, ch: Channel, cause: int = 16, event: str | None = None,
                       with_cause: bool = True) -> None:
        """Hang ``ch`` up.  ``event`` is what Asterisk publishes for this kind of hang-up:
        nothing for AMI ``Hangup`` and the dialplan's own ``Hangup()`` (the end of the
        dialplan run publishes ``SoftHangupRequest``), ``HangupRequest`` when the far end
        (a Local peer, a caller's BYE) goes away."""
        if ch.hungup:
            return
        ch.hangup_cause = cause
        self._rtp_qos(ch)
        if event is not None:
            self.bus.hangup_request(ch, cause if with_cause else None,
                                    soft=event == "SoftHangupRequest")
        ch.hungup = True
        ch.interrupt()
        if ch.task is None or ch.task.done():
            self.destroy(ch)

    def _rtp_qos(self, ch: Channel) -> None:
        """chan_sip's RTP statistics variables, set once when an answered call ends."""
        if ch.tech == "SIP" and ch.answered_at is not None and "__SIM_QOS" not in ch.variables:
            ch.variables["__SIM_QOS"] = "1"
            for var, value in _RTP_QOS:
                self.bus.varset(ch, var, value)

    def destroy(self, ch: Channel, device_state: str = "NOT_INUSE") -> None:
        """Final events of a channel and removal from the registry.  ``device_state``:
        what a Local half's device publishes (INVALID when its extension does not
        exist: trace 10)."""
        if self.channels.get(ch.name) is not ch:
            return
        ch.hungup = True
        ch.interrupt()
        while ch.before_destroy:
            ch.before_destroy.pop(0)()
        if ch.mixmonitor is not None:
            from ivr.sim import mixmonitor
            # app_mixmonitor ends with the channel's audiohook: no MixMonitorStop (that
            # comes from StopMixMonitor only; trace 12)
            mixmonitor.stop(self, ch, quiet=True)
        if ch.bridge is not None:
            from ivr.sim.bridging import leave_bridge
            leave_bridge(self, ch)
        self._rtp_qos(ch)
        end = self.clock.wall()
        records = ch.cdr_done + ([ch.cdr_open] if ch.cdr_open is not None else [])
        if len(records) > 1:
            records.sort(key=lambda r: r.seq)  # the chain in the order it was made
        here = (ch.context, ch.exten, ch.priority)
        view = self._cdr_views.pop(ch, None)
        if view is None:
            view = _CdrView(ch.context, ch.exten, ch.app, ch.appdata, end)
        elif records:
            ch.set_location(view.context, view.exten, ch.priority)  # as before the h exten
        for r in records:
            dest = r.dest or ch.variables.get("DIALEDPEERNAME", "")
            disposition = r.disposition or (
                "ANSWERED" if ch.answered_at is not None else "NO ANSWER")
            # cdr.c post_cdr(): with unanswered=no (the default) an unanswered CDR without
            # a destination channel is not posted; a dial that was not answered (NO
            # ANSWER, with its party B) is
            if r.dialed and not dest:
                continue
            if disposition == "ANSWERED" or dest:
                answer = None if ch.answered_at is None else max(ch.answered_at, r.start)
                self.bus.cdr(ch, dest, view.app, view.appdata, r.start, answer,
                             max(view.end, r.start), disposition)
        if (ch.context, ch.exten, ch.priority) != here:
            ch.set_location(*here)
        self.bus.hangup(ch, ch.hangup_cause,
                        "Normal Clearing" if ch.hangup_cause == 16 else "Unknown")
        dialstatus = ch.variables.get("DIALSTATUS", "")
        self.bus.cel(ch, "HANGUP", extra=f'{{"hangupcause":{ch.hangup_cause},'
                     f'"hangupsource":"","dialstatus":"{dialstatus}"}}')
        self.bus.cel(ch, "CHAN_END")
        del self.channels[ch.name]
        n = self.linked.get(ch.linkedid, 1) - 1
        if n <= 0:
            self.linked.pop(ch.linkedid, None)
            self.bus.cel(ch, "LINKEDID_END")
        else:
            self.linked[ch.linkedid] = n
        rec = self.records.get(ch.uniqueid)
        if rec is not None and rec.end is None:
            rec.end = self.clock.now()
            if len(self.records) > MAX_RECORDS:
                self.folded.add(self.records.pop(ch.uniqueid))
        if ch.tech == "Local":
            base = ch.name.rsplit(";", 1)[0].rsplit("-", 1)[0]
            self.bus.device_state(base, device_state)
        peer = ch.peer
        if peer is not None and not peer.hungup:
            self.request_hangup(peer, 16, "HangupRequest")
        elif peer is not None and self.channels.get(peer.name) is peer:
            # core_unreal.c ast_unreal_hangup(): the half that goes first queues a hang-up
            # on the other (HangupRequest) even when that one is hanging up already, as
            # when one AMI Hangup /regex/ hits both halves (trace 02 cap-14)
            self.bus.hangup_request(peer, ch.hangup_cause)
        ch.mark("hungup")

    # -- executor ------------------------------------------------------------------

    def start(self, ch: Channel, first: Callable[[], Awaitable[None]] | None = None) -> None:
        """Run ``first`` (an app such as Originate's Wait) or the dialplan on ``ch``."""
        ch.task = self.spawn(self._run(ch, first))

    async def _run(self, ch: Channel, first: Callable[[], Awaitable[None]] | None) -> None:
        ran_dialplan = False
        ended = False
        try:
            try:
                if first is not None:
                    try:
                        await first()
                        raise ChannelHungUp(ch.name)  # an originated app ends: hang up
                    except Redirected:
                        self._take_redirect(ch)
                ran_dialplan = True
                await self.run_dialplan(ch)
            except ChannelHungUp:
                pass
            ended = True
        finally:
            if ran_dialplan:  # __ast_pbx_run ends with ast_softhangup(APPUNLOAD)
                with self.published_view(ch):
                    self.bus.hangup_request(ch, 16, soft=True)
            ch.hungup = True
            if not ended:
                self.destroy(ch)
        try:
            if ran_dialplan:
                await self.run_h_exten(ch)
        finally:
            self.destroy(ch)

    @contextmanager
    def published_view(self, ch: Channel) -> Iterator[None]:
        """Events that carry the channel's cached snapshot (``ast_channel_snapshot()``:
        VarSet, SoftHangupRequest…) show the location last published, not one the PBX
        moved to without running an application there (a Goto to a missing extension,
        a priority that does not exist, an application that does not exist)."""
        shown, here = ch.cep_published, (ch.context, ch.exten, ch.priority)
        if shown is None or shown == here:
            yield
            return
        ch.set_location(*shown)
        try:
            yield
        finally:
            ch.set_location(*here)

    async def run_h_exten(self, ch: Channel) -> None:
        """``ast_pbx_h_exten_run``: after the PBX ends (the channel already soft-hung-up),
        the ``h`` extension of the channel's context runs from priority 1 until a
        priority is missing or an application returns -1 (hung up: every application
        that needs the line, Hangup, a failed Goto).  ``endbeforehexten`` (default yes):
        the CDR keeps what it had before."""
        if self.dialplan.extension(ch.context, "h") is None:
            return
        self._cdr_views[ch] = _CdrView(ch.context, ch.exten, ch.app, ch.appdata,
                                       self.clock.wall())
        ch.set_location(ch.context, "h", 1)
        while True:
            step = self.dialplan.step(ch.context, ch.exten, ch.priority)
            if step is None:
                return
            found = self._enter_step(ch, step, in_hangup=True)
            if found is None:
                return
            app, data = found
            ch.jumped = False
            try:
                await app(self, ch, data)
            except (ChannelHungUp, Redirected):
                return
            if not ch.jumped:
                ch.set_location(ch.context, ch.exten, ch.priority + 1)

    def _enter_step(self, ch: Channel, step: Priority, *, in_hangup: bool = False
                    ) -> tuple[App, str] | None:
        """Before running a priority: its application (None, logged, when there is no
        such application: the PBX ends), its substituted data, and the ``Newexten`` —
        except for the first application after a Redirect/transfer, which runs at the
        location already published (traces 02, 04)."""
        app = self.apps.get(step.app.lower())
        if app is None:
            self._no_application(ch, step.app)
            return None
        data = self.substitute(ch, step.data)
        ch.app, ch.appdata = step.app, data
        if ch.cep_published != (ch.context, ch.exten, ch.priority):
            cdr_open = ch.cdr_open
            self.bus.newexten(ch, step.app, data)
            if in_hangup:  # cdr.c check_new_cdr_needed(): no new CDR in hangup logic
                ch.cdr_open = cdr_open
        return app, data

    def _no_application(self, ch: Channel, app: str) -> None:
        METRICS.inc("sim.unknown_app")
        log_event(log, logging.WARNING, "sim.unknown_app", channel=ch.name,
                  detail=f"No application '{app}' for extension "
                         f"({ch.context}, {ch.exten}, {ch.priority})")

    def _take_redirect(self, ch: Channel) -> None:
        assert ch.redirect is not None
        ctx, ext, prio = ch.redirect
        ch.redirect = None
        ch.wake.clear()
        if ch.hungup:
            ch.wake.set()
        ch.set_location(ctx, ext, prio)

    async def run_dialplan(self, ch: Channel) -> None:
        """``__ast_pbx_run``'s loop.  It returns when the PBX ends: the priorities ran
        out (autofallthrough), an extension is invalid with no ``i``/``e`` extension, or
        an application does not exist (``pbx_extension_helper`` returns -1 before
        ``pbx_exec``: no Newexten for it).  An application that hung up raises."""
        while True:
            if ch.hungup:
                raise ChannelHungUp(ch.name)
            step = self.dialplan.step(ch.context, ch.exten, ch.priority)
            if step is None:
                if self.dialplan.extension(ch.context, ch.exten) is not None:
                    return  # autofallthrough
                if not self._invalid_extension(ch):
                    return
                await asyncio.sleep(0)  # an `i` that jumps to a missing extension loops
                continue
            found = self._enter_step(ch, step)
            if found is None:
                return
            app, data = found
            ch.jumped = False
            try:
                await app(self, ch, data)
            except Redirected:
                self._take_redirect(ch)
                continue
            if not ch.jumped:
                ch.set_location(ch.context, ch.exten, ch.priority + 1)

    def _invalid_extension(self, ch: Channel) -> bool:
        """The channel is at an extension that does not exist (at priority 1): go on at
        ``i`` (``INVALID_EXTEN`` set) or ``e`` (``EXCEPTION(reason)`` = INVALID) of its
        context; False when there is neither (the PBX ends)."""
        ctx, exten, prio = ch.context, ch.exten, ch.priority
        if self.dialplan.extension(ctx, "i") is not None:
            log_event(log, logging.INFO, "sim.invalid_extension", channel=ch.name,
                      detail=f"Channel '{ch.name}' sent to invalid extension: "
                             f"context,exten,priority={ctx},{exten},{prio}")
            with self.published_view(ch):
                self.set_var(ch, "INVALID_EXTEN", exten)
            ch.set_location(ctx, "i", 1)
            return True
        if self.dialplan.extension(ctx, "e") is not None:
            self.exceptions[ch] = ("INVALID", ctx, exten, prio)
            ch.set_location(ctx, "e", 1)
            return True
        METRICS.inc("sim.invalid_extension")
        log_event(log, logging.WARNING, "sim.no_extension", channel=ch.name,
                  detail=f"Channel '{ch.name}' sent to invalid extension but no invalid "
                         f"handler: context,exten,priority={ctx},{exten},{prio}")
        return False

    def resolve(self, ch: Channel, target: str) -> tuple[str, str, int] | None:
        """``[[context,]exten,]priority|label`` relative to the channel (as
        ``pbx_parse_location``); None for a label that does not exist."""
        parts = [p.strip() for p in target.split(",")]
        ctx, ext = ch.context, ch.exten
        if len(parts) >= 3:
            ctx, ext, prio_s = parts[0], parts[1], parts[2]
        elif len(parts) == 2:
            ext, prio_s = parts
        else:
            prio_s = parts[0]
        ctx, ext = ctx or ch.context, ext or ch.exten
        if prio_s.isdigit():
            return ctx, ext, int(prio_s)
        found = self.dialplan.label(ctx, ext, prio_s)
        return None if found is None else (ctx, ext, found)

    def goto(self, ch: Channel, target: str) -> None:
        """``[[context,]exten,]priority|label`` relative to the channel."""
        where = self.resolve(ch, target)
        if where is None:
            log_event(log, logging.WARNING, "sim.goto_no_label", channel=ch.name,
                      target=target)
            raise ChannelHungUp(ch.name)
        ch.set_location(*where)
        ch.jumped = True

    def publish_redirect(self, ch: Channel) -> None:
        """ast_async_goto: the new location of a redirected channel is published at once
        (Newexten with the application it was running)."""
        if ch.redirect is not None:
            ch.set_location(*ch.redirect)
            self.bus.newexten_if_moved(ch)

    def redirect(self, ch: Channel, context: str, exten: str, priority: int) -> None:
        ch.redirect = (context, exten, priority)
        if ch.bridge is not None:
            from ivr.sim.bridging import leave_bridge
            leave_bridge(self, ch, moved=lambda: self.publish_redirect(ch))
        else:
            self.publish_redirect(ch)
        ch.interrupt()
        if ch.task is None or ch.task.done():
            ch.redirect = None
            ch.set_location(context, exten, priority)
            self.start(ch)
