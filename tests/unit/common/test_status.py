"""Domain errors become one google.rpc.Status each, and decode back whole."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2

from services.common.errors import (
    Code,
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


def test_an_error_with_endless_violations_stays_small_and_says_what_it_left_out() -> None:
    few = InvalidArgument(
        "bad inputs",
        field_violations=[FieldViolation(f"inputs.x{i}", "undeclared") for i in range(3)],
    )
    assert [
        v.field for v in describe_status(to_status_proto(few, "runtime.saga")).field_violations
    ] == [
        "inputs.x0",
        "inputs.x1",
        "inputs.x2",
    ]  # positive control: a short list is whole, with no count
    assert "fieldViolationsOmitted" not in describe_status(to_status_proto(few, "d")).metadata

    many = InvalidArgument(
        "é" * 5000,
        reason="INPUT_INVALID",
        metadata={f"k{i}": "v" * 10_000 for i in range(100)},
        field_violations=[
            FieldViolation(f"inputs.{'x' * 500}{i}", "d" * 500) for i in range(100_000)
        ],
        quota_violations=[QuotaViolation(f"scope:{i}", "unknown") for i in range(100_000)],
    )
    status = to_status_proto(many, "auth.saga")
    assert status.ByteSize() <= 4000
    assert len(status.message.encode()) <= 400
    decoded = describe_status(status)
    assert 0 < len(decoded.field_violations) <= 20
    kept = len(decoded.field_violations)
    assert decoded.metadata["fieldViolationsOmitted"] == str(100_000 - kept)
    assert decoded.metadata["quotaViolationsOmitted"] == str(
        100_000 - len(decoded.quota_violations)
    )
    assert (decoded.code, decoded.reason, decoded.domain) == (
        Code.INVALID_ARGUMENT,
        "INPUT_INVALID",
        "auth.saga",
    )
