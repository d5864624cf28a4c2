"""Rate limits at the edge: GCRA (the generic cell rate algorithm) and concurrency leases, in
memory.

GCRA keeps one number per key — the theoretical arrival time (TAT) of the next allowed
event — so a limit costs O(1) time and memory per caller and allows a burst without a
separate bucket refill loop. A concurrency slot is a lease with an expiry, renewed while its
run streams: a holder that dies stops renewing and its slot frees itself. The Redis-backed
store (`services.gateway.redis_limits`) runs the same arithmetic in one Lua script, so both
stores answer alike.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

MAX_KEYS = 100_000
CONCURRENCY_RETRY_SECONDS = 1.0
"""What RetryInfo says when every concurrency slot is held: a run's end cannot be foreseen,
and a refused Execute costs the caller nothing against its request rate."""


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

    @property
    def tolerance(self) -> float:
        """How far ahead of now the TAT may run: `burst` events' worth."""
        return self.interval * self.burst


@dataclass(frozen=True)
class Step:
    """One GCRA decision: the new TAT when allowed (None when refused), and what the caller
    is told (remaining events now, seconds until the whole burst is back, seconds to wait)."""

    tat: float | None
    remaining: int
    reset: float
    retry_after: float


def gcra_step(limit: Limit, stored_tat: float | None, now: float) -> Step:
    """Whether one more event fits `limit` given the stored TAT (the Lua script mirrors it)."""
    tat = now if stored_tat is None or stored_tat < now else stored_tat
    new_tat = tat + limit.interval
    over = new_tat - now - limit.tolerance
    if over > 0:
        return Step(None, 0, tat - now, over)
    remaining = math.floor((limit.tolerance - (new_tat - now)) / limit.interval + 1e-9)
    return Step(new_tat, remaining, new_tat - now, 0.0)


class Gcra:
    """Per-key GCRA limiter; `take` answers how long the caller must wait (0 = allowed)."""

    def __init__(self, limit: Limit) -> None:
        self._limit = limit
        self._tat: dict[str, float] = {}

    def take(self, key: str, now: float | None = None) -> float:
        """Count one event for `key` if allowed; else the seconds until it would be."""
        now = time.monotonic() if now is None else now
        step = gcra_step(self._limit, self._tat.get(key), now)
        if step.tat is None:
            return step.retry_after
        if len(self._tat) >= MAX_KEYS:
            self._tat = {k: v for k, v in self._tat.items() if v > now}
        self._tat[key] = step.tat
        return 0.0


@dataclass(frozen=True)
class Ask:
    """What one Execute asks of the limits. A `None` limit (or `concurrent` 0) is lifted."""

    rate_key: str
    rate: Limit | None
    global_rate: Limit | None
    lease_key: str
    concurrent: int
    lease_id: str
    lease_ttl: float


@dataclass(frozen=True)
class Verdict:
    """The answer: `refused` names the limit that said no ("" when admitted: "requests",
    "global" or "concurrent"); remaining and reset describe `Ask.rate` (for the
    x-ratelimit-* headers)."""

    refused: str
    retry_after: float
    remaining: int
    reset: float


class Leases(Protocol):
    """Where a concurrency lease is kept alive and given back."""

    async def renew(self, lease_key: str, lease_id: str, ttl: float) -> None:
        """Push the lease's expiry `ttl` seconds ahead (a lease already gone stays gone)."""
        ...

    async def release(self, lease_key: str, lease_id: str) -> None:
        """Give the slot back now."""
        ...


class LimitStore(Leases, Protocol):
    """Decides asks atomically: all limits are checked, and only an admitted ask counts."""

    async def decide(self, ask: Ask) -> tuple[Verdict, Leases]:
        """The verdict, and the store that keeps the lease it took (the fallback's, when a
        shared store failed over to local limits)."""
        ...


class MemoryLimits:
    """The limits of one gateway process (the default, and the fail-open fallback)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}
        self._leases: dict[str, dict[str, float]] = {}

    async def decide(self, ask: Ask) -> tuple[Verdict, Leases]:
        """Check the rate, the global rate and the slots; count them only if all allow."""
        now = self._clock()
        steps: list[tuple[str, Step]] = []
        for name, key, limit in (
            ("requests", ask.rate_key, ask.rate),
            ("global", "global", ask.global_rate),
        ):
            if limit is None:
                continue
            step = gcra_step(limit, self._tat.get(key), now)
            if step.tat is None:
                if name == "requests":
                    return Verdict(name, step.retry_after, 0, step.reset), self
                return Verdict(name, step.retry_after, *self._rate_view(ask, now)), self
            steps.append((key, step))
        held = self._live(ask.lease_key, now)
        if ask.concurrent and len(held) >= ask.concurrent:
            view = self._rate_view(ask, now)
            return Verdict("concurrent", CONCURRENCY_RETRY_SECONDS, *view), self
        if len(self._tat) >= MAX_KEYS:
            self._tat = {k: v for k, v in self._tat.items() if v > now}
        for key, step in steps:
            assert step.tat is not None
            self._tat[key] = step.tat
        if ask.concurrent:
            if len(self._leases) >= MAX_KEYS:
                self._leases = {k: v for k, v in self._leases.items() if self._live(k, now)}
            held[ask.lease_id] = now + ask.lease_ttl
            self._leases[ask.lease_key] = held
        if ask.rate is None:
            return Verdict("", 0.0, 0, 0.0), self
        rate = steps[0][1]
        return Verdict("", 0.0, rate.remaining, rate.reset), self

    def _rate_view(self, ask: Ask, now: float) -> tuple[int, float]:
        """Remaining and reset of `ask.rate` without counting an event."""
        if ask.rate is None:
            return 0, 0.0
        tat = max(self._tat.get(ask.rate_key, now), now)
        backlog = tat - now
        remaining = math.floor((ask.rate.tolerance - backlog) / ask.rate.interval + 1e-9)
        return max(0, remaining), backlog

    def _live(self, lease_key: str, now: float) -> dict[str, float]:
        held = self._leases.get(lease_key, {})
        return {lease: until for lease, until in held.items() if until > now}

    async def renew(self, lease_key: str, lease_id: str, ttl: float) -> None:
        """Push the lease's expiry ahead, if it is still held."""
        held = self._leases.get(lease_key)
        if held is not None and lease_id in held:
            held[lease_id] = self._clock() + ttl

    async def release(self, lease_key: str, lease_id: str) -> None:
        """Free the slot."""
        held = self._leases.get(lease_key)
        if held is not None:
            held.pop(lease_id, None)
            if not held:
                del self._leases[lease_key]


def client_address(peer: str) -> str:
    """The address part of a gRPC peer string (`ipv4:1.2.3.4:5678` -> `1.2.3.4`)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    return peer
