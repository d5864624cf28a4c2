"""Errors of the OpenAI-compatible API in OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`, from the same `google.rpc.Status` the
gRPC door sends (`services.common.status.status_for`).

The HTTP status is the one `google/rpc/code.proto` gives the code (`errors.http_status`),
which is what the OpenAI SDKs map to their exception classes: 400 BadRequestError, 401
AuthenticationError, 403 PermissionDeniedError, 404 NotFoundError, 409 ConflictError, 429
RateLimitError, 5xx InternalServerError. `code` is Saga's ErrorInfo reason (docs/errors.md),
`param` the first field violation's field, as OpenAI names the parameter. A refusal with
RetryInfo sends `Retry-After`; a 429 without one, or for a spent budget or the run's cost
limit (`type` insufficient_quota), sends `x-should-retry: false`, which the SDKs obey
instead of retrying what cannot succeed before the budget's period ends."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web
from google.rpc import error_details_pb2, status_pb2

from services.common.errors import Code
from services.common.status import status_for
from services.gateway.web.errors import (
    DOMAIN,
    http_status,
    retry_after_seconds,
    status_of_reason,
)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "conflict_error",
    429: "rate_limit_error",
}
_QUOTA_REASONS = frozenset({"BUDGET_EXHAUSTED", "COST_LIMIT_EXCEEDED"})
_PARAMS = {
    "end_user": "user",
    "tool_choice.name": "tool_choice",
    "response_format.name": "response_format.json_schema.name",
    "response_format.schema_json": "response_format.json_schema.schema",
}
"""Fields the router (or the chat pattern) names otherwise than OpenAI's parameters."""
_TOOL_FIELD = re.compile(r"tools\[(\d+)\]\.(name|description|parameters_json)")
"""The router's `tools[i].<field>` (TOOLS_INVALID): OpenAI's `tools[i].function.<field>`."""


def _param(field: str) -> str:
    name = field.removeprefix("inputs.")
    if match := _TOOL_FIELD.fullmatch(name):
        return f"tools[{match[1]}].function.{match[2].removesuffix('_json')}"
    return _PARAMS.get(name, name)


def openai_error(status: status_pb2.Status) -> dict[str, Any]:
    """The `error` object of `status`."""
    info = error_details_pb2.ErrorInfo()
    violations = error_details_pb2.BadRequest()
    param = None
    for detail in status.details:
        if detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(violations.DESCRIPTOR):
            detail.Unpack(violations)
            if violations.field_violations:
                param = _param(violations.field_violations[0].field)
    code = http_status(status.code)
    kind = _TYPES.get(code, "server_error" if code >= 500 else "invalid_request_error")
    if info.reason in _QUOTA_REASONS:
        kind = "insufficient_quota"
    return {
        "message": status.message,
        "type": kind,
        "param": param,
        "code": info.reason or Code(status.code).name,
    }


def openai_error_response(
    error: BaseException, headers: dict[str, str] | None = None
) -> web.Response:
    """The HTTP response for an error of a chat completion or a models call."""
    status = status_for(error, DOMAIN)
    out = dict(headers or {})
    code = status_of_reason(status)
    seconds = retry_after_seconds(status)
    if seconds is not None:
        out["Retry-After"] = str(seconds)
    body = openai_error(status)
    if code == 429 and (seconds is None or body["type"] == "insufficient_quota"):
        out["x-should-retry"] = "false"
    return web.Response(
        status=code,
        text=json.dumps({"error": body}),
        content_type="application/json",
        headers=out,
    )
