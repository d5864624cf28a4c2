"""Counts over a sliding time window, in constant memory.

The circuit breaker (failure ratio) and the retry budget (retries per call) both ask "how
many X in the last W seconds". `SlidingCounts` answers with one bucket per second of the
window: adding is O(1) and memory is bounded by the window's length however busy the
provider is. A bucket leaves the window whole, so the window is exact to within a second.
"""

from __future__ import annotations

import math
from collections import deque

BUCKET_SECONDS = 1.0


class SlidingCounts:
    """Named counters over the last `window` seconds (clock values are passed in)."""

    def __init__(self, window: float, names: tuple[str, ...]) -> None:
        self._buckets = max(1, math.ceil(window / BUCKET_SECONDS))
        self._names = names
        # (bucket index, counts in the order of `names`), oldest first.
        self._data: deque[tuple[int, list[int]]] = deque()
        self._totals = [0] * len(names)

    def _expire(self, now: float) -> int:
        current = math.floor(now / BUCKET_SECONDS)
        oldest = current - self._buckets + 1
        while self._data and self._data[0][0] < oldest:
            _, counts = self._data.popleft()
            for i, c in enumerate(counts):
                self._totals[i] -= c
        return current

    def add(self, now: float, name: str, count: int = 1) -> None:
        """Count `count` of `name` at time `now`."""
        current = self._expire(now)
        if not self._data or self._data[-1][0] != current:
            self._data.append((current, [0] * len(self._names)))
        i = self._names.index(name)
        self._data[-1][1][i] += count
        self._totals[i] += count

    def total(self, now: float, name: str) -> int:
        """How many of `name` were counted in the window ending at `now`."""
        self._expire(now)
        return self._totals[self._names.index(name)]

    def clear(self) -> None:
        """Forget everything counted."""
        self._data.clear()
        self._totals = [0] * len(self._names)
