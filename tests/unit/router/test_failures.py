"""The provider error taxonomy: one gRPC code and reason per kind."""

from __future__ import annotations

import pytest

from services.common.errors import Code
from services.router.engines.base import (
    ProviderError,
    ProviderRateLimited,
    ProviderRejectedInput,
    ProviderTimeout,
    ProviderUnauthenticated,
    ProviderUnavailable,
)
from services.router.failures import FALLBACK_KINDS, provider_failure


@pytest.mark.parametrize(
    ("error", "code", "reason", "retry_after", "falls_back"),
    [
        (ProviderUnavailable("x"), Code.UNAVAILABLE, "PROVIDER_UNAVAILABLE", 1.0, True),
        (
            ProviderRateLimited("x", retry_after=7),
            Code.RESOURCE_EXHAUSTED,
            "PROVIDER_RATE_LIMITED",
            7,
            True,
        ),
        (ProviderUnauthenticated("x"), Code.UNAVAILABLE, "PROVIDER_AUTH_FAILED", None, True),
        (ProviderRejectedInput("x"), Code.INVALID_ARGUMENT, "PROVIDER_REJECTED_INPUT", None, False),
        (ProviderTimeout("x"), Code.DEADLINE_EXCEEDED, "PROVIDER_TIMEOUT", None, True),
    ],
)
def test_each_kind_maps_to_one_status(
    error: ProviderError, code: Code, reason: str, retry_after: float | None, falls_back: bool
) -> None:
    status = provider_failure(error, "p1")
    assert (status.code, status.reason, status.retry_after) == (code, reason, retry_after)
    assert status.metadata == {"provider": "p1"}
    assert (error.kind in FALLBACK_KINDS) is falls_back
