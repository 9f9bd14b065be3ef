"""Agent operations (话务员签入/签出/暂停) over AMI, with a Python API.

Every operation checks its input against the live state and the catalog first — an
unknown queue, an agent not logged in, a reason not in the catalog, a malformed
interface or name — and raises an :class:`~ivr.agents.errors.AgentInputError` before
anything is sent to Asterisk.  Then it sends app_queue's own actions (``QueueAdd``,
``QueueRemove``, ``QueuePause``, ``QueuePenalty``); a ``Response: Error`` (e.g. "Unable
to add interface: Already there", "Not there", "No such queue", trace 03) becomes
:class:`~ivr.agents.errors.AsteriskRefused` with Asterisk's message.  The state follows
from the events Asterisk emits (``QueueMemberAdded`` …), not from the replies.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ivr.agents.catalog import AgentCatalog
from ivr.agents.errors import (
    AlreadyLoggedIn,
    AsteriskRefused,
    InvalidAgent,
    NotLoggedIn,
    StateNotReady,
    StaticMember,
    UnknownAgent,
    UnknownQueue,
)
from ivr.agents.state import Member, QueueState
from ivr.ami.client import AMIClient
from ivr.ami.messages import Response
from ivr.log import event as log_event

log = logging.getLogger("ivr.agents")

# Tech/resource as queues.conf and QueueAdd take it (the dialplan loader's rule): no
# commas, spaces or ';' (app_queue's persistent-member record is ';'-separated).
INTERFACE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*/[A-Za-z0-9_.@:+*#/-]+")
MAX_NAME = 64
MAX_PENALTY = 1000
ACTION_TIMEOUT_S = 10.0


def check_interface(value: str, what: str = "interface") -> str:
    if not INTERFACE_RE.fullmatch(value):
        raise InvalidAgent(what, value, "expected Tech/resource such as PJSIP/1001 or "
                           "Local/1001@agent-local/n (no commas, spaces or ';') / "
                           "接口格式应为 技术/资源，如 PJSIP/1001")
    return value


def check_name(value: str) -> str:
    name = value.strip()
    if not name or len(name) > MAX_NAME or any(ord(c) < 32 or c in ";|,\x7f" for c in name):
        raise InvalidAgent("display name", value, f"1-{MAX_NAME} characters without control "
                           "characters, ',', ';' or '|' / 显示名称无效")
    return name


def check_penalty(queue: str, value: int) -> int:
    if not 0 <= value <= MAX_PENALTY:
        raise InvalidAgent(f"penalty for queue {queue!r}", str(value),
                           f"0 (best skill) to {MAX_PENALTY} / 技能等级应为 0-{MAX_PENALTY}")
    return value


class AgentService:
    """Log in / out, pause / unpause and skills of agents; reads ``state`` (kept live by
    :class:`ivr.agents.monitor.QueueMonitor`) and the catalog (``catalog()`` is asked
    on every call, so a published definition change applies at once)."""

    def __init__(self, ami: AMIClient, state: QueueState,
                 catalog: Callable[[], AgentCatalog] | AgentCatalog | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.ami = ami
        self.state = state
        if catalog is None:
            catalog = AgentCatalog()
        self._catalog = catalog if callable(catalog) else (lambda: catalog)
        self.clock = clock

    @property
    def catalog(self) -> AgentCatalog:
        return self._catalog()

    # -- checks (no I/O) ---------------------------------------------------------------

    def _ready(self) -> None:
        if not self.state.ready:
            raise StateNotReady()

    def check_queue(self, name: str) -> str:
        """``name`` if Asterisk has that queue; raises :class:`UnknownQueue`."""
        if name not in self.state.queues:
            raise UnknownQueue(name, sorted(self.state.queues))
        return name

    def _targets(self, interface: str, queues: Iterable[str] | None) -> list[Member]:
        """The memberships an operation applies to: the named queues (each must exist and
        have the agent), or every queue the agent is in."""
        self._ready()
        check_interface(interface, "agent interface")
        if queues is None:
            found = self.state.memberships(interface)
            if not found:
                raise UnknownAgent(interface)
            return found
        out: list[Member] = []
        for name in queues:
            member = self.state.member(self.check_queue(name), interface)
            if member is None:
                raise NotLoggedIn(interface, name)
            out.append(member)
        return out

    # -- operations --------------------------------------------------------------------

    async def login(self, interface: str, queues: Mapping[str, int] | Iterable[str], *,
                    name: str, state_interface: str | None = None) -> None:
        """Add ``interface`` to each queue (``{queue: penalty}``; a plain list means
        penalty 0 — the skill level, 0 best) under the display ``name`` (Chinese works),
        its device state read from ``state_interface`` (default: the interface)."""
        self._ready()
        check_interface(interface, "agent interface")
        if state_interface is not None:
            check_interface(state_interface, "state interface")
        display = check_name(name)
        penalties = dict(queues) if isinstance(queues, Mapping) else dict.fromkeys(queues, 0)
        if not penalties:
            raise InvalidAgent("queue list", "", "log in to at least one queue / 至少选择一个队列")
        for queue, penalty in penalties.items():
            self.check_queue(queue)
            check_penalty(queue, penalty)
            if self.state.member(queue, interface) is not None:
                raise AlreadyLoggedIn(interface, queue)
        added: list[str] = []
        for queue, penalty in penalties.items():
            fields = {"Queue": queue, "Interface": interface, "MemberName": display,
                      "Penalty": str(penalty), "Paused": "false",
                      "StateInterface": state_interface or interface}
            try:
                await self._send("QueueAdd", fields, queue, interface)
            except AsteriskRefused:
                for done in added:  # all or nothing
                    try:
                        await self._send("QueueRemove", {"Queue": done, "Interface": interface},
                                         done, interface)
                    except AsteriskRefused:
                        pass
                raise
            added.append(queue)
        log_event(log, logging.INFO, "agents.login", interface=interface, name=display,
                  queues=penalties)

    async def logout(self, interface: str, queues: Iterable[str] | None = None) -> None:
        """Remove ``interface`` from the named queues (default: every queue it is
        logged in to).  Static members (queues.conf) cannot log out."""
        targets = self._targets(interface, queues)
        for m in targets:
            if not m.dynamic:
                raise StaticMember(interface, m.queue)
        for m in targets:
            await self._send("QueueRemove", {"Queue": m.queue, "Interface": interface},
                             m.queue, interface)
        log_event(log, logging.INFO, "agents.logout", interface=interface,
                  queues=[m.queue for m in targets])

    async def pause(self, interface: str, reason: str,
                    queues: Iterable[str] | None = None) -> str:
        """Pause ``interface`` with a reason from the catalog (its code or its label) in
        the named queues (default: all its queues, in one action).  Returns the label
        Asterisk stores as the PausedReason."""
        label = self.catalog.reason_label(reason)
        await self._pause(interface, True, label, queues)
        return label

    async def unpause(self, interface: str, queues: Iterable[str] | None = None) -> None:
        await self._pause(interface, False, "", queues)

    async def _pause(self, interface: str, paused: bool, label: str,
                     queues: Iterable[str] | None) -> None:
        named = None if queues is None else list(queues)
        targets = self._targets(interface, named)
        base: dict[str, str] = {"Interface": interface, "Paused": "true" if paused else "false"}
        if paused:
            base["Reason"] = label
        if named is None:  # every queue at once (app_queue pauses it in each)
            await self._send("QueuePause", base, None, interface)
        else:
            for m in targets:
                await self._send("QueuePause", {"Queue": m.queue, **base}, m.queue, interface)
        log_event(log, logging.INFO, "agents.pause" if paused else "agents.unpause",
                  interface=interface, reason=label or None,
                  queues=[m.queue for m in targets])

    async def set_penalty(self, interface: str, queue: str, penalty: int) -> None:
        """Change the agent's skill level (penalty) in one queue."""
        self._targets(interface, [queue])
        check_penalty(queue, penalty)
        await self._send("QueuePenalty", {"Queue": queue, "Interface": interface,
                                          "Penalty": str(penalty)}, queue, interface)

    def status(self, interface: str | None = None) -> list[dict[str, Any]]:
        """Each membership (of ``interface``, or of everyone) with its state; a paused
        one with the reason's code from the catalog."""
        now = self.clock()
        members = (self.state.memberships(interface) if interface is not None
                   else list(self.state.members()))
        out = []
        for m in members:
            row = m.to_dict(now, self.state.queue_wrapup(m.queue))
            row["paused_reason_code"] = (self.catalog.reason_code(m.paused_reason)
                                         if m.paused else None)
            out.append(row)
        return out

    async def _send(self, action: str, fields: Mapping[str, str], queue: str | None,
                    interface: str) -> None:
        reply = await self.ami.send_action(action, fields, timeout=ACTION_TIMEOUT_S)
        if isinstance(reply, Response) and reply.success:
            return
        message = reply.message if isinstance(reply, Response) else repr(reply)
        log_event(log, logging.WARNING, "agents.refused", action=action, queue=queue,
                  interface=interface, message=message)
        raise AsteriskRefused(action, queue, interface, message)
