"""Rate limits at the edge: GCRA (the generic cell rate algorithm), in memory.

GCRA keeps one number per key — the theoretical arrival time (TAT) of the next allowed
event — so a limit costs O(1) time and memory per caller and allows a burst without a
separate bucket refill loop. The Redis-backed variant for replicas sharing limits follows
the same arithmetic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

MAX_KEYS = 100_000


@dataclass(frozen=True)
class Limit:
    """`count` events per `period` seconds, at most `burst` at once."""

    count: int
    period: float
    burst: int

    @property
    def interval(self) -> float:
        """Seconds between events at the sustained rate."""
        return self.period / self.count


class Gcra:
    """Per-key GCRA limiter; `take` answers how long the caller must wait (0 = allowed)."""

    def __init__(self, limit: Limit) -> None:
        self._limit = limit
        self._tat: dict[str, float] = {}

    def take(self, key: str, now: float | None = None) -> float:
        """Count one event for `key` if allowed; else the seconds until it would be."""
        now = time.monotonic() if now is None else now
        interval = self._limit.interval
        tolerance = interval * (self._limit.burst - 1)
        tat = max(self._tat.get(key, now), now)
        allowed_at = tat - tolerance
        if now < allowed_at:
            return allowed_at - now
        if len(self._tat) >= MAX_KEYS:
            self._tat = {k: v for k, v in self._tat.items() if v > now}
        self._tat[key] = tat + interval
        return 0.0


def client_address(peer: str) -> str:
    """The address part of a gRPC peer string (`ipv4:1.2.3.4:5678` -> `1.2.3.4`)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    return peer
