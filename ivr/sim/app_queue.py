"""app_queue: queues, members, strategies (ringall, rrmemory, leastrecent, random…),
penalties, pause, wrap-up, ring timeout, join/leave/abandon, and the Queue() app."""

from __future__ import annotations

import asyncio
import heapq
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ivr.asterisk.appargs import split_app_args
from ivr.asterisk.conf import Category
from ivr.asterisk.errors import AsteriskConfError
from ivr.asterisk.queues import QueueConfig, parse_queues, parse_queues_general
from ivr.errors import ConfigError
from ivr.log import event as log_event
from ivr.sim.bridging import create_bridge, enter_bridge, leave_bridge
from ivr.sim.model import Channel, ChannelHungUp, Redirected, Signal, State, clean, wait_any

if TYPE_CHECKING:
    from ivr.sim.pbx import Pbx

log = logging.getLogger("ivr.sim.queue")


@dataclass
class AgentScript:
    """How a simulated agent (a queue member) behaves when rung."""

    interface: str  # member interface, e.g. "Local/1001@agent-local/n" or "SIP/agent1002"
    ring_time: float = 1.0  # seconds before answering
    answers: bool = True
    talk_time: float | None = None  # agent hangs up after this; None: the caller ends it


@dataclass(eq=False)
class Member:
    interface: str
    name: str
    state_interface: str
    penalty: int = 0
    dynamic: bool = False
    paused: bool = False
    paused_reason: str = ""
    calls_taken: int = 0
    last_call: int = 0
    last_pause: int = 0
    login_time: int = 0
    in_call: bool = False
    ringing: bool = False
    ringinuse: bool = False
    wrapup_until: float = 0.0
    device_status: int | None = None  # from the state interface's device state, once seen
    rings: int = 0  # callers ringing it now (more than one only with ringinuse)
    order: int = 0  # its place in the queue (queuepos; kept relative when one leaves)

    @property
    def status(self) -> int:
        if self.device_status is not None:
            return self.device_status
        return 6 if self.ringing else 2 if self.in_call else 1

    def body(self, queue: str, wrapup: int) -> str:
        return (
            f"Queue: {queue}\r\nMemberName: {self.name}\r\nInterface: {self.interface}\r\n"
            f"StateInterface: {self.state_interface}\r\n"
            f"Membership: {'dynamic' if self.dynamic else 'static'}\r\n"
            f"Penalty: {self.penalty}\r\nCallsTaken: {self.calls_taken}\r\n"
            f"LastCall: {self.last_call}\r\nLastPause: {self.last_pause}\r\n"
            f"LoginTime: {self.login_time}\r\nInCall: {int(self.in_call)}\r\n"
            f"Status: {self.status}\r\nPaused: {int(self.paused)}\r\n"
            f"PausedReason: {self.paused_reason}\r\nRinginuse: {int(self.ringinuse)}\r\n"
            f"Wrapuptime: {wrapup}\r\n"
        )

    def status_body(self, queue: str, wrapup: int) -> str:
        return (
            f"Queue: {queue}\r\nName: {self.name}\r\nLocation: {self.interface}\r\n"
            f"StateInterface: {self.state_interface}\r\n"
            f"Membership: {'dynamic' if self.dynamic else 'static'}\r\n"
            f"Penalty: {self.penalty}\r\nCallsTaken: {self.calls_taken}\r\n"
            f"LastCall: {self.last_call}\r\nLastPause: {self.last_pause}\r\n"
            f"LoginTime: {self.login_time}\r\nInCall: {int(self.in_call)}\r\n"
            f"Status: {self.status}\r\nPaused: {int(self.paused)}\r\n"
            f"PausedReason: {self.paused_reason}\r\nWrapuptime: {wrapup}\r\n"
        )


@dataclass(eq=False)
class Waiting:
    channel: Channel
    joined: float
    original_position: int
    ringing: bool = False
    options: str = ""  # Queue()'s options (c: go on in the dialplan after the call)
    digits: str = ""  # queue_ent.digits: keys pressed so far towards the queue's context
    keyed: bool = False  # left by a key (valid_exit)
    rrpos: int = 0  # the queue's rrpos when this caller last rang (store_next_rr)
    prio: int = 0  # QUEUE_PRIO when it joined: ahead of every caller with a lower one


@dataclass
class Queue:
    """A queue's runtime state; its settings are the parsed ``queues.conf`` section."""

    name: str
    config: QueueConfig
    members: list[Member] = field(default_factory=list)
    callers: list[Waiting] = field(default_factory=list)
    completed: int = 0
    abandoned: int = 0
    holdtime: float = 0.0
    talktime: float = 0.0
    rr_next: int = 0
    changed: Signal = field(default_factory=Signal)
    # members that may be rung (can_ring_entry() but for wrap-up): not paused and, unless
    # the member has ringinuse, neither ringing nor in a call
    idle: dict[int, Member] = field(default_factory=dict)
    # leastrecent/fewestcalls/linear: the idle members by calc_metric()'s rank, a heap of
    # (rank, push number, member) with stale entries skipped (push number != _live)
    _ranked: list[tuple[tuple[int, ...], int, Member]] = field(default_factory=list)
    _live: dict[int, int] = field(default_factory=dict)
    _pushes: int = 0
    next_order: int = 0
    penalty_version: int = 0
    _uniform_key: tuple[int, int] = (-1, -1)
    _uniform: bool = True

    # Queue:<name>_avail as last published: init_queue() starts it INUSE ("assume no
    # members are available") until a member's device state says otherwise
    avail: bool = False
    avail_count: int = 0  # members is_member_available() counts (kept incrementally)

    def member(self, interface: str) -> Member | None:
        return next((m for m in self.members if m.interface == interface), None)

    def notify(self) -> None:
        self.changed.set()
        self.changed = Signal()

    def uniform_penalty(self) -> bool:
        """All members share one penalty (cached until a penalty or the members change)."""
        key = (len(self.members), self.penalty_version)
        if self._uniform_key != key:
            self._uniform_key = key
            self._uniform = len({m.penalty for m in self.members}) <= 1
        return self._uniform

    def refresh(self, m: Member) -> None:
        """Put ``m`` in or out of the idle set after a state change (app_queue
        can_ring_entry(): a member with ringinuse may be rung while it rings or talks;
        one without is kept out by its device state and pending_members)."""
        self.idle.pop(id(m), None)
        if not m.paused and (m.ringinuse or (not m.ringing and not m.in_call)):
            self.idle[id(m)] = m
            if self.config.strategy in _RANKED:
                self._pushes += 1
                self._live[id(m)] = self._pushes
                heapq.heappush(self._ranked, (self._rank(m), self._pushes, m))

    def _rank(self, m: Member) -> tuple[int, ...]:
        """calc_metric()'s order, lowest first.  leastrecent: penalty * 1000000, plus 0
        for a member that never completed a call, else 1000000 - (now - lastcall): so a
        member who completed one ranks after the never-called of its own penalty and
        before those of the next, the earliest completion first (the order does not
        depend on now while lastcall is within 11 days).  fewestcalls: penalty, calls.
        linear: penalty, queue order (a list container).  Ties (:func:`_tie`): the
        member try_calling() met last in the hash container wins."""
        s = self.config.strategy
        if s == "leastrecent":
            called = int(m.last_call > 0)
            return (m.penalty + called, called, m.last_call, *_tie(m))
        if s == "fewestcalls":
            return (m.penalty, m.calls_taken, *_tie(m))
        return (m.penalty, m.order)

    def best(self, now: float) -> Member | None:
        """The idle member with the lowest metric that is not in wrap-up (ring_one():
        find_best(), then can_ring_entry(); a member that cannot be rung is skipped).
        O(log members) per call; members in wrap-up (the most recent completions, so
        the last ranked under leastrecent) are looked past and put back."""
        heap = self._ranked
        if len(heap) > 4 * len(self.idle) + 64:  # drop stale entries now and then
            heap[:] = [e for e in heap if self._live.get(id(e[2])) == e[1]
                       and self.idle.get(id(e[2])) is e[2]]
            heapq.heapify(heap)
        later: list[tuple[tuple[int, ...], int, Member]] = []
        found = None
        while heap:
            entry = heap[0]
            m = entry[2]
            if self._live.get(id(m)) != entry[1] or self.idle.get(id(m)) is not m:
                heapq.heappop(heap)
                continue
            rank = self._rank(m)
            if entry[0] != rank:  # changed without a refresh: put it where it belongs
                heapq.heapreplace(heap, (rank, entry[1], m))
                continue
            if now >= m.wrapup_until:
                found = m
                break
            later.append(heapq.heappop(heap))
        for entry in later:
            heapq.heappush(heap, entry)
        return found

    def listed(self) -> list[Member]:
        """The members in the order app_queue iterates them (QueueStatus): a list
        container for linear/rrordered, else the hash container's 37 buckets in order
        (member_hash_fn, see :func:`_tie`), insertion order within one (trace 11: the
        added ``Local/1001…`` before the static ``Local/1002…``; trace 03)."""
        if self.config.strategy in ("linear", "rrordered"):
            return list(self.members)
        return sorted(self.members, key=lambda m: (-_tie(m)[0], m.order))

    def available(self, now: float, limit: int | None = None) -> list[Member]:
        out = []
        for m in self.idle.values():
            if now >= m.wrapup_until:
                out.append(m)
                if limit is not None and len(out) >= limit:
                    break
        return out


_YES = ("yes", "true", "y", "t", "1", "on")  # ast_true()
_RANKED = ("leastrecent", "fewestcalls", "linear")  # strategies picked from Queue.best()
_RR = ("rrmemory", "roundrobin", "rrordered")


_DEVICE_STATUS = {"UNKNOWN": 0, "NOT_INUSE": 1, "INUSE": 2, "BUSY": 3, "INVALID": 4,
                  "UNAVAILABLE": 5, "RINGING": 6, "RINGINUSE": 7, "ONHOLD": 8}


def _is_avail(m: Member) -> int:
    """1 if app_queue's is_member_available() would count ``m`` (not paused; idle, or in
    use with ringinuse)."""
    return int(not m.paused and (m.ringinuse or m.device_status in (None, 0, 1)))


def _tie(m: Member) -> tuple[int, int]:
    """Equal metrics: try_calling() builds its call list by prepending each member as
    it iterates the queue's hash container (37 buckets, member_hash_fn: the first five
    characters from the '/' on, compress_char() each, shifted 6 bits apart; a bucket
    keeps insertion order), and find_best() keeps the first of equal metric — so the
    member iterated last wins: the highest bucket, then the latest added."""
    rest = m.interface[m.interface.find("/"):] if "/" in m.interface else m.interface
    h = 0
    for i, c in enumerate(rest[:5]):
        o = ord(c)
        h += (0 if o < 32 else o - 64 if o > 96 else o - 32) << (i * 6)
    return (-(h % 37), -m.order)


def _device(interface: str) -> str:
    """The device whose state a member interface follows (``Local/x@ctx/n`` -> ``Local/x@ctx``)."""
    tech, _, rest = interface.partition("/")
    return f"{tech}/{rest.split('/')[0]}" if tech == "Local" else interface


PM_FAMILY = "Queue/PersistentMembers"  # app_queue's pm_family in astdb


class Queues:
    def __init__(self, pbx: Pbx, astdb: dict[tuple[str, str], str] | None = None) -> None:
        self.pbx = pbx
        # [general] persistentmembers: dynamic members are dumped to astdb on every add,
        # remove and pause (dump_queue_members) and added back at start
        self.persistent = False
        self.astdb: dict[tuple[str, str], str] = {} if astdb is None else astdb
        pbx.bus.device_listeners.append(self.device_changed)
        pbx.functions["QUEUE_MEMBER"] = self.queue_member
        self.queues: dict[str, Queue] = {}
        self.scripts: dict[str, AgentScript] = {}
        # musiconhold.conf classes (name -> items): a queue's ``musicclass`` plays if it
        # names one, else the default class (res_musiconhold's fallback)
        self.moh_classes: dict[str, list[tuple[str, str]]] = {}
        # device -> the (queue, member) pairs following it; rebuilt after membership
        # changes (load/add/remove), so a device-state change costs O(its members)
        self._by_device: dict[str, list[tuple[Queue, Member]]] | None = None

    def load(self, conf: list[Category]) -> None:
        """(Re)load ``queues.conf`` as read by :func:`ivr.asterisk.queues.parse_queues`
        (app_queue's defaults, templates, member lines split as application arguments);
        dynamic members and statistics of a kept queue stay."""
        try:
            configs = parse_queues(conf)
        except AsteriskConfError as exc:
            raise ConfigError(f"{exc} / queues.conf 无效") from exc
        self.persistent = parse_queues_general(conf).get(
            "persistentmembers", "").strip().lower() in _YES
        now = int(self.pbx.clock.wall())
        old = self.queues
        first_load = not old
        self.queues = {}
        for qc in configs.values():
            q = old.get(qc.name) or Queue(qc.name, qc)
            q.config = qc
            q.members = [m for m in q.members if m.dynamic]
            for sm in qc.members:
                q.members.append(Member(
                    sm.interface, sm.membername, sm.state_interface, sm.penalty,
                    paused=sm.paused, login_time=now,
                    ringinuse=q.config.ringinuse if sm.ringinuse is None else sm.ringinuse))
            q.idle, q._ranked, q._live = {}, [], {}
            for i, m in enumerate(q.members):
                m.order = i
                q.refresh(m)
            q.next_order = len(q.members)
            for m in q.members[len(q.members) - len(qc.members):]:
                # member_add_to_queue(): Queue:<q>_pause_<interface> (cachable); the first
                # load happens before any AMI client is there, so it only fills the cache
                key = f"Queue:{q.name}_pause_{m.interface}"
                state = "INUSE" if m.paused else "NOT_INUSE"
                if first_load:
                    self.pbx.bus.device_cache[key] = state
                else:
                    self.pbx.bus.device_state(key, state)
            q.avail_count = sum(1 for m in q.members if _is_avail(m))
            self.queues[q.name] = q
        self._by_device = None

    # -- AMI-side operations ----------------------------------------------------------

    def device_changed(self, device: str, state: str) -> None:
        """app_queue's device-state subscription: a member whose state interface is
        ``device`` takes its status from it; a change is published (QueueMemberStatus)."""
        status = _DEVICE_STATUS.get(state)
        if status is None:
            return
        index = self._by_device
        if index is None:
            index = self._by_device = {}
            for q in self.queues.values():
                for m in q.members:
                    index.setdefault(_device(m.state_interface), []).append((q, m))
        for q, m in index.get(device, ()):
            if m.device_status != status:
                was = _is_avail(m)
                m.device_status = status
                q.avail_count += _is_avail(m) - was
                self.member_event("QueueMemberStatus", q, m)
                self._avail(q)

    def _avail(self, q: Queue) -> None:
        """``Queue:<name>_avail`` (app_queue device_state_cb / is_member_available):
        INUSE while no member could take a call (a member in use counts as busy unless
        ringinuse); published on change (the state is cached)."""
        avail = q.avail_count > 0
        if avail != q.avail:
            q.avail = avail
            self.pbx.bus.device_state(f"Queue:{q.name}_avail",
                                      "NOT_INUSE" if avail else "INUSE")

    def member_event(self, name: str, q: Queue, m: Member) -> None:
        self.pbx.bus.emit(name, "agent", m.body(q.name, q.config.wrapuptime))

    def dump(self, q: Queue) -> None:
        """dump_queue_members(): the queue's dynamic members as one astdb value
        (``iface;penalty;paused;name;state_interface;reason;wrapuptime``, ``|``-joined),
        or the key deleted when there are none."""
        if not self.persistent:
            return
        value = "|".join(
            f"{m.interface};{m.penalty};{int(m.paused)};{m.name};{m.state_interface};"
            f"{m.paused_reason};0" for m in q.members if m.dynamic)
        if value:
            self.astdb[(PM_FAMILY, q.name)] = value
        else:
            self.astdb.pop((PM_FAMILY, q.name), None)

    def reload_members(self) -> None:
        """reload_queue_members() at start: each queue's dumped members added again
        (paused ones paused, with their reason); a queue that no longer exists loses
        its entry."""
        if not self.persistent:
            return
        for (fam, queue), value in sorted(self.astdb.items()):
            if fam != PM_FAMILY:
                continue
            if queue not in self.queues:
                self.astdb.pop((fam, queue), None)
                continue
            for entry in re.split(r"[,|]", value):
                f = entry.split(";")
                if not entry or len(f) < 3 or f[2].strip() not in ("0", "1"):
                    continue
                f += [""] * (7 - len(f))
                try:
                    penalty = int(f[1])
                except ValueError:
                    continue
                self.add(queue, f[0], f[3], penalty, f[2].strip() == "1", f[4], f[5],
                         dump=False)

    def add(self, queue: str, interface: str, name: str, penalty: int, paused: bool,
            state_interface: str, reason: str = "", *, dump: bool = True) -> str | None:
        """Error message or None."""
        q = self.queues.get(queue)
        if q is None:
            return "Unable to add interface to queue: No such queue"
        if q.member(interface) is not None:
            return "Unable to add interface: Already there"
        m = Member(interface, clean(name or interface), state_interface or interface, penalty,
                   dynamic=True, paused=paused, paused_reason=clean(reason),
                   login_time=int(self.pbx.clock.wall()), ringinuse=q.config.ringinuse,
                   order=q.next_order)
        q.next_order += 1
        q.members.append(m)
        q.refresh(m)
        q.avail_count += _is_avail(m)
        self._by_device = None
        self.pbx.bus.device_state(f"Queue:{q.name}_pause_{interface}",
                                  "INUSE" if paused else "NOT_INUSE")
        self.member_event("QueueMemberAdded", q, m)
        if _is_avail(m):  # add_to_queue(): NOT_INUSE (cached: only a change shows)
            self._avail(q)
        if dump:
            self.dump(q)
        q.notify()
        return None

    def remove(self, queue: str, interface: str) -> str | None:
        q = self.queues.get(queue)
        if q is None:
            return "Unable to remove interface: No such queue"
        m = q.member(interface)
        if m is None:
            return "Unable to remove interface: Not there"
        if not m.dynamic:
            return "Unable to remove interface: Not dynamic"
        q.members.remove(m)
        q.idle.pop(id(m), None)
        q.avail_count -= _is_avail(m)
        self._by_device = None
        self.member_event("QueueMemberRemoved", q, m)
        self.dump(q)
        # member_remove_from_queue(): the pause device goes back to NOT_INUSE (published
        # only when it was paused: trace 11, not trace 03)
        self.pbx.bus.device_state(f"Queue:{q.name}_pause_{interface}", "NOT_INUSE")
        if not q.avail_count:  # remove_from_queue(): INUSE when nobody is available
            self._avail(q)
        return None

    def _members(self, queue: str | None, interface: str) -> list[tuple[Queue, Member]]:
        """``interface``'s membership in ``queue``, or in every queue when none is named
        (QueuePause/QueuePenalty/QueueMemberRingInUse without ``Queue``)."""
        out = []
        for q in self.queues.values():
            if queue and q.name != queue:
                continue
            m = q.member(interface)
            if m is not None:
                out.append((q, m))
        return out

    def pause(self, queue: str | None, interface: str, paused: bool, reason: str) -> bool:
        found = self._members(queue, interface)
        for q, m in found:
            was = _is_avail(m)
            m.paused = paused
            q.avail_count += _is_avail(m) - was
            m.paused_reason = clean(reason) if paused else ""
            if paused:
                m.last_pause = int(self.pbx.clock.wall())
            q.refresh(m)
            self.pbx.bus.device_state(f"Queue:{q.name}_pause_{interface}",
                                      "INUSE" if paused else "NOT_INUSE")
            if m.dynamic:
                self.dump(q)
            # set_queue_member_pause(): NOT_INUSE if this member is available now, INUSE
            # if no member is (the state is cached: only a change shows; trace 11 cap-4)
            if _is_avail(m) or not q.avail_count:
                self._avail(q)
            self.member_event("QueueMemberPause", q, m)
            q.notify()
        return bool(found)

    def penalty(self, queue: str | None, interface: str, penalty: int) -> bool:
        found = self._members(queue, interface)
        for q, m in found:
            m.penalty = penalty
            q.penalty_version += 1
            q.refresh(m)
            self.member_event("QueueMemberPenalty", q, m)
            q.notify()
        return bool(found)

    def ringinuse(self, queue: str | None, interface: str, value: bool) -> bool:
        found = self._members(queue, interface)
        for q, m in found:
            was = _is_avail(m)
            m.ringinuse = value
            q.avail_count += _is_avail(m) - was
            q.refresh(m)
            self.member_event("QueueMemberRinginuse", q, m)
        return bool(found)

    def queue_member(self, ch: Channel | None, data: str) -> str:
        """``QUEUE_MEMBER(queue,option[,interface])`` read (queue_function_mem_read):
        ``logged`` (status not UNAVAILABLE/INVALID), ``free`` (NOT_INUSE and not paused),
        ``ready`` (free and not in wrap-up), ``count``, and a member's ``penalty`` /
        ``paused`` / ``ringinuse``; an unknown queue or option (or a missing argument:
        empty) reads 0."""
        a = split_app_args(data) + ["", "", ""]
        name, option, interface = a[0], a[1].strip().lower(), a[2]
        if not name or not option:
            log_event(log, logging.ERROR, "sim.queue_member_usage", data=data,
                      detail="Missing required argument. QUEUE_MEMBER(<queuename>,<option>"
                      "[,<interface>])")
            return ""
        q = self.queues.get(name)
        if q is None:
            log_event(log, logging.WARNING, "sim.queue_missing", queue=name,
                      detail=f"queue {name} was not found")
            return "0"
        now = int(self.pbx.clock.wall())
        wrapup = q.config.wrapuptime
        if option == "logged":
            return str(sum(1 for m in q.members if m.status not in (4, 5)))
        if option == "free":
            return str(sum(1 for m in q.members if m.status == 1 and not m.paused))
        if option == "ready":
            return str(sum(1 for m in q.members if m.status == 1 and not m.paused
                           and not (m.last_call and wrapup and now - wrapup < m.last_call)))
        if option == "count":
            return str(len(q.members))
        if option in ("penalty", "paused", "ringinuse", "ignorebusy"):
            m = q.member(interface)
            if m is None:
                return "0"
            return str(m.penalty if option == "penalty" else
                       int(m.paused) if option == "paused" else int(m.ringinuse))
        log_event(log, logging.ERROR, "sim.queue_member_usage", data=data,
                  detail=f"QUEUE_MEMBER: Invalid option '{option}' provided.")
        return "0"

    # -- the Queue() application --------------------------------------------------------

    def moh_class(self, q: Queue) -> str:
        """The class a caller of ``q`` hears (local_ast_moh_start: the queue's
        ``musicclass`` when musiconhold.conf has it, else ``default``)."""
        wanted = q.config.raw.get("musicclass", "")
        return wanted if wanted in self.moh_classes else "default"

    def _pick(self, q: Queue, now: float, position: int) -> list[Member]:
        """The members a waiting caller rings now, or none.  is_our_turn() (autofill):
        the caller's turn comes when fewer callers not ringing are ahead of it
        (``position``) than members are available (num_available_members(); ringall
        counts one, so only the first such caller rings).  Then try_calling()/ring_one():
        the available member with the best metric (calc_metric()) — the same one for
        every caller whose turn it is, as far as can_ring_entry() allows (a member
        without ringinuse stops being available once it rings)."""
        s = q.config.strategy
        if s == "ringall" and position > 0:
            return []
        if len(q.available(now, position + 1)) <= position:
            return []
        if s in _RANKED:
            m = q.best(now)
            return [] if m is None else [m]
        uniform = len({m.penalty for m in q.members}) <= 1 if len(q.members) < 64 else \
            q.uniform_penalty()
        rr = s in _RR
        if uniform and rr:
            # the same pick as below without listing every available member: the first
            # available member from rr_next on, in member order
            return self._next_rr(q, now, q.idle)
        avail = q.available(now)
        best = min(m.penalty for m in avail)
        tier = [m for m in avail if m.penalty == best]
        if s == "ringall":
            return tier
        if rr:
            return self._next_rr(q, now, {id(m): m for m in tier})
        if s == "random":
            return [self.pbx.random.choice(tier)]
        return [tier[0]]

    @staticmethod
    def _next_rr(q: Queue, now: float, allowed: dict[int, Member]) -> list[Member]:
        """Round robin (calc_metric(): queue position from rrpos on, then the ones
        before it): the first member of ``allowed`` (not in wrap-up) at or after
        ``rr_next`` in member order.  ``rr_next`` moves when the ring ends
        (:meth:`_store_next_rr`)."""
        order = q.members
        n = len(order)
        for i in range(n):
            k = (q.rr_next + i) % n
            m = order[k]
            if id(m) in allowed and now >= m.wrapup_until:
                return [m]
        return []

    @staticmethod
    def _store_next_rr(q: Queue, m: Member, rrpos: int) -> None:
        """store_next_rr() after wait_for_answer(): rrpos becomes the position of the
        best member this caller did not try — the one after ``m`` in metric order (from
        ``rrpos`` as it was when the caller rang; the members before it were busy), or
        0 when none is left (the queue wrapped)."""
        n = len(q.members)
        try:
            k = m.order if m.order < n and q.members[m.order] is m else q.members.index(m)
        except ValueError:  # removed meanwhile
            return
        nxt = k + 1
        q.rr_next = nxt if nxt < n and (k >= rrpos or nxt < rrpos) else 0

    def _qvars(self, ch: Channel, q: Queue) -> None:
        """app_queue set_queue_variables(): the QUEUE* variables, only with ``setqueuevar``."""
        if not q.config.setqueuevar:
            return
        perf = 100.0 * q.completed / (q.completed + q.abandoned) if q.completed else 0.0
        values = [("QUEUENAME", q.name), ("QUEUEMAX", str(q.config.maxlen)),
                  ("QUEUESTRATEGY", q.config.strategy), ("QUEUECALLS", str(len(q.callers))),
                  ("QUEUEHOLDTIME", str(int(q.holdtime))),
                  ("QUEUETALKTIME", str(int(q.talktime))),
                  ("QUEUECOMPLETED", str(q.completed)), ("QUEUEABANDONED", str(q.abandoned)),
                  ("QUEUESRVLEVEL", "0"), ("QUEUESRVLEVELPERF", f"{perf:.1f}")]
        for k, v in values:
            self.pbx.set_var(ch, k, v)

    async def queue_app(self, pbx: Pbx, ch: Channel, data: str) -> None:
        a = split_app_args(data, max_args=9) + [""] * 5
        q = self.queues.get(a[0].strip())
        if q is None:
            log_event(log, logging.WARNING, "sim.queue_missing", queue=a[0],
                      detail=f"Unable to join queue '{a[0]}'")
            pbx.set_var(ch, "QUEUESTATUS", "UNKNOWN")
            return
        timeout = float(a[4]) if a[4].strip().isdigit() else None
        for var in ("ANSWEREDTIME", "ANSWEREDTIME_MS", "DIALEDTIME", "DIALEDTIME_MS",
                    "QUEUEWAIT", "QUEUEWAIT_MS"):
            pbx.set_var(ch, var, "")
        # joinempty: "" / yes = no restriction; no, strict, loose or a list: refuse a
        # caller when the queue has no members (the emulator's approximation).
        if q.config.joinempty not in ("",) + _YES and not q.members:
            pbx.set_var(ch, "QUEUESTATUS", "JOINEMPTY")
            return
        if q.config.maxlen and len(q.callers) >= q.config.maxlen:
            pbx.set_var(ch, "QUEUESTATUS", "FULL")
            return
        now = pbx.clock.now()
        # queue_exec reads QUEUE_PRIO; join_queue() enters the caller before the first
        # one with a lower priority (after those with a higher or equal one)
        prio_text = ch.variables.get("QUEUE_PRIO", "").strip()
        prio = int(prio_text) if prio_text.lstrip("-").isdigit() else 0
        at = next((i for i, other in enumerate(q.callers) if other.prio < prio),
                  len(q.callers))
        w = Waiting(ch, now, at + 1, options=a[1], prio=prio)
        q.callers.insert(at, w)
        while not ch.dtmf.empty():  # keys pressed earlier were read (and dropped) by
            ch.dtmf.get_nowait()    # the application then running (AGI, Playback)
        if pbx.options.moh:  # ast_moh_start(): fails without a class that can play
            pbx.bus.cel(ch, "STREAM_BEGIN", "Queue", data)
        if len(q.callers) == 1:  # join_queue(): when the count becomes 1
            pbx.bus.device_state(f"Queue:{q.name}", "RINGING")
        pbx.bus.chan("QueueCallerJoin", "agent", ch,
                     f"Queue: {q.name}\r\nPosition: {at + 1}\r\n"
                     f"Count: {len(q.callers)}\r\n")
        if pbx.options.moh:
            pbx.bus.chan("MusicOnHoldStart", "call", ch, f"Class: {self.moh_class(q)}\r\n")
        rec = pbx.records.get(ch.uniqueid)
        if rec is not None:
            rec.queued_at, rec.queue = now, q.name
        ch.mark("queued")
        deadline = None if timeout is None else now + timeout
        status = "TIMEOUT"
        try:
            while True:
                now = pbx.clock.now()
                if deadline is not None and now >= deadline:
                    break
                position = 0
                for other in q.callers:
                    if other is w:
                        break
                    position += not other.ringing
                w.rrpos = q.rr_next
                members = self._pick(q, now, position)
                if not members:
                    left = None if deadline is None else deadline - now
                    wait_s = min(left, 1.0) if left is not None else 1.0
                    if await self._wait_or_key(pbx, ch, q, w, wait_s):
                        break
                    continue
                w.ringing = True
                try:
                    result = await self._ring(pbx, ch, q, w, members, deadline, data)
                finally:
                    w.ringing = False
                if result == "done":
                    return
                if w.keyed:
                    break
                # wait_a_bit(): the retry wait reads keys too
                if await self._wait_or_key(pbx, ch, q, w, min(
                        q.config.retry, (deadline - pbx.clock.now()) if deadline
                        else q.config.retry), Signal()):
                    break
        except (ChannelHungUp, Redirected) as exc:
            if w in q.callers and isinstance(exc, ChannelHungUp):
                self._abandon(pbx, ch, q, w)
            elif w in q.callers:
                self._leave(pbx, ch, q, w)
            raise
        if w.keyed:
            self._keyed_out(pbx, ch, q, w)
            return
        # queue_exec's loop: past the queue timeout record_abandoned() (ABANDONED, the
        # QUEUE* variables, QueueCallerAbandon), then "stop": the times not set yet, the
        # QUEUE* variables again, leave_queue(), QUEUESTATUS
        self._record_abandoned(pbx, ch, q, w)
        self._stop_vars(pbx, ch, w)
        self._qvars(ch, q)
        self._leave(pbx, ch, q, w)
        pbx.set_var(ch, "QUEUESTATUS", status)

    def _stop_vars(self, pbx: Pbx, ch: Channel, w: Waiting) -> None:
        """queue_exec "stop": QUEUEWAIT (whole seconds in the queue), DIALEDTIME (the
        channel's age) and ANSWEREDTIME (0), each with its _MS, where still empty.  A
        ring that nobody answered sets none of them."""
        v = ch.variables
        if not v.get("QUEUEWAIT"):
            waited = int(pbx.clock.now() - w.joined)
            pbx.set_var(ch, "QUEUEWAIT", str(waited))
            pbx.set_var(ch, "QUEUEWAIT_MS", str(waited * 1000))
        if not v.get("DIALEDTIME"):
            age = max(0.0, pbx.clock.wall() - ch.created)
            pbx.set_var(ch, "DIALEDTIME", str(int(age)))
            pbx.set_var(ch, "DIALEDTIME_MS", str(int(age * 1000)))
        if not v.get("ANSWEREDTIME"):
            pbx.set_var(ch, "ANSWEREDTIME", "0")
            pbx.set_var(ch, "ANSWEREDTIME_MS", "0")

    def _leave(self, pbx: Pbx, ch: Channel, q: Queue, w: Waiting) -> None:
        pos = q.callers.index(w) + 1
        q.callers.remove(w)
        if not q.callers:  # leave_queue(): when the count becomes 0
            pbx.bus.device_state(f"Queue:{q.name}", "NOT_INUSE")
        pbx.bus.chan("QueueCallerLeave", "agent", ch,
                     f"Queue: {q.name}\r\nPosition: {pos}\r\nCount: {len(q.callers)}\r\n")
        pbx.set_var(ch, "QUEUEPOSITION", str(pos))
        q.notify()

    def _abandon(self, pbx: Pbx, ch: Channel, q: Queue, w: Waiting) -> None:
        """The caller hung up while waiting or ringing (queue_exec "stop" with res -1):
        the times not set yet, record_abandoned(), the QUEUE* variables, leave_queue()."""
        self._stop_vars(pbx, ch, w)
        self._record_abandoned(pbx, ch, q, w)
        self._qvars(ch, q)
        rec = pbx.records.get(ch.uniqueid)
        if rec is not None:
            rec.abandoned = True
        self._leave(pbx, ch, q, w)

    def _record_abandoned(self, pbx: Pbx, ch: Channel, q: Queue, w: Waiting) -> None:
        """app_queue record_abandoned(): ABANDONED, the QUEUE* variables (before the
        count), the count, QueueCallerAbandon (a hang-up and a queue timeout alike)."""
        hold = int(pbx.clock.now() - w.joined)
        pos = q.callers.index(w) + 1
        pbx.set_var(ch, "ABANDONED", "TRUE")
        self._qvars(ch, q)
        q.abandoned += 1
        pbx.bus.chan("QueueCallerAbandon", "agent", ch,
                     f"Queue: {q.name}\r\nPosition: {pos}\r\n"
                     f"OriginalPosition: {w.original_position}\r\nHoldTime: {hold}\r\n")

    def _leg(self, pbx: Pbx, ch: Channel, q: Queue, m: Member) -> Channel:
        iface = m.interface
        tech, _, rest = iface.partition("/")
        script = self.scripts.get(iface)
        if tech == "Local":
            target = rest.split("/")[0]
            exten, _, context = target.partition("@")
            one, two = pbx.local_pair(exten, context, linkedid=ch.linkedid)
            one.app, one.appdata = "AppQueue", "(Outgoing Line)"
            if one.cdr_open is not None:
                one.cdr_open.dialed = True
            pbx.bus.newexten(one, "AppQueue", "(Outgoing Line)")
            one.set_callerid(ch.cid_num, ch.cid_name)
            pbx.bus.newcallerid(one)
            pbx.set_var(one, "DIALEDPEERNUMBER", rest)
            pbx.set_var(two, "DIALEDPEERNUMBER", rest)
            two.set_callerid(ch.cid_num, ch.cid_name)
            two.set_connected(ch.cid_num, ch.cid_name)
            pbx.bus.newcallerid(two)
            pbx.bus.newconnectedline(two)
            pbx.bus.local_bridge(one, two, context, exten)
            pbx.inherit(ch, two)
            if script is None or (script.answers and script.ring_time <= 0):
                pbx.start(two)
            elif script.answers:
                pbx.spawn(self._delayed_start(pbx, two, script.ring_time))
            leg = one
        else:
            leg = pbx.new_channel(f"{iface}-{pbx.ids.sequence()}", "from-queue", ch.exten,
                                  linkedid=ch.linkedid)
            leg.app, leg.appdata = "AppQueue", "(Outgoing Line)"
            leg.set_callerid(ch.cid_num, ch.cid_name)
            sc = script or AgentScript(iface)
            if sc.answers:
                pbx.spawn(self._delayed_answer(pbx, leg, sc.ring_time))
            leg.set_state(State.RINGING)
        leg.set_connected(ch.cid_num, ch.cid_name)
        device = _device(iface)
        # ring_entry: the leg inherits the caller's extension; published with its next
        # snapshot (the Newstate of Ringing)
        if tech == "Local":  # published with the leg's next snapshot (its Newstate)
            leg.set_location(leg.context, ch.exten, 1)

        def ringing() -> None:
            leg.on_answer = None
            pbx.bus.newconnectedline(leg)
            pbx.bus.two("DialState", "call", ch, leg, "DialStatus: RINGING\r\n")
            if tech != "Local":  # a Local half publishes its own device state
                pbx.bus.device_state(device, "INUSE")

        def answered_unrung() -> None:  # the connected line comes with the first state
            pbx.bus.newconnectedline(leg)

        leg.on_ringing = ringing
        leg.on_answer = answered_unrung
        return leg

    async def _delayed_start(self, pbx: Pbx, two: Channel, delay: float) -> None:
        try:
            await two.sleep(delay)
        except ChannelHungUp:
            return
        pbx.start(two)

    async def _delayed_answer(self, pbx: Pbx, leg: Channel, delay: float) -> None:
        try:
            await leg.sleep(delay)
        except ChannelHungUp:
            return
        pbx.answer(leg)

    async def _ring(self, pbx: Pbx, ch: Channel, q: Queue, w: Waiting, members: list[Member],
                    deadline: float | None, data: str) -> str:
        legs: list[tuple[Member, Channel]] = []
        for m in members:
            m.rings += 1
            m.ringing = True
            q.refresh(m)
            leg = self._leg(pbx, ch, q, m)
            legs.append((m, leg))
            pbx.bus.two("AgentCalled", "agent", ch, leg,
                        f"Queue: {q.name}\r\nInterface: {m.interface}\r\n"
                        f"MemberName: {m.name}\r\n")
            pbx.bus.two("DialBegin", "call", ch, leg,
                        f"DialString: {m.interface.partition('/')[2]}\r\n")
            ch.cdr_dial(leg.name, pbx.clock.wall())
        ring_start = pbx.clock.now()
        rec = pbx.records.get(ch.uniqueid)
        if rec is not None and rec.agent_called_at is None:
            rec.agent_called_at = ring_start  # time to agent: answer -> first AgentCalled
        ring_for = float(q.config.timeout) if q.config.timeout > 0 else 3600.0
        if deadline is not None:
            ring_for = min(ring_for, max(0.0, deadline - ring_start))
        ring_end = ring_start + ring_for
        while True:  # wait_for_answer(): a caller's key may leave the queue (valid_exit)
            await wait_any([*(leg.signal("answered") for _, leg in legs), ch.wake, ch.dtmf],
                           max(0.0, ring_end - pbx.clock.now()), pbx.clock)
            if not self._keys(pbx, ch, q, w) or w.keyed or ch.hungup \
                    or ch.redirect is not None or pbx.clock.now() >= ring_end \
                    or any(leg.state == State.UP for _, leg in legs):
                break
        winner = None if w.keyed else next(
            ((m, leg) for m, leg in legs if leg.state == State.UP and not leg.hungup
             and not ch.hungup and ch.redirect is None), None)
        timed_out = (winner is None and not ch.hungup and ch.redirect is None
                     and not w.keyed)
        if w.keyed:  # wait_for_answer: a key left; hangupcalls() adds DialEnd CANCEL
            for _, leg in legs:
                pbx.bus.two("DialEnd", "call", ch, leg, "DialStatus: CANCEL\r\n")
                ch.cdr_dial_end(leg.name, "CANCEL")
        if ch.hungup:
            if pbx.options.moh:
                pbx.bus.cel(ch, "STREAM_END", "Queue", data)
                pbx.bus.chan("MusicOnHoldStop", "call", ch)
            # wait_for_answer: the caller cancelled (publish_dial_end_event "CANCEL");
            # hangupcalls() below publishes a second DialEnd CANCEL per leg
            for _, leg in legs:
                pbx.bus.two("DialEnd", "call", ch, leg, "DialStatus: CANCEL\r\n")
                ch.cdr_dial_end(leg.name, "CANCEL")
        elif timed_out:
            # wait_for_answer's timeout: rna() (AgentRingNoAnswer) per leg, then
            # publish_dial_end_event "NOANSWER"; hangupcalls() below adds DialEnd CANCEL
            ring_ms = int((pbx.clock.now() - ring_start) * 1000)
            for m, leg in legs:
                pbx.bus.two("AgentRingNoAnswer", "agent", ch, leg,
                            f"Queue: {q.name}\r\nInterface: {m.interface}\r\n"
                            f"MemberName: {m.name}\r\nRingTime: {ring_ms}\r\n")
            for _, leg in legs:
                pbx.bus.two("DialEnd", "call", ch, leg, "DialStatus: NOANSWER\r\n")
                ch.cdr_dial_end(leg.name, "NOANSWER")
        if q.config.strategy in _RR and legs:
            self._store_next_rr(q, legs[0][0], w.rrpos)
        for m, leg in legs:
            m.rings -= 1
            m.ringing = m.rings > 0
            if winner is not None and leg is winner[1]:
                continue
            q.refresh(m)
            status = "CANCEL" if winner or ch.hungup or timed_out or w.keyed else "NOANSWER"
            pbx.bus.two("DialEnd", "call", ch, leg, f"DialStatus: {status}\r\n")
            ch.cdr_dial_end(leg.name, status)
            pbx.request_hangup(leg, 16)
            if leg.tech != "Local":  # a Local leg's device state publishes it (above)
                pbx.bus.emit("QueueMemberStatus", "agent",
                             m.body(q.name, q.config.wrapuptime))
        q.notify()
        ch.check()
        if winner is None:
            return "again"
        m, leg = winner
        await self._connect(pbx, ch, q, w, m, leg, ring_start)
        return "done"

    # -- a key pressed while waiting: queues.conf context= (app_queue valid_exit) ------

    def _keys(self, pbx: Pbx, ch: Channel, q: Queue, w: Waiting) -> bool:
        """Read the caller's pending keys through :meth:`_valid_exit` (stops at the key
        that leaves); True if there was one."""
        read = False
        while not ch.dtmf.empty() and not w.keyed:
            read = True
            self._valid_exit(pbx, ch, q, w, ch.dtmf.get_nowait())
        return read

    def _valid_exit(self, pbx: Pbx, ch: Channel, q: Queue, w: Waiting, digit: str) -> bool:
        """app_queue ``valid_exit()``: the key is added to the caller's digits (up to
        78, then they start again); without a queue ``context`` nothing happens; digits
        no extension of the context can match (``ast_canmatch_extension``) are dropped;
        digits naming an extension with a priority 1 (``ast_goto_if_exists``) send the
        caller there when Queue() returns."""
        if len(w.digits) >= 78:  # sizeof(qe->digits) - 2
            w.digits = ""
            return False
        w.digits += digit
        context = q.config.raw.get("context", "")
        if not context:
            return False
        if not self._can_match(pbx, context, w.digits):
            w.digits = ""
            return False
        if pbx.dialplan.extension(context, w.digits) is None:
            return False
        pbx.goto(ch, f"{context},{w.digits},1")
        w.keyed = True
        return True

    @staticmethod
    def _can_match(pbx: Pbx, context: str, digits: str) -> bool:
        """``ast_canmatch_extension``: an extension of ``context`` is ``digits`` or
        starts with them (a pattern: matches them exactly)."""
        if pbx.dialplan.extension(context, digits) is not None:
            return True
        ctx = pbx.dialplan.parsed.contexts.get(context)
        return ctx is not None and any(
            not e.is_pattern and e.name.startswith(digits) for e in ctx.extensions)

    async def _wait_or_key(self, pbx: Pbx, ch: Channel, q: Queue, w: Waiting,
                           seconds: float, until: Signal | None = None) -> bool:
        """wait_our_turn()/wait_a_bit(): wait for ``until`` (default: the queue to
        change) or ``seconds``, reading the caller's keys (``ast_waitfordigit``); True
        once a key leaves."""
        end = pbx.clock.now() + seconds
        event = q.changed if until is None else until
        while True:
            await wait_any((event, ch.wake, ch.dtmf), max(0.0, end - pbx.clock.now()),
                           pbx.clock)
            ch.check()
            if not self._keys(pbx, ch, q, w) or w.keyed or pbx.clock.now() >= end:
                return w.keyed

    def _keyed_out(self, pbx: Pbx, ch: Channel, q: Queue, w: Waiting) -> None:
        """queue_exec "stop" after a key left the queue: MOH stops, the caller leaves
        (QueueCallerLeave, no abandon); QUEUESTATUS is not set (the reason stays
        QUEUE_UNKNOWN); the PBX goes on at ``<context>,<digits>,1``."""
        pbx.bus.cel(ch, "STREAM_END", "Queue", ch.appdata)
        pbx.bus.chan("MusicOnHoldStop", "call", ch)
        self._leave(pbx, ch, q, w)

    async def _connect(self, pbx: Pbx, ch: Channel, q: Queue, w: Waiting, m: Member,
                       leg: Channel, ring_start: float) -> None:
        now = pbx.clock.now()
        hold = now - w.joined
        pbx.bus.two("DialEnd", "call", ch, leg, "DialStatus: ANSWER\r\n")
        ch.cdr_dial_end(leg.name, "ANSWER")
        if pbx.options.moh:
            pbx.bus.chan("MusicOnHoldStop", "call", ch)
            pbx.bus.cel(ch, "STREAM_END", "Queue", ch.appdata)
        # try_calling(): MEMBER* with setinterfacevar, QEHOLDTIME/QEORIGINALPOS with
        # setqueueentryvar (caller, then member leg), QUEUE* with setqueuevar
        if q.config.setinterfacevar:
            for target in (ch, leg):
                for k, v in (("MEMBERINTERFACE", m.interface), ("MEMBERNAME", m.name),
                             ("MEMBERCALLS", str(m.calls_taken)),
                             ("MEMBERLASTCALL", str(m.last_call)),
                             ("MEMBERPENALTY", str(m.penalty)),
                             ("MEMBERDYNAMIC", str(int(m.dynamic))), ("MEMBERREALTIME", "0")):
                    pbx.set_var(target, k, v)
        if q.config.setqueueentryvar:
            for target in (ch, leg):
                pbx.set_var(target, "QEHOLDTIME", str(int(hold)))
                pbx.set_var(target, "QEORIGINALPOS", str(w.original_position))
        self._qvars(ch, q)
        self._qvars(leg, q)
        self._leave(pbx, ch, q, w)
        pbx.set_var(ch, "QUEUEWAIT", str(int(hold)))
        pbx.set_var(ch, "QUEUEWAIT_MS", str(int(hold * 1000)))
        pbx.bus.two("AgentConnect", "agent", ch, leg,
                    f"Queue: {q.name}\r\nInterface: {m.interface}\r\nMemberName: {m.name}\r\n"
                    f"HoldTime: {int(hold)}\r\nRingTime: {int(now - ring_start)}\r\n")
        m.in_call = True
        q.refresh(m)
        if leg.tech != "Local":  # a Local member's status follows its device state
            pbx.bus.emit("QueueMemberStatus", "agent", m.body(q.name, q.config.wrapuptime))
        rec = pbx.records.get(ch.uniqueid)
        if rec is not None:
            rec.answered_by_agent_at = now
        q.holdtime = (q.holdtime * q.completed + hold) / (q.completed + 1)
        b = create_bridge(pbx)
        enter_bridge(pbx, b, leg)
        enter_bridge(pbx, b, ch)
        ch.variables["DIALEDPEERNAME"] = leg.name
        if leg.task is None or leg.task.done():
            pbx.start(leg, first=lambda: _stay(leg, b.ended))
        script = self.scripts.get(m.interface)
        if script is not None and script.talk_time is not None:
            pbx.spawn(self._agent_hangs_up(pbx, leg, script.talk_time))
        reason = "caller"
        redirected = False
        try:
            await ch.until(b.ended)
            reason = "transfer" if b.transferred else "agent"
        except Redirected:
            redirected = True
            raise
        except ChannelHungUp:  # a blind transfer also hangs the transferer up
            reason = "transfer" if b.transferred else "caller"
            if not b.transferred and ch.bridge is b:
                # the bridge sees the hang-up first: the caller leaves it (the two-party
                # bridge dissolves) before Queue() sets its variables (trace 13)
                leave_bridge(pbx, ch)
            raise
        finally:
            talk = pbx.clock.now() - now
            if leg.hungup:
                m.in_call = False
            else:  # transferred/redirected: the member's device stays in use
                pbx.spawn(self._release_when_gone(q, m, leg))
            m.calls_taken += 1
            m.last_call = int(pbx.clock.wall())
            m.wrapup_until = pbx.clock.now() + q.config.wrapuptime
            q.refresh(m)
            q.completed += 1
            q.talktime = (q.talktime * (q.completed - 1) + talk) / q.completed
            dialed = pbx.clock.now() - ring_start
            times = (("ANSWEREDTIME", str(int(talk))), ("ANSWEREDTIME_MS", str(int(talk * 1000))),
                     ("DIALEDTIME", str(int(dialed))), ("DIALEDTIME_MS", str(int(dialed * 1000))))

            def complete(why: str, caller: bool = True, member: bool = True) -> None:
                """``caller``/``member``: whether that channel's snapshot is still cached."""
                body = (f"Queue: {q.name}\r\nInterface: {m.interface}\r\n"
                        f"MemberName: {m.name}\r\nHoldTime: {int(hold)}\r\n"
                        f"TalkTime: {int(talk)}\r\nReason: {why}\r\n")
                if caller and member:
                    pbx.bus.two("AgentComplete", "agent", ch, leg, body)
                elif caller:
                    pbx.bus.chan("AgentComplete", "agent", ch, body)
                else:
                    pbx.bus.emit("AgentComplete", "agent", body)

            if redirected:
                # Redirect out of the agent's bridge (trace 02): the times (dialed first),
                # the queue variables; AgentComplete comes when the caller hangs up
                for k, v in times[2:] + times[:2]:
                    pbx.set_var(ch, k, v)
                self._qvars(ch, q)
                # (handle_hangup on the first hang-up request of caller or member, with
                # the snapshots still cached).  The caller first: both (02), none with
                # the member leg gone already (09).  The member first (kicked from a
                # conference, 12): the caller's only; not a member that was a transfer's
                # transferer (its hang-up is left to the transfer: 09)
                sent: list[bool] = []

                def caller_gone() -> None:
                    if not sent:
                        sent.append(True)
                        complete("caller", not leg.hungup, not leg.hungup)

                def member_gone() -> None:
                    if not sent and not ch.hungup and "SIM_TRANSFERER" not in leg.variables:
                        sent.append(True)
                        complete("agent", True, False)

                ch.before_destroy.append(caller_gone)
                if not leg.hungup:
                    leg.before_destroy.append(member_gone)
            else:
                # handle_hangup on the caller's first hang-up request: one from the far
                # end of its line (HangupRequest) comes while both snapshots are cached,
                # as the caller leaves the bridge, before the variables (10, 11 cap-10);
                # an AMI Hangup of the caller itself publishes its request only as the
                # PBX ends, with the member leg gone: neither (13; as in 09)
                cached = not (reason == "caller" and ch.peer is not None
                              and not ch.peer.hungup)
                if reason == "caller" and cached:
                    complete(reason)
                # end_bridge_callback (QUEUE*, ANSWEREDTIME, DIALEDTIME), then queue_exec
                # "stop" (the QUEUE* again): traces 04, 10
                self._qvars(ch, q)
                for k, v in times:
                    pbx.set_var(ch, k, v)
                self._qvars(ch, q)
                if not (reason == "caller" and cached):
                    complete(reason, cached, cached)
            if leg.tech != "Local":
                pbx.bus.emit("QueueMemberStatus", "agent",
                             m.body(q.name, q.config.wrapuptime))
            q.notify()
        if "c" not in w.options:
            # ast_bridge_call() returned -1 (the bridge ended by a hang-up, not an async
            # goto): Queue() returns -1 and the PBX hangs the caller up; QUEUESTATUS is
            # not set (the reason stays QUEUE_UNKNOWN)
            raise ChannelHungUp(ch.name)
        pbx.set_var(ch, "QUEUESTATUS", "CONTINUE")  # option c: go on in the dialplan

    async def _release_when_gone(self, q: Queue, m: Member, leg: Channel) -> None:
        await leg.reached("hungup")
        m.in_call = False
        q.refresh(m)
        if leg.tech != "Local":
            self.pbx.bus.emit("QueueMemberStatus", "agent",
                              m.body(q.name, q.config.wrapuptime))
        q.notify()

    async def _agent_hangs_up(self, pbx: Pbx, leg: Channel, after: float) -> None:
        await pbx.clock.sleep(after)
        target = leg.peer if leg.peer is not None else leg
        if not target.hungup:
            pbx.request_hangup(target, 16, "HangupRequest")


async def _stay(ch: Channel, ended: asyncio.Event) -> None:
    """The member leg stays up until its bridge ends, or, if a feature moved it to
    another bridge (an attended transfer's consultation), until that one ends."""
    await ch.until(ended)
    while ch.bridge is not None and not ch.bridge.ended.is_set():
        await ch.until(ch.bridge.ended)

