"""Domain errors become one google.rpc.Status each, and decode back whole."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2

from services.common.errors import (
    FieldViolation,
    InvalidArgument,
    QuotaViolation,
    ResourceExhausted,
)
from services.common.status import (
    STATUS_DETAILS_KEY,
    RemoteError,
    describe_status,
    to_status_proto,
)


def test_status_carries_exactly_one_error_info_and_the_details() -> None:
    error = ResourceExhausted(
        "slow down",
        reason="RATE_LIMITED",
        metadata={"limit": "100"},
        retry_after=1.5,
        quota_violations=[QuotaViolation("user:u1", "100 requests/hour")],
    )
    status = to_status_proto(error, "gateway.saga")
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    assert len(infos) == 1
    decoded = describe_status(status)
    assert (decoded.reason, decoded.domain, decoded.metadata) == (
        "RATE_LIMITED",
        "gateway.saga",
        {"limit": "100"},
    )
    assert decoded.retry_after == 1.5
    assert decoded.quota_violations == [QuotaViolation("user:u1", "100 requests/hour")]


def test_raiser_domain_wins_over_the_servers() -> None:
    error = InvalidArgument(
        "bad prompt",
        reason="PROMPT_EMPTY",
        domain="router.saga",
        field_violations=[FieldViolation("messages", "must not be empty")],
    )
    decoded = describe_status(to_status_proto(error, "gateway.saga"))
    assert decoded.domain == "router.saga"
    assert decoded.field_violations == [FieldViolation("messages", "must not be empty")]


class _Failed(grpc.RpcError):
    def __init__(self, trailers: tuple[tuple[str, bytes], ...]) -> None:
        self._trailers = trailers

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "connection refused"

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self._trailers


def test_remote_error_keeps_the_upstream_status_byte_for_byte() -> None:
    upstream = to_status_proto(
        InvalidArgument("x", reason="PACK_WARMING", domain="runtime.saga", retry_after=3),
        "runtime.saga",
    )
    failed = _Failed(((STATUS_DETAILS_KEY, upstream.SerializeToString()),))
    failed.code = lambda: grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[method-assign]
    relayed = RemoteError.from_rpc_error(failed, "gateway.saga")
    assert to_status_proto(relayed, "gateway.saga").SerializeToString() == (
        upstream.SerializeToString()
    )


def test_transport_failure_gets_an_error_info_naming_who_saw_it() -> None:
    relayed = RemoteError.from_rpc_error(_Failed(()), "gateway.saga")
    decoded = describe_status(to_status_proto(relayed, "gateway.saga"))
    assert (decoded.reason, decoded.domain) == ("UPSTREAM_UNAVAILABLE", "gateway.saga")
    assert decoded.message == "connection refused"
