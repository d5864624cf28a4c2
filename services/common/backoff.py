"""How long to wait before trying again: one frozen policy, like Temporal's `RetryPolicy`.

The wait after the n-th consecutive failure has a ceiling, `initial · 2^(n-1)` capped at
`maximum`, and is drawn at random from the top `jitter` fraction of it, `[(1 - jitter) ·
ceiling, ceiling]`, so callers that failed together do not try again in step: `jitter` 1 is
"full jitter" (anywhere from 0), 0.5 keeps at least half the ceiling, 0 waits the ceiling
exactly. No wait is longer than `maximum`, except that a peer's Retry-After is a floor. The
random draw is a parameter so tests choose it. `max_attempts` bounds the tries (0: no bound).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

_MAX_DOUBLINGS = 62  # past this any sane ceiling is the cap, and 2.0**n stays finite


@dataclass(frozen=True)
class Backoff:
    """A retry policy: doubling waits from `initial` to `maximum`, jittered, for at most
    `max_attempts` tries (see the module docstring)."""

    initial: float
    maximum: float
    jitter: float = 0.5
    max_attempts: int = 0

    def delay(
        self,
        failures: int,
        retry_after: float | None = None,
        draw: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait after `failures` consecutive failures (1 = the first), never
        shorter than `retry_after`; `draw` gives a number in [0, 1]."""
        doublings = min(max(0, failures - 1), _MAX_DOUBLINGS)
        ceiling = min(self.maximum, self.initial * 2.0**doublings)
        jittered = ceiling * ((1.0 - self.jitter) + self.jitter * draw())
        return max(jittered, retry_after or 0.0)

    def exhausted(self, attempts: int) -> bool:
        """True when `attempts` tries were made and the policy allows no more."""
        return 0 < self.max_attempts <= attempts
