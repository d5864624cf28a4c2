"""Retries inside one provider: when, how long to wait, and how many the provider can take.

A failed call is retried on the same provider only when the failure is transient or a rate
limit, no text has reached the caller, fewer than the provider's `max_retries` retries were
made, the wait fits the caller's deadline, and the provider's retry budget allows it (the
caller, `reasoning`, checks the first three). The wait is the common `Backoff` with full
jitter (a uniform draw between 0 and `initial * 2^(retry-1)`, capped) so a crowd of callers
does not retry in step; a `Retry-After` from the provider is honoured as a floor. A provider
asking for more than `max_backoff` is not waited for: the call moves to the next candidate.

A rate limit (429) that says nothing of when to come back is not retried after the ~100 ms
a 5xx gets — a throttled provider is not ready again that soon, and hammering it extends the
throttle: its wait is the rate-limit backoff (`rate_limit_backoff_ms`), at least half of its
cap and doubling per retry, still capped at `retry_max_backoff_ms`, and the retry still
needs the caller's deadline and the provider's retry budget to allow it.

The retry budget bounds the extra load retries put on a provider that is failing: over a
sliding window, retries may be at most `ratio` of the calls (20 % by default) plus a small
fixed allowance, so a quiet provider can still be retried. Without it every layer of
retries multiplies the load on a provider exactly when it can least take it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from services.common.backoff import Backoff
from services.common.config import RouterConfig
from services.common.windows import SlidingCounts


def retry_backoff(config: RouterConfig) -> Backoff:
    """The wait before a retry (RouterConfig `retry_*_backoff_ms`): full jitter."""
    return Backoff(
        config.retry_initial_backoff_ms / 1000, config.retry_max_backoff_ms / 1000, jitter=1.0
    )


def rate_limit_backoff(config: RouterConfig) -> Backoff:
    """The wait before retrying a 429 without Retry-After (RouterConfig
    `rate_limit_backoff_ms`): between half and all of a doubling cap, so throttled callers
    spread out but none comes back almost at once."""
    return Backoff(
        config.rate_limit_backoff_ms / 1000, config.retry_max_backoff_ms / 1000, jitter=0.5
    )


def retry_delay(
    backoff: Backoff,
    retry: int,
    retry_after: float | None = None,
    draw: Callable[[], float] = random.random,
    *,
    rate_limit: Backoff | None = None,
) -> float | None:
    """Seconds to wait before retry number `retry` (1 = the first), or None when the
    provider asks for longer than the backoff's `maximum`. `rate_limit` is the backoff of a
    429, used when the provider sent no Retry-After (None: not a rate limit)."""
    if retry_after is not None and retry_after > backoff.maximum:
        return None
    if rate_limit is not None and retry_after is None:
        return rate_limit.delay(retry, None, draw)
    return backoff.delay(retry, retry_after, draw)


class RetryBudget:
    """Retries a provider may take: at most `ratio` of its calls in the window, plus
    `minimum` (see the module docstring)."""

    def __init__(
        self,
        ratio: float = 0.2,
        minimum: int = 10,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ratio = ratio
        self._minimum = minimum
        self._clock = clock
        self._counts = SlidingCounts(window, ("calls", "retries"))

    @classmethod
    def from_config(
        cls, config: RouterConfig, clock: Callable[[], float] = time.monotonic
    ) -> RetryBudget:
        """The budget of a router configuration."""
        return cls(
            config.retry_budget_ratio,
            config.retry_budget_min,
            config.retry_budget_window_seconds,
            clock,
        )

    def note_call(self) -> None:
        """A first try was made (it earns `ratio` of a retry)."""
        self._counts.add(self._clock(), "calls")

    def try_spend(self) -> bool:
        """Take one retry from the budget; False (nothing taken) when it is spent."""
        now = self._clock()
        allowed = self._minimum + self._ratio * self._counts.total(now, "calls")
        if self._counts.total(now, "retries") + 1 > allowed:
            return False
        self._counts.add(now, "retries")
        return True
