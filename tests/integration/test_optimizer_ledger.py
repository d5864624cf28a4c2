"""The usage ledger over real processes, on SQLite and PostgreSQL: the router's outbox resends
are stored once (also across an optimizer restart), GetUsage (gateway only) aggregates what
was stored, and bad usage queries name their field."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from saga.execution.v1 import common_pb2, records_pb2
from saga.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
from services.common.status import describe
from tests.conftest import Backend
from tests.harness import Stack, stack_for

PROVIDERS = """
[[providers]]
name = "cheap"
kind = "sim"
model = "sim-cheap"

[[providers]]
name = "smart"
kind = "sim"
model = "sim-smart"
"""
D = records_pb2
MARCH_1 = int(dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC).timestamp())
MARCH_2 = int(dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC).timestamp())


@pytest.fixture
async def stack(tmp_path: Path, backend: Backend) -> AsyncIterator[Stack]:
    async with stack_for(tmp_path, ["optimizer"], config=PROVIDERS, **backend.env()) as s:
        yield s


def outcome(
    outcome_id: str, user: str, provider: str, cost: int, at: int, **extra: object
) -> optimizer_pb2.Outcome:
    message = optimizer_pb2.Outcome(
        outcome_id=outcome_id,
        user_id=user,
        session_id=f"ses_{user}",
        execution_id=outcome_id.split(":")[0],
        step_id="answer",
        pattern_id="chat",
        provider=provider,
        model=f"sim-{provider}",
        usage=common_pb2.Usage(
            input_tokens=100, output_tokens=20, total_tokens=120, cached_tokens=5
        ),
        cost_micro_usd=cost,
        latency_ms=400,
        ttft_ms=50,
        status=optimizer_pb2.OUTCOME_STATUS_SUCCEEDED,
        price_table_version="prices-test",
    )
    for key, value in extra.items():
        setattr(message, key, value)
    message.occurred_at.FromSeconds(at)
    return message


BATCH = [
    outcome("exe_1:answer:1", "usr_a", "cheap", 100, MARCH_1),
    outcome(
        "exe_1:answer:2",
        "usr_a",
        "smart",
        0,
        MARCH_1,
        status=optimizer_pb2.OUTCOME_STATUS_FAILED,
        error_reason="PROVIDER_UNAVAILABLE",
        retry_count=2,
    ),
    outcome("exe_2:answer:1", "usr_b", "smart", 900, MARCH_2),
]


async def send(stack: Stack, *batches: list[optimizer_pb2.Outcome]) -> tuple[int, int]:
    async with stack.channel_as("router", "optimizer") as ch:
        reply = await optimizer_pb2_grpc.OptimizerServiceStub(ch).RecordOutcomes(
            iter([optimizer_pb2.RecordOutcomesRequest(outcomes=b) for b in batches]), timeout=10
        )
    return reply.accepted, reply.duplicates


async def usage(stack: Stack, **fields: object) -> optimizer_pb2.GetUsageResponse:
    request = optimizer_pb2.GetUsageRequest(
        start_date="2026-03-01",
        end_date="2026-03-02",
        **fields,  # type: ignore[arg-type]
    )
    async with stack.channel_as("gateway", "optimizer") as ch:
        reply: optimizer_pb2.GetUsageResponse = await optimizer_pb2_grpc.OptimizerServiceStub(
            ch
        ).GetUsage(request, timeout=10)
    return reply


async def test_resent_outcomes_are_stored_once_even_across_a_restart(stack: Stack) -> None:
    assert await send(stack, BATCH) == (3, 0)
    assert await send(stack, BATCH) == (0, 3)
    totals = (await usage(stack, all_users=True)).totals
    assert (totals.calls, totals.cost_micro_usd, totals.input_tokens) == (3, 1000, 300)

    assert stack.stop("optimizer") == 0
    await stack.start_all(["optimizer"])
    # The rows were kept, and the dedupe lives in the database, not in memory.
    again = (await usage(stack, all_users=True)).totals
    assert (again.calls, again.cost_micro_usd) == (3, 1000)
    fresh = outcome("exe_3:answer:1", "usr_a", "cheap", 7, MARCH_2)
    assert await send(stack, [*BATCH, fresh]) == (1, 3)


async def test_usage_aggregates_by_the_requested_dimensions(stack: Stack) -> None:
    await send(stack, BATCH)
    by_user = await usage(stack, all_users=True, group_by=[D.USAGE_DIMENSION_USER])
    assert [(r.user_id, r.calls, r.cost_micro_usd) for r in by_user.rows] == [
        ("usr_a", 2, 100),
        ("usr_b", 1, 900),
    ]
    default = await usage(stack, user_id="usr_a")  # provider, model and day
    assert [(r.provider, r.model, r.day, r.calls) for r in default.rows] == [
        ("cheap", "sim-cheap", "2026-03-01", 1),
        ("smart", "sim-smart", "2026-03-01", 1),
    ]
    assert default.totals.calls == 2
    by_session_day = await usage(
        stack, all_users=True, group_by=[D.USAGE_DIMENSION_SESSION, D.USAGE_DIMENSION_DAY]
    )
    assert [(r.session_id, r.day) for r in by_session_day.rows] == [
        ("ses_usr_a", "2026-03-01"),
        ("ses_usr_b", "2026-03-02"),
    ]
    by_model = await usage(stack, user_id="usr_b", group_by=[D.USAGE_DIMENSION_MODEL])
    assert [(r.model, r.cost_micro_usd, r.provider) for r in by_model.rows] == [
        ("sim-smart", 900, "")
    ]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"start_date": "2026-02-30"}, "start_date"),
        ({"end_date": "02/03/2026"}, "end_date"),
        ({"start_date": "2024-01-01"}, "start_date"),  # over 366 days
        ({"user_id": ""}, "user_id"),
        ({"group_by": [0]}, "group_by"),
    ],
)
async def test_bad_usage_queries_name_their_field(
    stack: Stack, fields: dict[str, object], field: str
) -> None:
    request = optimizer_pb2.GetUsageRequest(
        start_date="2026-03-01", end_date="2026-03-02", user_id="usr_a"
    )
    for key, value in fields.items():
        if isinstance(value, list):
            getattr(request, key).extend(value)
        else:
            setattr(request, key, value)
    async with stack.channel_as("gateway", "optimizer") as ch:
        gateway = optimizer_pb2_grpc.OptimizerServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await gateway.GetUsage(request, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = describe(err.value)
        assert (details.reason, details.domain) == ("USAGE_QUERY_INVALID", "optimizer.saga")
        assert [v.field for v in details.field_violations] == [field]
        # Positive control: the untouched request is answered.
        ok = optimizer_pb2.GetUsageRequest(
            start_date="2026-03-01", end_date="2026-03-02", user_id="usr_a"
        )
        assert (await gateway.GetUsage(ok, timeout=5)).totals.calls == 0


async def test_usage_is_for_the_gateway_and_outcomes_for_the_router(stack: Stack) -> None:
    request = optimizer_pb2.GetUsageRequest(user_id="usr_a")
    async with stack.channel_as("router", "optimizer") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await optimizer_pb2_grpc.OptimizerServiceStub(ch).GetUsage(request, timeout=5)
        assert describe(err.value).reason == "CALLER_NOT_ALLOWED"
    async with stack.channel_as("gateway", "optimizer") as ch:
        gateway = optimizer_pb2_grpc.OptimizerServiceStub(ch)
        assert (await gateway.GetUsage(request, timeout=5)).totals.calls == 0
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await gateway.RecordOutcomes(
                iter([optimizer_pb2.RecordOutcomesRequest(outcomes=BATCH)]), timeout=5
            )
        assert describe(err.value).reason == "CALLER_NOT_ALLOWED"


async def test_one_bad_outcome_is_rejected_alone_and_the_batch_recorded(stack: Stack) -> None:
    bad = outcome("exe_9:answer:1", "u" * 300, "cheap", 50, MARCH_1)  # over the 256 cap
    late = outcome("exe_9:answer:2", "usr_a", "cheap", 60, MARCH_1, latency_ms=-1)
    batch = [BATCH[0], bad, BATCH[1], late, BATCH[2]]
    async with stack.channel_as("router", "optimizer") as ch:
        reply = await optimizer_pb2_grpc.OptimizerServiceStub(ch).RecordOutcomes(
            iter([optimizer_pb2.RecordOutcomesRequest(outcomes=batch)]), timeout=10
        )
    assert (reply.accepted, reply.duplicates) == (3, 0)
    assert sorted(reply.accepted_ids) == sorted(o.outcome_id for o in BATCH)
    assert [(r.outcome_id, r.index, r.field, r.problem) for r in reply.rejected] == [
        ("exe_9:answer:1", 1, "user_id", "at most 256 characters"),
        ("exe_9:answer:2", 3, "latency_ms", "must not be negative"),
    ]
    totals = (await usage(stack, all_users=True)).totals
    assert (totals.calls, totals.cost_micro_usd) == (3, 1000)
    assert "u" * 300 not in stack.read_log("optimizer")  # the field named, never its value
