"""What ``ivr demo`` shows of supervision: on one agent call a supervisor listens, then
whispers, then barges in, then leaves (the call goes on), each step said as it happens."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ivr.errors import IvrError
from ivr.events.model import CallEvent
from ivr.supervision.service import SupervisionService
from ivr.supervision.state import MODE_LABELS, Actor

STEP_TIMEOUT_S = 30.0


class DemoSupervision:
    def __init__(self, svc: SupervisionService, sleep: Callable[[float], Any],
                 say: Callable[[str], None], *, nth_call: int = 3, after_s: float = 5.0,
                 each_s: float = 4.0) -> None:
        self.svc, self.sleep, self.say = svc, sleep, say
        self.nth_call, self.after_s, self.each_s = nth_call, after_s, each_s
        self.connected = 0
        self.sessions = 0
        self.tasks: list[asyncio.Task[None]] = []

    def supervisor(self) -> Actor | None:
        names = sorted(self.svc.policy.supervisors)
        return Actor("demo", "supervisor", names[0]) if names else None

    def on_events(self, events: list[CallEvent]) -> None:
        for ev in events:
            if ev.type == "agent.connected":
                self.connected += 1
                if self.connected == self.nth_call:
                    self.tasks.append(asyncio.get_running_loop().create_task(
                        self._session(ev.call_id)))

    async def _session(self, call_id: str) -> None:
        actor = self.supervisor()
        if actor is None:
            self.say("  supervisor 班长: no supervisor in the staff policy / 人员策略中无班长")
            return
        await self.sleep(self.after_s)
        try:
            s = await self.svc.join(actor, call_id, "listen")
            for mode in ("listen", "whisper", "barge"):
                if mode != "listen":
                    await self.svc.switch(actor, s.id, mode)
                async with asyncio.timeout(STEP_TIMEOUT_S):
                    await self.svc.wait_for(lambda: s.status != "ringing")
                if s.status != "active":
                    break
                if mode == "listen":
                    self.sessions += 1
                self.say(f"  supervisor 班长 {actor.name}: {mode} {MODE_LABELS[mode]} on call "
                         f"{call_id} (agent {s.agent}, from {s.phone})")
                await self.sleep(self.each_s)
            if s.live:
                await self.svc.leave(actor, s.id)
                async with asyncio.timeout(STEP_TIMEOUT_S):
                    await self.svc.wait_for(lambda: not s.live)
            self.say(f"  supervisor 班长 {actor.name}: left 退出 call {call_id} ({s.reason}); "
                     "the call goes on 通话继续")
        except (IvrError, TimeoutError) as exc:  # the call ended first …: said
            self.say(f"  supervisor 班长: supervision of call {call_id} stopped 监听中止: "
                     f"{exc or type(exc).__name__}")

    async def finish(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
