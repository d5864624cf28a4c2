"""Domain errors: what any Saga module raises, without knowing about gRPC.

Every error maps to one gRPC status carrying exactly one `google.rpc.ErrorInfo` (AIP-193);
`services.common.status` does that translation in one place. The tree::

    SagaError                      base: code, reason, message, metadata, details
    ├── InvalidArgument            INVALID_ARGUMENT  (+ BadRequest field violations)
    ├── NotFound                   NOT_FOUND
    ├── AlreadyExists              ALREADY_EXISTS
    ├── PermissionDenied           PERMISSION_DENIED
    ├── Unauthenticated            UNAUTHENTICATED
    ├── FailedPrecondition         FAILED_PRECONDITION
    ├── Aborted                    ABORTED           (compare-and-set lost, a run interrupted)
    ├── Cancelled                  CANCELLED         (the work was cancelled by its caller)
    ├── ResourceExhausted          RESOURCE_EXHAUSTED (+ QuotaFailure, RetryInfo)
    ├── Unavailable                UNAVAILABLE       (+ RetryInfo)
    ├── DeadlineExceeded           DEADLINE_EXCEEDED
    ├── Unimplemented              UNIMPLEMENTED
    ├── DataLoss                   DATA_LOSS         (stored data failed its integrity check)
    └── Internal                   INTERNAL          (the message never carries internals)

`reason` is UPPER_SNAKE_CASE and stable (clients branch on it); `domain` names the service
that decided (`router.saga`) and is filled in by the server when the raiser leaves it empty;
metadata keys are lowerCamelCase.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class Code(enum.IntEnum):
    """The canonical status codes (numbers as in google/rpc/code.proto)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field (`google.rpc.BadRequest.FieldViolation`)."""

    field: str
    description: str
    reason: str = ""


@dataclass(frozen=True)
class QuotaViolation:
    """One exhausted quota (`google.rpc.QuotaFailure.Violation`)."""

    subject: str
    description: str


class SagaError(Exception):
    """Base of every error that crosses a service boundary as a gRPC status."""

    code: Code = Code.INTERNAL
    default_reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        field_violations: Sequence[FieldViolation] = (),
        quota_violations: Sequence[QuotaViolation] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.retry_after = retry_after
        self.field_violations = tuple(field_violations)
        self.quota_violations = tuple(quota_violations)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}, {self.reason}, {self.message!r})"


class InvalidArgument(SagaError):
    """The request is malformed; `field_violations` say which field and why."""

    code = Code.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class NotFound(SagaError):
    """The resource does not exist (or the caller may not know that it does)."""

    code = Code.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(SagaError):
    """The resource the caller tried to create exists."""

    code = Code.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class PermissionDenied(SagaError):
    """The caller is known but may not do this."""

    code = Code.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(SagaError):
    """The caller could not be identified."""

    code = Code.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class FailedPrecondition(SagaError):
    """The system is not in a state that allows this; retrying as-is will not help."""

    code = Code.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(SagaError):
    """A concurrent change won (compare-and-set; re-read and retry), or work stopped before
    it finished."""

    code = Code.ABORTED
    default_reason = "ABORTED"


class Cancelled(SagaError):
    """The work was cancelled by the caller that started it (e.g. a watched run whose client
    went away)."""

    code = Code.CANCELLED
    default_reason = "CANCELLED"


class ResourceExhausted(SagaError):
    """A quota, rate limit or budget is spent; `retry_after` says when to come back."""

    code = Code.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(SagaError):
    """A dependency is down or warming; safe to retry after `retry_after`."""

    code = Code.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DeadlineExceeded(SagaError):
    """The work did not finish inside the caller's deadline."""

    code = Code.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Unimplemented(SagaError):
    """The RPC is declared in the contract but not built yet."""

    code = Code.UNIMPLEMENTED
    default_reason = "NOT_IMPLEMENTED"


class DataLoss(SagaError):
    """Stored data failed its integrity check (a ciphertext that does not authenticate, a
    broken hash chain); never answered with whatever the bytes say."""

    code = Code.DATA_LOSS
    default_reason = "DATA_LOSS"


class Internal(SagaError):
    """A bug or an invariant broken on our side; details go to the logs, not the caller."""

    code = Code.INTERNAL
    default_reason = "INTERNAL"
