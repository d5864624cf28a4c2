"""The provider error taxonomy on the wire, and what the router does after each kind.

`classify` turns an engine's `ProviderError` into a `Failure`: the status the call ends with
if nothing else is tried (one gRPC code and ErrorInfo reason per kind), whether the same
provider may be retried, whether another candidate may be tried, and what the failure says
about the provider's health (its circuit's verdict):

| kind | status (reason) | retry | fallback | circuit |
|---|---|---|---|---|
| unavailable | UNAVAILABLE `PROVIDER_UNAVAILABLE` | yes | yes | failure |
| rate limited | RESOURCE_EXHAUSTED `PROVIDER_RATE_LIMITED` | yes | yes | failure |
| timeout | DEADLINE_EXCEEDED `PROVIDER_TIMEOUT` | no (time spent) | yes | failure |
| unauthenticated | UNAVAILABLE `PROVIDER_AUTH_FAILED` | no | yes | opens now |
| no credential | auth's own status, relayed | no | yes | opens if shared |
| context too long | INVALID_ARGUMENT `PROVIDER_CONTEXT_LENGTH_EXCEEDED` | no | wider | success |
| content policy | INVALID_ARGUMENT `PROVIDER_CONTENT_FILTERED` | no | no: stops | success |
| other input | INVALID_ARGUMENT `PROVIDER_REJECTED_INPUT` | no | no: stops | success |
| misconfigured (404/405) | FAILED_PRECONDITION `PROVIDER_MISCONFIGURED` | no | yes | opens now |

What the engine adds to the failure's ErrorInfo (`ProviderError.metadata`: the provider's
`providerCode` for a content-policy refusal, the `urlPath` a 404 answered) joins `provider`.
A content-policy refusal stops the call: another provider's policy is no way around one's
own. A 404/405 is the configuration's fault (a wrong base_url or model), so every call
would fail alike: not retried, the circuit opens at once, and the call moves on.

A credential failure (`ProviderCredentialFailed`: auth had no credential, e.g.
REAUTH_REQUIRED, PROVIDER_KEY_NOT_SET) ends the call with auth's status unchanged when no
candidate is left. It opens the provider's circuit when the credential is the provider's
own (api_key, oauth_app: every call would fail alike) and auth's answer is definitive —
not when it is one user's (oauth_user: REAUTH_REQUIRED for one user says nothing about the
others), nor when auth itself was unreachable. A provider that
refused an input answered, so for its circuit that is a success.

The router's own refusals, raised before any provider is called, are here too:
`circuit_open` and `limit_reached`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from services.common.config import ProviderConfig
from services.common.errors import (
    Code,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    SagaError,
    Unavailable,
)
from services.router.engines.base import ErrorKind, ProviderCredentialFailed, ProviderError

DEFAULT_RETRY_AFTER_SECONDS = 1.0

SHARED_CREDENTIALS = frozenset({"none", "api_key", "oauth_app"})
"""Credential kinds that are the same for every caller of a provider."""

TRANSIENT_CODES = frozenset({Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.RESOURCE_EXHAUSTED})
"""Auth's answers that say it could not answer now, not that there is no credential."""


class Verdict(enum.Enum):
    """What a failure says about the provider's health."""

    FAILURE = "failure"
    TRIP = "trip"
    """Open the circuit now."""
    SUCCESS = "success"
    """The provider answered (it refused the input)."""
    NONE = "none"
    """Nothing: the provider was not at fault, or not even called."""


@dataclass(frozen=True)
class Failure:
    """One failed attempt, decided."""

    error: SagaError
    """The status the call ends with when nothing else is tried."""
    retry: bool
    fallback: bool
    verdict: Verdict
    larger_context: bool = False
    """Fall back only to a provider with a larger context window."""
    retry_after: float | None = None
    """The provider's Retry-After, if it sent one."""
    rate_limited: bool = False
    """A 429: without Retry-After, its retry waits the longer rate-limit backoff."""


def provider_failure(error: ProviderError, provider: str) -> SagaError:
    """The status a call ends with when `provider` failed with `error`."""
    metadata = {**error.metadata, "provider": provider}
    retry_after = error.retry_after or DEFAULT_RETRY_AFTER_SECONDS
    if isinstance(error, ProviderCredentialFailed):
        return error.upstream
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
        if error.context_length_exceeded:
            return InvalidArgument(
                error.message, reason="PROVIDER_CONTEXT_LENGTH_EXCEEDED", metadata=metadata
            )
        if error.content_filtered:
            return InvalidArgument(
                error.message, reason="PROVIDER_CONTENT_FILTERED", metadata=metadata
            )
        return InvalidArgument(error.message, reason="PROVIDER_REJECTED_INPUT", metadata=metadata)
    if error.kind is ErrorKind.TIMEOUT:
        return DeadlineExceeded(error.message, reason="PROVIDER_TIMEOUT", metadata=metadata)
    if error.kind is ErrorKind.MISCONFIGURED:
        # The operator's to fix, not the caller's: FAILED_PRECONDITION, no RetryInfo.
        return FailedPrecondition(error.message, reason="PROVIDER_MISCONFIGURED", metadata=metadata)
    return Unavailable(
        error.message, reason="PROVIDER_UNAVAILABLE", metadata=metadata, retry_after=retry_after
    )


def classify(error: ProviderError, provider: ProviderConfig) -> Failure:
    """What the router does after `provider` failed with `error` (the module's table)."""
    status = provider_failure(error, provider.name)
    if isinstance(error, ProviderCredentialFailed):
        definitive = error.upstream.code not in TRANSIENT_CODES
        shared = provider.credential in SHARED_CREDENTIALS
        # A key that is simply not stored yet says nothing about the provider, and the
        # next fetch is not cached: opening the circuit would outlast the operator's fix.
        unset = error.upstream.reason == "PROVIDER_KEY_NOT_SET"
        trip = shared and definitive and not unset
        return Failure(status, False, True, Verdict.TRIP if trip else Verdict.NONE)
    kind = error.kind
    if kind is ErrorKind.INVALID_INPUT:
        larger = error.context_length_exceeded
        return Failure(status, False, larger, Verdict.SUCCESS, larger_context=larger)
    if kind in (ErrorKind.UNAUTHENTICATED, ErrorKind.MISCONFIGURED):
        return Failure(status, False, True, Verdict.TRIP)
    if kind is ErrorKind.TIMEOUT:
        return Failure(status, False, True, Verdict.FAILURE)
    return Failure(
        status,
        True,
        True,
        Verdict.FAILURE,
        retry_after=error.retry_after,
        rate_limited=kind is ErrorKind.RATE_LIMITED,
    )


def circuit_open(provider: str, retry_after: float) -> Unavailable:
    """The provider's circuit refuses calls for `retry_after` more seconds."""
    return Unavailable(
        f"{provider}: circuit open after repeated failures",
        reason="CIRCUIT_OPEN",
        metadata={"provider": provider},
        retry_after=max(retry_after, 0.001),
    )


def limit_reached(provider: str, message: str, retry_after: float) -> ResourceExhausted:
    """The provider is at one of the limits the router keeps for it."""
    return ResourceExhausted(
        message,
        reason="PROVIDER_LIMIT_REACHED",
        metadata={"provider": provider},
        retry_after=max(retry_after, 0.001),
    )
