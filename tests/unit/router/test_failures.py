"""The provider error taxonomy: one gRPC code and reason per kind, and what the router does
after each (retry, fallback, the circuit's verdict)."""

from __future__ import annotations

import pytest

from services.common.config import ProviderConfig
from services.common.errors import (
    Code,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    SagaError,
    Unavailable,
)
from services.router.engines.base import (
    ProviderContentFiltered,
    ProviderContextTooLong,
    ProviderCredentialFailed,
    ProviderError,
    ProviderMisconfigured,
    ProviderRateLimited,
    ProviderRejectedInput,
    ProviderTimeout,
    ProviderUnauthenticated,
    ProviderUnavailable,
)
from services.router.failures import Verdict, circuit_open, classify, limit_reached

P1 = ProviderConfig(name="p1", kind="sim", model="m")


@pytest.mark.parametrize(
    ("error", "code", "reason", "retry_after", "retry", "fallback", "verdict"),
    [
        (
            ProviderUnavailable("x"),
            Code.UNAVAILABLE,
            "PROVIDER_UNAVAILABLE",
            1.0,
            True,
            True,
            Verdict.FAILURE,
        ),
        (
            ProviderRateLimited("x", retry_after=7),
            Code.RESOURCE_EXHAUSTED,
            "PROVIDER_RATE_LIMITED",
            7,
            True,
            True,
            Verdict.FAILURE,
        ),
        (
            ProviderUnauthenticated("x"),
            Code.UNAVAILABLE,
            "PROVIDER_AUTH_FAILED",
            None,
            False,
            True,
            Verdict.TRIP,
        ),
        (
            ProviderRejectedInput("x"),
            Code.INVALID_ARGUMENT,
            "PROVIDER_REJECTED_INPUT",
            None,
            False,
            False,
            Verdict.SUCCESS,
        ),
        (
            ProviderContextTooLong("x"),
            Code.INVALID_ARGUMENT,
            "PROVIDER_CONTEXT_LENGTH_EXCEEDED",
            None,
            False,
            True,
            Verdict.SUCCESS,
        ),
        (
            ProviderContentFiltered("x"),
            Code.INVALID_ARGUMENT,
            "PROVIDER_CONTENT_FILTERED",
            None,
            False,
            False,
            Verdict.SUCCESS,
        ),
        (
            ProviderMisconfigured("x"),
            Code.FAILED_PRECONDITION,
            "PROVIDER_MISCONFIGURED",
            None,
            False,
            True,
            Verdict.TRIP,
        ),
        (
            ProviderTimeout("x"),
            Code.DEADLINE_EXCEEDED,
            "PROVIDER_TIMEOUT",
            None,
            False,
            True,
            Verdict.FAILURE,
        ),
    ],
)
def test_each_kind_maps_to_one_status_and_one_course(
    error: ProviderError,
    code: Code,
    reason: str,
    retry_after: float | None,
    retry: bool,
    fallback: bool,
    verdict: Verdict,
) -> None:
    failure = classify(error, P1)
    status = failure.error
    assert (status.code, status.reason, status.retry_after) == (code, reason, retry_after)
    assert status.metadata == {"provider": "p1"}
    assert (failure.retry, failure.fallback, failure.verdict) == (retry, fallback, verdict)
    assert failure.larger_context is isinstance(error, ProviderContextTooLong)


def credential_failure(upstream: SagaError) -> ProviderCredentialFailed:
    return ProviderCredentialFailed("no credential", upstream)


def test_a_credential_failure_ends_with_auths_status_unchanged() -> None:
    upstream = FailedPrecondition("link again", reason="REAUTH_REQUIRED", domain="auth.saga")
    failure = classify(credential_failure(upstream), P1)
    assert failure.error is upstream
    assert (failure.retry, failure.fallback) == (False, True)


@pytest.mark.parametrize(
    ("credential", "upstream", "verdict"),
    [
        ("api_key", PermissionDenied("revoked", reason="PROVIDER_CLIENT_INVALID"), Verdict.TRIP),
        # A key not stored yet: the provider was never called, and the operator's fix must
        # work at once, not after a cooldown.
        ("api_key", NotFound("unset", reason="PROVIDER_KEY_NOT_SET"), Verdict.NONE),
        ("oauth_app", FailedPrecondition("refused", reason="REAUTH_REQUIRED"), Verdict.TRIP),
        # One user's account says nothing about the provider for everyone else.
        ("oauth_user", FailedPrecondition("relink", reason="REAUTH_REQUIRED"), Verdict.NONE),
        # Auth could not answer: nothing is known about the credential.
        ("api_key", Unavailable("auth down", reason="UPSTREAM_UNAVAILABLE"), Verdict.NONE),
    ],
)
def test_a_credential_failure_opens_the_circuit_only_for_a_shared_definitive_refusal(
    credential: str, upstream: SagaError, verdict: Verdict
) -> None:
    provider = ProviderConfig(name="p1", kind="openai", model="m", credential=credential)
    assert classify(credential_failure(upstream), provider).verdict is verdict


def test_router_refusals_carry_the_wait() -> None:
    opened = circuit_open("p1", 12.5)
    assert (opened.code, opened.reason, opened.retry_after) == (
        Code.UNAVAILABLE,
        "CIRCUIT_OPEN",
        12.5,
    )
    limited = limit_reached("p1", "p1: requests per minute reached", 0.5)
    assert (limited.code, limited.reason, limited.retry_after) == (
        Code.RESOURCE_EXHAUSTED,
        "PROVIDER_LIMIT_REACHED",
        0.5,
    )
    assert opened.metadata == limited.metadata == {"provider": "p1"}


def test_the_engines_metadata_joins_the_provider_and_cannot_replace_it() -> None:
    error = ProviderContentFiltered(
        "x", metadata={"providerCode": "content_filter", "provider": "spoofed"}
    )
    metadata = classify(error, P1).error.metadata
    assert metadata == {"provider": "p1", "providerCode": "content_filter"}
