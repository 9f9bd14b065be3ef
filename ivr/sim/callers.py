"""Simulated callers: scripts (language, menu digits, patience, talk time), the handle
of a placed call, and a seeded random call generator."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ivr.sim.model import Channel


@dataclass
class CallerScript:
    """One simulated PSTN caller entering ``context`` at ``exten``."""

    number: str = "13800138000"
    name: str = ""
    exten: str = "12345"
    context: str = "from-pstn"
    language: str = "en"  # the channel's initial language (a SIP peer's language=)
    menu_digits: list[str] = field(default_factory=list)  # one entry per menu (GET DATA/Read)
    patience: float | None = 120.0  # seconds in queue before abandoning
    talk_time: float | None = 60.0  # seconds talking to an agent, then the caller hangs up
    hangup_after: float | None = None  # hang up this long after the call starts
    max_duration: float = 3600.0
    peer: str = "pstn"  # the channel is named SIP/<peer>-<seq>
    dtmf_info: bool = True  # chan_sip dtmfmode=info: each digit is one DTMFEnd (trace 08)


@dataclass
class CallHandle:
    channel: Channel
    script: CallerScript
    done: asyncio.Event

    @property
    def name(self) -> str:
        return self.channel.name

    @property
    def uniqueid(self) -> str:
        return self.channel.uniqueid

    async def wait(self) -> None:
        await self.done.wait()


@dataclass(frozen=True)
class CallSummary:
    placed: int
    active: int
    answered: int  # connected to an agent
    abandoned: int
    completed: int  # ended
    mean_wait: float
    max_wait: float
    agi_failures: int


def random_script(rng: random.Random, exten: str = "12345",
                  context: str = "from-pstn") -> CallerScript:
    """A plausible caller: mostly Mandarin, presses 1–3 at the menu, 20–120 s patience."""
    prefix = rng.choice(["138", "139", "137", "186", "159", "010", "021"])
    number = prefix + "".join(str(rng.randint(0, 9)) for _ in range(8))
    return CallerScript(
        number=number, name="", exten=exten, context=context,
        language=rng.choice(["zh", "zh", "zh", "en"]),
        menu_digits=[str(rng.randint(1, 3))],
        patience=rng.uniform(20, 120), talk_time=rng.uniform(30, 180),
    )


@dataclass(frozen=True)
class TimeToAgent:
    """Seconds from a caller's answer to the first member rung (the call's first
    AgentCalled), over ``calls`` calls: median, 95th percentile (nearest rank), maximum."""

    calls: int
    p50: float
    p95: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> TimeToAgent:
        v = sorted(values)
        if not v:
            return cls(0, 0.0, 0.0, 0.0)
        return cls(len(v), nearest_rank(v, 50), nearest_rank(v, 95), v[-1])


def nearest_rank(ordered: list[float], pct: float) -> float:
    """The ``pct``-th percentile of sorted ``ordered`` (nearest rank: the smallest value
    with at least pct % of the values at or below it)."""
    k = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(k) - 1]


ScriptFactory = Callable[[random.Random, int], CallerScript]
