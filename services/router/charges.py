"""What the caller is charged for one provider attempt, by `accounting.charge_policy`.

The provider's cost of an attempt is what the provider billed (or, flagged, what Saga
estimates it billed); the ledger keeps it for every attempt. The charge is what the caller
pays for it, never more than the cost:

* `all_attempts` — the cost of every attempt (failed, cut and cancelled ones included);
* `delivered_only` — the cost of the attempts whose output reached the caller: the one that
  answered, and any whose streamed text was relayed before it broke (a mid-stream
  continuation, a cancelled or cost-limited stream); 0 for the rest;
* `waive_upstream_failures` — 0 for an attempt that failed for a reason the caller did not
  cause (`CALLER_CAUSED` lists those it did: its input, its cost limit, going away); the
  cost for the rest.

A call's budget reservation settles to the sum of its attempts' charges.
"""

from __future__ import annotations

import enum

CALLER_CAUSED = frozenset(
    {
        "PROVIDER_REJECTED_INPUT",
        "PROVIDER_CONTEXT_LENGTH_EXCEEDED",
        "PROVIDER_CONTENT_FILTERED",
        "COST_LIMIT_EXCEEDED",
    }
)
"""Failure reasons of an attempt that the caller's request caused: charged under
`waive_upstream_failures` (every other failure reason is waived)."""


class ChargePolicy(enum.Enum):
    """The values of `accounting.charge_policy`."""

    ALL_ATTEMPTS = "all_attempts"
    DELIVERED_ONLY = "delivered_only"
    WAIVE_UPSTREAM_FAILURES = "waive_upstream_failures"


def charge(
    policy: ChargePolicy,
    cost: int,
    *,
    succeeded: bool,
    cancelled: bool,
    error_reason: str,
    delivered: bool,
) -> int:
    """The charge of an attempt that cost `cost`: it `succeeded`, was `cancelled` (the caller
    went away) or failed with `error_reason`; `delivered` = some of its output reached the
    caller."""
    if policy is ChargePolicy.DELIVERED_ONLY:
        return cost if succeeded or delivered else 0
    if policy is ChargePolicy.WAIVE_UPSTREAM_FAILURES:
        return cost if succeeded or cancelled or error_reason in CALLER_CAUSED else 0
    return cost
