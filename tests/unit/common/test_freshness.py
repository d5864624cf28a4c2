"""The freshness gate's rule: FRESH runs; STALE runs only when allowed; WARMING is
UNAVAILABLE with RetryInfo until estimated_ready; ERROR and no pack are refused."""

from __future__ import annotations

import datetime

import pytest

from services.common.errors import Code, SagaError
from services.common.freshness import PackState, check_fresh

NOW = datetime.datetime(2025, 3, 10, 12, 0, tzinfo=datetime.UTC)


def refusal(state: PackState, allow_stale: bool = False) -> SagaError:
    with pytest.raises(SagaError) as error:
        check_fresh(state, allow_stale, NOW)
    return error.value


def test_fresh_runs_and_stale_runs_only_when_allowed() -> None:
    check_fresh(PackState("FRESH", "PP_a", "2025-03-10"), False, NOW)
    stale = PackState("STALE", "PP_a", "2025-03-10", pack_asof="2025-03-01")
    check_fresh(stale, True, NOW)
    error = refusal(stale)
    assert (error.code, error.reason) == (Code.FAILED_PRECONDITION, "PACK_STALE")
    assert error.metadata == {"packId": "PP_a", "asof": "2025-03-10", "packAsof": "2025-03-01"}


def test_warming_says_when_to_retry() -> None:
    ready = NOW + datetime.timedelta(seconds=7.5)
    error = refusal(PackState("WARMING", "PP_a", "2025-03-10", estimated_ready=ready), True)
    assert (error.code, error.reason, error.retry_after) == (Code.UNAVAILABLE, "PACK_WARMING", 7.5)
    assert error.metadata["estimatedReady"] == "2025-03-10T12:00:07.500000+00:00"
    late = refusal(PackState("WARMING", "PP_a", "2025-03-10", estimated_ready=NOW))
    assert late.retry_after == 1.0  # overdue: still at least a second


def test_failed_and_missing_packs_are_refused() -> None:
    failed = refusal(PackState("ERROR", "PP_a", "2025-03-10"), True)
    assert (failed.code, failed.reason) == (Code.FAILED_PRECONDITION, "PACK_RECONCILIATION_FAILED")
    missing = refusal(PackState("", "", "2025-03-10"), True)
    assert (missing.code, missing.reason, missing.metadata) == (
        Code.FAILED_PRECONDITION,
        "PACK_MISSING",
        {"asof": "2025-03-10"},
    )
