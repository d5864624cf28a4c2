"""Errors on the wire: `SagaError` ⇄ `google.rpc.Status`, in one place for every service.

Server side, `abort` turns a domain error into a status with exactly one `ErrorInfo` plus
`RetryInfo` / `BadRequest` / `QuotaFailure` where they apply. Client side, `RemoteError`
captures an upstream status whole, so a service that cannot handle it re-raises it and the
next hop sees the original code, reason, domain and details (relayed byte for byte).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from services.common.errors import Code, FieldViolation, Internal, QuotaViolation, SagaError

STATUS_DETAILS_KEY = "grpc-status-details-bin"

# Bounds on what one error may carry. The status travels in the trailers (base64, beside the
# percent-encoded message), and grpc refuses trailers over 8 KiB (`grpc.max_metadata_size`):
# an unbounded list of violations would turn a precise INVALID_ARGUMENT into a
# RESOURCE_EXHAUSTED about header sizes, and would let a caller make a service build
# megabytes. The first violations that fit are kept and the rest counted in ErrorInfo
# metadata (`fieldViolationsOmitted`, `quotaViolationsOmitted`).
MAX_MESSAGE_BYTES = 400
MAX_VIOLATIONS = 20
MAX_STATUS_BYTES = 4000  # with every violation dropped, the rest always fits (~3 KB at most)
_MAX_TEXT = 200  # a violation's field, description, subject
_MAX_METADATA = 16
_MAX_KEY = 48
_MAX_VALUE = 96


def _text(value: str, limit: int = _MAX_TEXT) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _message(value: str) -> str:
    encoded = value.encode()
    if len(encoded) <= MAX_MESSAGE_BYTES:
        return value
    return encoded[: MAX_MESSAGE_BYTES - 3].decode(errors="ignore") + "…"


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _status(error: SagaError, domain: str, keep: int) -> status_pb2.Status:
    """The status with at most `keep` field and quota violations each."""
    metadata = {
        k[:_MAX_KEY]: _text(v, _MAX_VALUE) for k, v in list(error.metadata.items())[:_MAX_METADATA]
    }
    for key, violations in (
        ("fieldViolationsOmitted", error.field_violations),
        ("quotaViolationsOmitted", error.quota_violations),
    ):
        if len(violations) > keep:
            metadata[key] = str(len(violations) - keep)
    status = status_pb2.Status(code=int(error.code), message=_message(error.message))
    status.details.append(
        _pack(
            error_details_pb2.ErrorInfo(
                reason=error.reason[:_MAX_KEY], domain=error.domain or domain, metadata=metadata
            )
        )
    )
    if error.retry_after is not None:
        seconds = max(0.0, error.retry_after)
        whole = math.floor(seconds)
        status.details.append(
            _pack(
                error_details_pb2.RetryInfo(
                    retry_delay=duration_pb2.Duration(
                        seconds=whole, nanos=int((seconds - whole) * 1e9)
                    )
                )
            )
        )
    if error.field_violations and keep:
        status.details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=_text(v.field),
                            description=_text(v.description),
                            reason=v.reason[:_MAX_KEY],
                        )
                        for v in error.field_violations[:keep]
                    ]
                )
            )
        )
    if error.quota_violations and keep:
        status.details.append(
            _pack(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(
                            subject=_text(v.subject), description=_text(v.description)
                        )
                        for v in error.quota_violations[:keep]
                    ]
                )
            )
        )
    return status


def to_status_proto(error: SagaError, domain: str) -> status_pb2.Status:
    """The `google.rpc.Status` for a domain error; `domain` fills in an empty one. Bounded
    to `MAX_STATUS_BYTES`: violations that do not fit are dropped from the end and counted."""
    if isinstance(error, RemoteError):
        return error.status
    keep = min(MAX_VIOLATIONS, max(len(error.field_violations), len(error.quota_violations)))
    status = _status(error, domain, keep)
    while keep and status.ByteSize() > MAX_STATUS_BYTES:
        keep //= 2
        status = _status(error, domain, keep)
    return status


def status_for(error: BaseException, domain: str) -> status_pb2.Status:
    """The status a handler that raised `error` ends its call with: a domain error's own, an
    upstream call's unchanged, anything else INTERNAL (its text is never sent)."""
    if isinstance(error, grpc.aio.AioRpcError):
        error = RemoteError.from_rpc_error(error, domain)
    elif not isinstance(error, SagaError):
        error = Internal("internal error")
    return to_status_proto(error, domain)


async def abort(
    context: grpc.aio.ServicerContext[object, object], status: status_pb2.Status
) -> None:
    """End the RPC with `status` (raises, as `context.abort` does), keeping the trailing
    metadata the handler set before it failed (e.g. the gateway's x-ratelimit-* values)."""
    kept = tuple(
        (key, value)
        for key, value in context.trailing_metadata() or ()
        if key != STATUS_DETAILS_KEY
    )
    await context.abort(
        grpc.StatusCode[code_pb2.Code.Name(status.code)],
        status.message,
        (*kept, (STATUS_DETAILS_KEY, status.SerializeToString())),
    )


@dataclass
class ErrorDetails:
    """Everything a client may want from a failed call, decoded."""

    code: Code
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    retry_after: float | None = None
    field_violations: list[FieldViolation] = field(default_factory=list)
    quota_violations: list[QuotaViolation] = field(default_factory=list)


def status_of(error: grpc.RpcError) -> status_pb2.Status:
    """The upstream `google.rpc.Status` of a failed call (built from the code if absent)."""
    trailers: Any = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            if status.code == error.code().value[0]:
                return status
    code = error.code()
    return status_pb2.Status(code=code.value[0], message=str(error.details() or ""))


def describe(error: grpc.RpcError) -> ErrorDetails:
    """Decode a failed call's status and details (what clients and tests read)."""
    return describe_status(status_of(error))


def describe_status(status: status_pb2.Status) -> ErrorDetails:
    """Decode a `google.rpc.Status` and its standard details."""
    out = ErrorDetails(code=Code(status.code), message=status.message)
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            out.reason, out.domain, out.metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            out.retry_after = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.field_violations = [
                FieldViolation(v.field, v.description, v.reason) for v in bad.field_violations
            ]
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
            out.quota_violations = [
                QuotaViolation(v.subject, v.description) for v in quota.violations
            ]
    return out


class RemoteError(SagaError):
    """An upstream service's error, kept whole so re-raising relays it unchanged."""

    def __init__(self, status: status_pb2.Status) -> None:
        details = describe_status(status)
        super().__init__(
            status.message,
            reason=details.reason or Code(status.code).name,
            domain=details.domain,
            metadata=details.metadata,
            retry_after=details.retry_after,
            field_violations=details.field_violations,
            quota_violations=details.quota_violations,
        )
        self.code = Code(status.code)
        self.status = status

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError, domain: str) -> RemoteError:
        """Wrap a failed upstream call; a status without ErrorInfo (a transport failure,
        say) gets one in `domain`, reason `UPSTREAM_<CODE>`, so the caller still learns
        who decided."""
        status = status_of(error)
        if not any(d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR) for d in status.details):
            status.details.append(
                _pack(
                    error_details_pb2.ErrorInfo(
                        reason=f"UPSTREAM_{Code(status.code).name}", domain=domain
                    )
                )
            )
        return cls(status)
