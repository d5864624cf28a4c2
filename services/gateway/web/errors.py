"""One JSON error shape for the HTTP door, from the same `google.rpc.Status` the gRPC door
sends (`services.common.status.status_for`).

The body is Google's HTTP mapping of a Status (AIP-193):
`{"error": {"code": <http status>, "status": "<CANONICAL_CODE>", "message", "details": [...]}}`
with each detail as JSON carrying its `@type`, plus `reason` and `domain` copied from the
ErrorInfo to the top so a client need not search the details."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

from services.common.errors import Code, InvalidArgument
from services.common.status import status_for

DOMAIN = "gateway.saga"

HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}
"""gRPC code -> HTTP status, as the comments of google/rpc/code.proto map them."""


TOO_LARGE = "REQUEST_TOO_LARGE"
"""The one reason whose HTTP status is not its code's: a body over the limit is 413."""


def too_large(max_bytes: int) -> InvalidArgument:
    """The refusal of a request body larger than `max_bytes`."""
    return InvalidArgument(
        f"the request body is larger than {max_bytes} bytes",
        reason=TOO_LARGE,
        metadata={"maxBytes": str(max_bytes)},
    )


def status_of_reason(status: status_pb2.Status) -> int:
    """The HTTP status of `status`: its code's, except 413 for a body over the limit."""
    info = error_details_pb2.ErrorInfo()
    for detail in status.details:
        if detail.Unpack(info) and info.reason == TOO_LARGE:
            return 413
    return http_status(status.code)


def http_status(code: int) -> int:
    """The HTTP status of a gRPC code number (500 for a number that is no code)."""
    try:
        return HTTP_STATUS[Code(code)]
    except ValueError:
        return 500


def error_body(status: status_pb2.Status) -> dict[str, Any]:
    """The JSON error object of `status`."""
    details = [
        json_format.MessageToDict(detail, preserving_proto_field_name=True)
        for detail in status.details
    ]
    body: dict[str, Any] = {
        "code": status_of_reason(status),
        "status": Code(status.code).name if status.code in Code._value2member_map_ else "UNKNOWN",
        "message": status.message,
        "details": details,
    }
    info = error_details_pb2.ErrorInfo()
    for detail in status.details:
        if detail.Unpack(info):
            body["reason"] = info.reason
            body["domain"] = info.domain
            break
    return {"error": body}


def retry_after_seconds(status: status_pb2.Status) -> int | None:
    """Whole seconds of the status's RetryInfo (rounded up), when it has one."""
    retry = error_details_pb2.RetryInfo()
    for detail in status.details:
        if detail.Unpack(retry):
            delay = retry.retry_delay
            return max(1, int(delay.seconds) + (1 if delay.nanos else 0))
    return None


def error_response(
    error: BaseException, headers: dict[str, str] | None = None, *, status: int | None = None
) -> web.Response:
    """The HTTP response for an error a servicer raised or a peer answered; `status`
    overrides the code's HTTP status where HTTP has a more precise one (405, 413)."""
    rpc_status = status_for(error, DOMAIN)
    out = dict(headers or {})
    if (seconds := retry_after_seconds(rpc_status)) is not None:
        out["Retry-After"] = str(seconds)
    body = error_body(rpc_status)
    if status is None:
        status = int(body["error"]["code"])
    else:
        body["error"]["code"] = status
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
        headers=out,
    )
