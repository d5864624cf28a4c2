"""Values a request carries that are not what their field means — an enum number the contract
does not define, a date that is no date, a timestamp outside protobuf's range — are refused
with INVALID_ARGUMENT naming the field, through the gateway over all six real processes; the
same requests with the value corrected are the positive controls."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf import timestamp_pb2

from saga.execution.v1 import options_pb2
from saga.gateway.v1 import (
    account_pb2,
    account_pb2_grpc,
    admin_pb2,
    admin_pb2_grpc,
    execution_pb2,
    execution_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)
from services.common.status import describe
from tests.e2e.test_execute import bearer, chat
from tests.harness import Stack


async def execute(stack: Stack, request: execution_pb2.ExecuteRequest) -> list[str]:
    """The kinds of the run's events (raises the call's error)."""
    async with stack.gateway_channel() as ch:
        call = execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
            request, metadata=bearer(stack.admin_key()), timeout=30
        )
        return [str(e.WhichOneof("event")) async for e in call]


async def refused(call: object) -> tuple[grpc.StatusCode, str, str, list[str]]:
    """Code, reason, domain and violated fields of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    details = describe(err.value)
    return (
        err.value.code(),
        details.reason,
        details.domain,
        [v.field for v in details.field_violations],
    )


@pytest.mark.parametrize(
    ("field", "value", "reason", "domain"),
    [
        ("options.export_format", 3, "OPTION_INVALID", "gateway.saga"),
        ("options.export_format", 99, "OPTION_INVALID", "gateway.saga"),
        ("options.export_format", -1, "OPTION_INVALID", "gateway.saga"),
        # The gateway resolves asof (the freshness gate needs the date) with the rule the
        # runtime applies again (services/common/asof.py): it refuses first.
        *(
            ("asof", bad, "ASOF_INVALID", "gateway.saga")
            for bad in (
                "31/12/2024",
                "2025-02-30",
                "2025-1-01",
                " 2025-01-01",
                "2025-01-01T00:00:00Z",
                "20250101",
                "2999-01-01",  # after today
            )
        ),
    ],
)
async def test_a_value_that_is_not_its_fields_is_refused_naming_the_field(
    stack: Stack, field: str, value: object, reason: str, domain: str
) -> None:
    request = chat("hello")
    if field == "asof":
        request.asof = str(value)
    else:
        request.options.export_format = value  # type: ignore[assignment]  # undefined numbers
    assert await refused(execute(stack, request)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        reason,
        domain,
        [field],
    )


async def test_a_defined_export_format_and_a_real_asof_run(stack: Stack) -> None:
    request = chat("hello")
    request.options.export_format = options_pb2.EXPORT_FORMAT_CSV
    request.asof = "2025-01-02"
    kinds = await execute(stack, request)
    assert (kinds[0], kinds[-1]) == ("accepted", "completed")


@pytest.mark.parametrize(
    "stamp",
    [
        {"seconds": 1, "nanos": -1},  # nanos outside 0..999,999,999
        {"seconds": 1, "nanos": 1_000_000_000},
    ],
)
async def test_a_malformed_expires_at_is_refused(stack: Stack, stamp: dict[str, int]) -> None:
    expires = timestamp_pb2.Timestamp(seconds=int(time.time()) + 3600 + stamp["seconds"])
    expires.nanos = stamp["nanos"]
    async with stack.gateway_channel() as ch:
        accounts = account_pb2_grpc.AccountServiceStub(ch)
        request = account_pb2.CreateApiKeyRequest(name="odd-nanos", scopes=["execute"])
        request.expires_at.CopyFrom(expires)
        assert await refused(
            accounts.CreateApiKey(request, metadata=bearer(stack.admin_key()), timeout=10)
        ) == (grpc.StatusCode.INVALID_ARGUMENT, "EXPIRY_INVALID", "auth.saga", ["expires_at"])
        request.expires_at.nanos = 0  # the positive control
        created = await accounts.CreateApiKey(
            request, metadata=bearer(stack.admin_key()), timeout=10
        )
    assert created.info.expires_at.seconds == expires.seconds


async def test_every_other_request_enum_refuses_an_unknown_number(stack: Stack) -> None:
    # The guard for the rest of the gateway's request enums (each checked where it is used).
    strategy = chat("hello")
    strategy.options.strategy = 99  # type: ignore[assignment]
    assert (await refused(execute(stack, strategy)))[:2] == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "OPTION_INVALID",
    )
    async with stack.gateway_channel() as ch:
        admin = bearer(stack.admin_key())
        usage = usage_pb2.GetUsageRequest(all_users=True)
        usage.group_by.append(99)  # type: ignore[arg-type]
        assert (await refused(usage_pb2_grpc.UsageServiceStub(ch).GetUsage(usage, metadata=admin)))[
            :2
        ] == (grpc.StatusCode.INVALID_ARGUMENT, "USAGE_QUERY_INVALID")
        default = admin_pb2.SetDefaultStrategyRequest(strategy=99)  # type: ignore[arg-type]
        assert (
            await refused(
                admin_pb2_grpc.AdminServiceStub(ch).SetDefaultStrategy(default, metadata=admin)
            )
        )[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "STRATEGY_INVALID")
