"""One clock for every emulator timer: real time with a time scale, or virtual time.

:class:`Clock` scales real time: ``speed=20`` makes a 60 s ``Wait()`` last 3 s of real
time.  :class:`VirtualClock` (for tests) lets no real time pass for a timer at all:
simulated time jumps to the next timer once the emulator has nothing else to do, so an
emulated 40-second call takes a fraction of a second.  Either way, simulated durations
(``now()``, hold times, recording lengths) are in simulated seconds, every emulator timer
(ring and queue timeouts, ``Wait()``, prompt playback, callers' patience and talk time)
goes through the clock, and socket I/O stays real.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Protocol


class Timer(Protocol):
    """What :meth:`Clock.call_later` returns (an :class:`asyncio.TimerHandle` for the real
    clock)."""

    def cancel(self) -> None: ...


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Clock:
    """Real time scaled by ``speed`` (the emulator's clock in ``ivr sim``, ``ivr demo``
    and the benchmarks)."""

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

    def call_later(self, seconds: float, callback: Callable[..., object], *args: object) -> Timer:
        """Run ``callback(*args)`` after ``seconds`` of simulated time."""
        return asyncio.get_running_loop().call_later(self.real(seconds), callback, *args)

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

    def touch(self) -> None:
        """Something reached the emulator from outside (an AMI action): a virtual clock
        waits before it jumps."""

    def follow(self, output_count: Callable[[], int]) -> None:
        """``output_count()`` grows with every frame the emulator sends (its event bus):
        a virtual clock waits after output before it jumps."""

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """While inside, a peer owes the emulator a reply (a FastAGI server its next
        command): a virtual clock does not jump."""
        yield

    async def aclose(self) -> None:
        """Stop what the clock runs itself (nothing for real time)."""


class _VirtualTimer:
    __slots__ = ("when", "callback", "args", "cancelled")

    def __init__(self, when: float, callback: Callable[..., object],
                 args: tuple[object, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock(Clock):
    """Simulated time that passes only by jumps, for tests.

    Timers wait in a heap.  A task of the clock jumps ``now()`` to the earliest one and
    runs every timer due at that instant once the emulator is quiet: nothing ready to run
    in the event loop, no FastAGI server owing the emulator a command (:meth:`holding`;
    after ``max_hold`` quiet real seconds a silent server no longer stops time), and —
    when the emulator sent an event or received an AMI action since the last jump —
    ``autojump`` real seconds of quiet after it.  That window leaves the other side (the
    bridge, Redis) the real time it needs to react to what it was sent, as trio's
    ``MockClock(autojump_threshold=...)`` does; a timer that only sets the next one (a
    queue's 1 s poll) costs no window.  ``wall()`` starts at the real time of creation
    (or ``wall_start``)."""

    def __init__(self, *, autojump: float = 0.005, max_hold: float = 2.0,
                 wall_start: float | None = None) -> None:
        super().__init__(1.0)
        if autojump <= 0 or max_hold < autojump:
            raise ValueError(f"need 0 < autojump <= max_hold, got {autojump}, {max_hold}")
        self.autojump = autojump
        self.max_hold = max_hold
        self._t0_wall = time.time() if wall_start is None else wall_start
        self._now = 0.0
        self._heap: list[tuple[float, int, _VirtualTimer]] = []
        self._seq = itertools.count()
        self._holds = 0
        self._quiet_since = time.monotonic()  # the last input or output
        self._output_count: Callable[[], int] = lambda: 0
        self._outputs_seen = 0
        self._runner: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self.jumps = 0  # how many times time jumped (tests and docs)

    def now(self) -> float:
        return self._now

    def real(self, seconds: float) -> float:
        raise TypeError("virtual time takes no real time: use call_later / sleep / wait_for")

    def call_later(self, seconds: float, callback: Callable[..., object], *args: object) -> Timer:
        t = _VirtualTimer(self._now + max(0.0, seconds), callback, args)
        heapq.heappush(self._heap, (t.when, next(self._seq), t))
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())
        if self._wakeup is not None:
            _resolve(self._wakeup)
        return t

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = self.call_later(seconds, _resolve, fut)
        try:
            await fut
        finally:
            timer.cancel()

    async def wait_for(self, fut: asyncio.Future[object] | asyncio.Event, seconds: float) -> bool:
        if isinstance(fut, asyncio.Event):
            if fut.is_set():
                return True
            target: asyncio.Future[object] = asyncio.ensure_future(fut.wait())
        else:
            target = fut
        timeout: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = self.call_later(seconds, _resolve, timeout)
        try:
            await asyncio.wait((target, timeout), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if target is not fut:
                target.cancel()
        if not target.done() or target.cancelled():
            return False
        target.result()  # a failed future raises, as with the real clock
        return True

    def touch(self) -> None:
        self._quiet_since = time.monotonic()

    def follow(self, output_count: Callable[[], int]) -> None:
        self._output_count = output_count
        self._outputs_seen = output_count()

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
            self._quiet_since = time.monotonic()

    async def aclose(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    # -- the jumps ----------------------------------------------------------------------

    def _next_due(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        busy_turns = 0
        while True:
            if self._next_due() is None:
                self._wakeup = loop.create_future()
                try:
                    await self._wakeup
                finally:
                    self._wakeup = None
            if _loop_busy(loop):  # let what runs settle (after a jump: what it woke)
                busy_turns += 1
                await asyncio.sleep(0 if busy_turns < 100 else 0.001)
                continue
            busy_turns = 0
            out = self._output_count()
            if out != self._outputs_seen:
                self._outputs_seen = out
                self._quiet_since = time.monotonic()
            quiet = time.monotonic() - self._quiet_since
            if self._holds and quiet < self.max_hold:
                await asyncio.sleep(self.autojump)
                continue
            if quiet < self.autojump:
                await asyncio.sleep(self.autojump - quiet)
                continue
            self._jump(loop)
            await asyncio.sleep(0)

    def _jump(self, loop: asyncio.AbstractEventLoop) -> None:
        """Move ``now()`` to the earliest timer and run every timer due then."""
        when = self._next_due()
        if when is None:
            return
        self.jumps += 1
        self._now = max(self._now, when)
        heap = self._heap
        while heap and heap[0][0] <= self._now:
            t = heapq.heappop(heap)[2]
            if not t.cancelled:
                loop.call_soon(_fire, t)


def _fire(t: _VirtualTimer) -> None:
    if not t.cancelled:
        t.cancelled = True
        t.callback(*t.args)


def _loop_busy(loop: asyncio.AbstractEventLoop) -> bool:
    """Callbacks ready to run besides the caller (CPython's loops keep them in
    ``_ready``; a loop without it counts as idle, the quiet window still applies)."""
    return bool(getattr(loop, "_ready", None))
