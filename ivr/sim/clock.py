"""One clock for every emulator timer, with a time scale.

``speed=20`` makes a 60 s ``Wait()`` last 3 s of real time.  Simulated durations
(``now()``, hold times, recording lengths) are in simulated seconds.
"""

from __future__ import annotations

import asyncio
import time


class Clock:
    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed} / 速度必须大于 0")
        self.speed = speed
        self._t0_real = time.monotonic()
        self._t0_wall = time.time()

    def now(self) -> float:
        """Simulated seconds since the emulator started."""
        return (time.monotonic() - self._t0_real) * self.speed

    def wall(self) -> float:
        """Simulated wall-clock time (epoch seconds) for event values."""
        return self._t0_wall + self.now()

    def real(self, seconds: float) -> float:
        """Real seconds that ``seconds`` of simulated time take."""
        return max(0.0, seconds) / self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(self.real(seconds))

    async def wait_for(self, fut: asyncio.Future[object] | asyncio.Event, seconds: float) -> bool:
        """Wait up to ``seconds`` (simulated) for an event/future; True if it came."""
        aw = fut.wait() if isinstance(fut, asyncio.Event) else asyncio.shield(fut)
        try:
            await asyncio.wait_for(aw, self.real(seconds))
        except TimeoutError:
            return False
        return True
