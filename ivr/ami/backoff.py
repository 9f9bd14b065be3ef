"""Reconnect delays: exponential, capped, with jitter (no I/O, no clock)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ivr.errors import ConfigError


@dataclass(frozen=True)
class Backoff:
    """``delay(n)`` for the n-th failed attempt in a row (n = 0, 1, 2…):
    ``min(cap, initial * factor**n)`` spread by ±``jitter`` (a fraction), never above
    ``cap`` and never below zero.  Jitter keeps a pool of clients from reconnecting to a
    restarted Asterisk in lock step.  ``next_attempt`` says where the count goes after a
    session: back to 0 only if it lasted ``reset_after`` seconds."""

    initial: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.2
    # The attempt count goes back to 0 only after a session that lasted this long: a
    # server that accepts the login and then closes (or dies at the first keep-alive,
    # 20 + 5 s) is backed off like one that refuses the connection.
    reset_after: float = 30.0

    def __post_init__(self) -> None:
        if self.reset_after < 0:
            raise ConfigError(f"backoff reset_after must be >= 0, got {self.reset_after} / "
                              "退避重置时间不能为负")
        if self.initial < 0 or self.cap < 0:
            raise ConfigError(f"backoff delays must be >= 0 (initial={self.initial}, "
                              f"cap={self.cap}) / 重连退避时间不能为负")
        if self.factor < 1:
            raise ConfigError(f"backoff factor must be >= 1, got {self.factor} / 退避倍数须 >= 1")
        if not 0 <= self.jitter <= 1:
            raise ConfigError(f"backoff jitter must be in [0, 1], got {self.jitter} / "
                              "抖动比例须在 0 到 1 之间")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        base = self.initial * self.factor ** min(attempt, 64)
        base = min(self.cap, base)
        if self.jitter:
            spread = (rng or random).uniform(-self.jitter, self.jitter)
            base *= 1.0 + spread
        return max(0.0, min(self.cap, base))

    def next_attempt(self, attempt: int, session_seconds: float | None) -> int:
        """The attempt number to wait for after a connection ended: ``session_seconds``
        is how long the logged-in session lasted (None: no login)."""
        if session_seconds is not None and session_seconds >= self.reset_after:
            return 0
        return attempt
