"""Process-wide counters and gauges (a tiny registry; exported later over HTTP).

Protocol errors, dropped sessions, retries… are counted here so nothing that goes
wrong is only a log line.
"""

from __future__ import annotations

import threading
from collections import Counter


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._gauges: dict[str, float] = {}

    def inc(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def get(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    # Gauges: a level now (e.g. 1 while the ticket backend is in an outage), not a count.
    def set_gauge(self, name: str, value: float) -> None:
        with self._lock:
            self._gauges[name] = value

    def gauge(self, name: str) -> float:
        with self._lock:
            return self._gauges.get(name, 0.0)

    def gauges(self) -> dict[str, float]:
        with self._lock:
            return dict(self._gauges)


METRICS = Metrics()
