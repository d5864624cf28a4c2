"""Waiting before reconnecting to a peer: capped exponential backoff with jitter."""

from __future__ import annotations

import random


def reconnect_delay(failures: int, initial: float, maximum: float) -> float:
    """Seconds to wait after `failures` consecutive failures: doubling from `initial` up to
    `maximum`, then jittered to 50-100 % so replicas that failed together spread out."""
    delay = min(maximum, initial * 2.0 ** max(0, failures - 1))
    return delay * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not security
