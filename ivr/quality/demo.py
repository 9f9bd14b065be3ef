"""What ``ivr demo`` shows of quality review: today's sample is drawn and a reviewer
scores the first sampled call on the form (a ``quality.scored`` call event)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from ivr.ami.client import AMIClient
from ivr.ami.messages import Response
from ivr.calls.model import CallModel
from ivr.errors import IvrError
from ivr.events.model import CallEvent
from ivr.quality.service import QualityService
from ivr.quality.state import day_of
from ivr.supervision.state import Actor


async def score_sample(svc: QualityService, now: float, say: Callable[[str], None]) -> int:
    """Draw ``now``'s day's sample and score its first call; the number scored."""
    await svc.flush()
    policy = svc.policy
    names = sorted(policy.reviewers)
    if not names:
        say("  quality 质检: no reviewer in the staff policy / 人员策略中无质检员")
        return 0
    reviewer = Actor("demo", "supervisor", names[0])
    day = day_of(now)
    sampled = await svc.sample_day(day)
    say(f"  quality 质检: {len(sampled)} call(s) sampled 抽检 for {day}: "
        + ", ".join(sorted({r for rv in sampled for r in rv.reasons})))
    for rv in sampled:
        if rv.status != "pending" or not policy.reviews(reviewer.name, rv.queue):
            continue
        scores: dict[str, object] = {i.key: i.max - (1 if i.max > 10 else 0)
                                     for i in policy.form}
        try:
            done = await svc.score(reviewer, rv.call_id, scores, "演示评分 demo score")
        except IvrError as exc:
            say(f"  quality 质检: scoring call {rv.call_id} refused 评分被拒: {exc}")
            continue
        say(f"  quality 质检 {reviewer.name}: call {rv.call_id} (agent {rv.agent}, queue "
            f"{rv.queue}) scored 评分 {done.total}/100")
        return 1
    return 0


class DemoRecording:
    """The demo's dialplan records no call by itself: this records the ``nth_call``-th
    agent call with ``MixMonitor`` (the caller's and the agent's legs, ``r()``/``t()``, as
    the recordings worker archives them), so the day has a recorded call to review."""

    def __init__(self, ami: Callable[[], AMIClient | None], model: Callable[[], CallModel],
                 spool: Path, say: Callable[[str], None], nth_call: int = 3) -> None:
        self.ami, self.model, self.spool, self.say = ami, model, spool, say
        self.nth_call = nth_call
        self.connected = 0
        self.tasks: list[asyncio.Task[None]] = []

    def on_events(self, events: list[CallEvent]) -> None:
        for ev in events:
            if ev.type == "agent.connected":
                self.connected += 1
                chan = self.model().channels.channels.get(ev.source.uniqueid)
                if self.connected == self.nth_call and chan is not None:
                    self.tasks.append(asyncio.get_running_loop().create_task(
                        self._record(ev.call_id, chan.name)))

    async def _record(self, call_id: str, channel: str) -> None:
        client = self.ami()
        if client is None:
            return
        self.spool.mkdir(parents=True, exist_ok=True)
        stem = self.spool / f"quality-{call_id}"
        try:
            reply = await client.send_action("MixMonitor", {
                "Channel": channel, "File": f"{stem}.wav",
                "Options": f"r({stem}-in.wav)t({stem}-out.wav)"}, timeout=10.0)
        except (IvrError, TimeoutError) as exc:
            self.say(f"  quality 质检: recording call {call_id} failed 录音失败: {exc}")
            return
        if isinstance(reply, Response) and reply.success:
            self.say(f"  quality 质检: recording 录音 call {call_id} for review")

    async def finish(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
