"""The provider error taxonomy on the wire: one gRPC code and ErrorInfo reason per kind, and
which kinds let a call move to the next candidate."""

from __future__ import annotations

from services.common.errors import (
    DeadlineExceeded,
    InvalidArgument,
    ResourceExhausted,
    SagaError,
    Unavailable,
)
from services.router.engines.base import ErrorKind, ProviderError

DEFAULT_RETRY_AFTER_SECONDS = 1.0

FALLBACK_KINDS = frozenset(
    {ErrorKind.UNAVAILABLE, ErrorKind.RATE_LIMITED, ErrorKind.UNAUTHENTICATED, ErrorKind.TIMEOUT}
)
"""Failures another provider may not share. An input the provider refused stops the call
(SPEC 3.4; the context-length exception arrives with context windows in issue 5)."""


def provider_failure(error: ProviderError, provider: str) -> SagaError:
    """The status a call ends with when `provider` failed with `error`."""
    metadata = {"provider": provider}
    retry_after = error.retry_after or DEFAULT_RETRY_AFTER_SECONDS
    if error.kind is ErrorKind.RATE_LIMITED:
        return ResourceExhausted(
            error.message,
            reason="PROVIDER_RATE_LIMITED",
            metadata=metadata,
            retry_after=retry_after,
        )
    if error.kind is ErrorKind.UNAUTHENTICATED:
        # Our credential, not the caller's: the caller cannot fix it, so not UNAUTHENTICATED.
        return Unavailable(error.message, reason="PROVIDER_AUTH_FAILED", metadata=metadata)
    if error.kind is ErrorKind.INVALID_INPUT:
        return InvalidArgument(error.message, reason="PROVIDER_REJECTED_INPUT", metadata=metadata)
    if error.kind is ErrorKind.TIMEOUT:
        return DeadlineExceeded(error.message, reason="PROVIDER_TIMEOUT", metadata=metadata)
    return Unavailable(
        error.message, reason="PROVIDER_UNAVAILABLE", metadata=metadata, retry_after=retry_after
    )
