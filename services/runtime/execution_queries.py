"""What a ListExecutions request asks for, checked: its filters as an `ExecutionQuery`, its
page size, and who may read whose executions."""

from __future__ import annotations

import datetime

from google.protobuf import timestamp_pb2

from saga.execution.v1 import records_pb2
from saga.runtime.v1 import runtime_pb2
from services.common.errors import FieldViolation, InvalidArgument, PermissionDenied
from services.runtime.executions import ExecutionQuery, ExecutionStatus

READ_ANY_SCOPES = ("usage:read:all", "admin")
"""A caller with one of these may read every user's executions."""

MAX_EXECUTION_ID_CHARS = 64
MAX_PATTERN_ID_CHARS = 128
MAX_USER_ID_CHARS = 256
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_LATEST_SECONDS = 253_402_300_800  # 10000-01-01


def _invalid(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(
        f"{field}: {description}",
        reason="EXECUTION_QUERY_INVALID",
        field_violations=[FieldViolation(field, description)],
    )


def page_size(requested: int) -> int:
    """The page size to serve: 0 = the default, capped at MAX_PAGE_SIZE."""
    if requested < 0:
        raise _invalid("page_size", f"0 (the default, {DEFAULT_PAGE_SIZE}) to {MAX_PAGE_SIZE}")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _time(field: str, stamp: timestamp_pb2.Timestamp) -> str:
    if not (0 <= stamp.seconds < _LATEST_SECONDS and 0 <= stamp.nanos < 1_000_000_000):
        raise _invalid(field, "a time between 1970 and 9999")
    return stamp.ToDatetime(tzinfo=datetime.UTC).isoformat()


def execution_query(
    request: runtime_pb2.ListExecutionsRequest, user_id: str, any_user: bool
) -> ExecutionQuery:
    """The query of `request` made by `user_id` (`any_user`: it may read everyone's)."""
    if (request.user_id or request.all_users) and not any_user:
        raise PermissionDenied(
            "reading another user's executions needs scope usage:read:all or admin",
            reason="SCOPE_MISSING",
            metadata={"scope": "usage:read:all"},
        )
    if request.user_id and request.all_users:
        raise _invalid("user_id", "leave empty with all_users")
    if len(request.user_id) > MAX_USER_ID_CHARS:
        raise _invalid("user_id", f"at most {MAX_USER_ID_CHARS} characters")
    if len(request.pattern_id) > MAX_PATTERN_ID_CHARS:
        raise _invalid("pattern_id", f"at most {MAX_PATTERN_ID_CHARS} characters")
    status: ExecutionStatus | None = None
    if request.status != records_pb2.EXECUTION_STATUS_UNSPECIFIED:
        if request.status not in records_pb2.ExecutionStatus.values():
            raise _invalid("status", "one of " + ", ".join(records_pb2.ExecutionStatus.keys()))
        name = records_pb2.ExecutionStatus.Name(request.status)
        status = ExecutionStatus(name.removeprefix("EXECUTION_STATUS_"))
    return ExecutionQuery(
        user_id=None if request.all_users else (request.user_id or user_id),
        status=status,
        pattern_id=request.pattern_id,
        created_after=(
            _time("created_after", request.created_after)
            if request.HasField("created_after")
            else ""
        ),
        created_before=(
            _time("created_before", request.created_before)
            if request.HasField("created_before")
            else ""
        ),
    )
