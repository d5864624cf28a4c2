"""The bounds of a run's call options, checked the same way at the edge (the gateway's
Execute) and by the router (Reason): one definition, so neither accepts what the other
refuses. No gRPC here: each side raises its own `InvalidArgument` naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MAX_PROVIDER_NAMES = 64
"""Most names in `preferred_providers` or `allowed_providers`."""
MAX_PROVIDER_NAME_CHARS = 128
"""Longest provider name a caller may pass."""
MAX_COST_MICRO_USD = 10**12
"""Largest `max_cost_micro_usd` (a million USD): beyond it the limit means nothing."""
MAX_WEIGHT = 1_000_000.0
"""Largest CUSTOM weight, at the edge, in the router and in the optimizer's Rank: weights are
relative (normalised to sum to 1), a million to one is more than any preference needs, and
the sum of four such stays finite."""


def weights_problem(values: Sequence[float]) -> str:
    """Why the CUSTOM weights `values` (cost, latency, quality, reliability) cannot rank a
    call, or "" when they can: each finite and in 0..MAX_WEIGHT, not all 0."""
    if not all(math.isfinite(v) and 0 <= v <= MAX_WEIGHT for v in values):
        return f"each weight finite and between 0 and {MAX_WEIGHT:,.0f}"
    if not any(values):
        return "at least one weight above 0"
    return ""


def names_problem(names: Sequence[str]) -> str:
    """Why a list of provider names is out of bounds, or "" when it is not."""
    if len(names) > MAX_PROVIDER_NAMES:
        return f"at most {MAX_PROVIDER_NAMES} names"
    if any(not n or len(n) > MAX_PROVIDER_NAME_CHARS for n in names):
        return f"each name 1 to {MAX_PROVIDER_NAME_CHARS} characters"
    return ""
