"""What the caller is charged for one attempt under each `accounting.charge_policy`."""

from __future__ import annotations

import pytest

from services.common.config import CHARGE_POLICIES
from services.router.charges import ChargePolicy, charge

ALL, DELIVERED, WAIVE = (
    ChargePolicy.ALL_ATTEMPTS,
    ChargePolicy.DELIVERED_ONLY,
    ChargePolicy.WAIVE_UPSTREAM_FAILURES,
)

OK, CANCELLED, FAILED = "succeeded", "cancelled", "failed"

# How an attempt ended, its failure reason, whether its text was relayed -> the charge of a
# 100 µUSD attempt under all_attempts / delivered_only / waive_upstream_failures.
CASES = [
    (OK, "", True, (100, 100, 100)),  # answered
    (OK, "", False, (100, 100, 100)),  # answered in complete mode
    (FAILED, "PROVIDER_UNAVAILABLE", True, (100, 100, 0)),  # cut after relayed text
    (FAILED, "PROVIDER_UNAVAILABLE", False, (100, 0, 0)),  # cut, nothing relayed
    (FAILED, "PROVIDER_TIMEOUT", True, (100, 100, 0)),  # idle timeout mid-stream
    (FAILED, "ROUTER_STOPPED", True, (100, 100, 0)),  # the router's provisional record
    (FAILED, "PROVIDER_REJECTED_INPUT", False, (100, 0, 100)),  # the caller's input
    (FAILED, "COST_LIMIT_EXCEEDED", True, (100, 100, 100)),  # the caller's own limit
    (CANCELLED, "", True, (100, 100, 100)),  # the caller went away mid-stream
    (CANCELLED, "", False, (100, 0, 100)),  # ... before any text
]


@pytest.mark.parametrize(("ended", "reason", "delivered", "expected"), CASES)
def test_each_policy_charges_what_it_says(
    ended: str, reason: str, delivered: bool, expected: tuple[int, int, int]
) -> None:
    charged = tuple(
        charge(
            policy,
            100,
            succeeded=ended == OK,
            cancelled=ended == CANCELLED,
            error_reason=reason,
            delivered=delivered,
        )
        for policy in (ALL, DELIVERED, WAIVE)
    )
    assert charged == expected


def test_policies_are_the_configuration_choices() -> None:
    assert tuple(p.value for p in ChargePolicy) == CHARGE_POLICIES
