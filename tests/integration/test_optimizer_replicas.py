"""Two optimizer processes on one PostgreSQL agree on the live metrics and the rankings: the
outcomes one of them records reach the other's metrics and its routers' WatchRankings
snapshot (each replica re-reads its window from the shared ledger), and an operator's
UpdateMetrics through either — new priors, or samples reset — holds on both."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from saga.execution.v1 import common_pb2
from saga.optimizer.v1 import metrics_pb2, optimizer_pb2, optimizer_pb2_grpc
from tests.conftest import PG_URL, drop_schemas
from tests.harness import Stack, stack_for
from tests.integration.test_optimizer_metrics import (
    PROVIDERS,
    next_snapshot_where,
    order,
    outcome,
    record,
    watch_rankings,
)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    namespace = f"t{secrets.token_hex(6)}"
    try:
        async with stack_for(
            tmp_path,
            ["optimizer"],
            config=PROVIDERS,
            replicas={"optimizer": 2},
            SAGA_STORAGE__URL=PG_URL,
            SAGA_STORAGE__NAMESPACE=namespace,
        ) as s:
            yield s
    finally:
        await drop_schemas(namespace)


async def metrics_of(stack: Stack, replica: str, provider: str) -> metrics_pb2.ProviderMetrics:
    """`provider`'s metrics as the optimizer process `replica` holds them."""
    async with stack.channel_as("gateway", replica) as ch:
        reply = await optimizer_pb2_grpc.OptimizerServiceStub(ch).GetMetrics(
            optimizer_pb2.GetMetricsRequest(providers=[provider]), timeout=5
        )
    (metrics,) = reply.metrics
    return metrics


async def eventually(stack: Stack, replica: str, provider: str, **expected: float) -> None:
    """Wait (10 s at most) until `replica` reports `expected` for `provider`."""
    deadline = time.monotonic() + 10
    while True:
        got = await metrics_of(stack, replica, provider)
        seen = {k: getattr(got, k) for k in expected}
        if seen == expected:
            return
        assert time.monotonic() < deadline, f"{replica} still has {seen}, not {expected}"
        await asyncio.sleep(0.1)


async def test_outcomes_recorded_by_one_replica_rerank_the_other(stack: Stack) -> None:
    async with (
        stack.channel_as("router", "optimizer") as first_ch,
        stack.channel_as("router", "optimizer-2") as second_ch,
    ):
        first = optimizer_pb2_grpc.OptimizerServiceStub(first_ch)
        watch, initial = await watch_rankings(
            optimizer_pb2_grpc.OptimizerServiceStub(second_ch), common_pb2.STRATEGY_FASTEST
        )
        assert order(initial, common_pb2.STRATEGY_FASTEST) == ["quick", "steady"]
        # Twenty slow outcomes, all recorded through the first replica ...
        await record(first, [outcome(n, "quick", ttft_ms=2000, latency_ms=5000) for n in range(20)])
        # ... turn "quick" slow in the snapshot the second one pushes to its routers.
        await asyncio.wait_for(
            next_snapshot_where(watch, common_pb2.STRATEGY_FASTEST, ["steady", "quick"]), 10
        )
        watch.cancel()
    for replica in ("optimizer", "optimizer-2"):
        await eventually(stack, replica, "quick", samples=20, p50_latency_ms=5000)


async def test_update_metrics_through_one_replica_holds_on_both(stack: Stack) -> None:
    async with stack.channel_as("router", "optimizer") as ch:
        await record(
            optimizer_pb2_grpc.OptimizerServiceStub(ch),
            [outcome(n, "steady", ttft_ms=900) for n in range(5)],
        )
    await eventually(stack, "optimizer-2", "steady", samples=5)
    async with stack.channel_as("gateway", "optimizer-2") as ch:
        await optimizer_pb2_grpc.OptimizerServiceStub(ch).UpdateMetrics(
            optimizer_pb2.UpdateMetricsRequest(
                priors=[
                    metrics_pb2.ProviderPrior(provider="steady", quality=0.7, reset_samples=True)
                ]
            ),
            timeout=5,
        )
    # The other replica takes the prior, and drops the samples for good: its next re-read of
    # the ledger does not bring them back.
    await eventually(stack, "optimizer", "steady", quality=pytest.approx(0.7), samples=0)
    await asyncio.sleep(1.5)  # more than one re-read of the shared window
    for replica in ("optimizer", "optimizer-2"):
        await eventually(stack, replica, "steady", samples=0)


async def test_a_default_strategy_set_through_one_replica_holds_on_both(stack: Stack) -> None:
    async with stack.channel_as("gateway", "optimizer-2") as ch:
        await optimizer_pb2_grpc.OptimizerServiceStub(ch).SetDefaultStrategy(
            optimizer_pb2.SetDefaultStrategyRequest(strategy=common_pb2.STRATEGY_CHEAPEST),
            timeout=5,
        )
    async with stack.channel_as("router", "optimizer") as ch:
        watch, first = await watch_rankings(
            optimizer_pb2_grpc.OptimizerServiceStub(ch), common_pb2.STRATEGY_CHEAPEST
        )
        snapshot = first
        while snapshot.default_strategy != common_pb2.STRATEGY_CHEAPEST:
            read = await asyncio.wait_for(watch.read(), 10)
            assert isinstance(read, optimizer_pb2.WatchRankingsResponse)
            snapshot = read
        watch.cancel()
    # And a restart keeps it (over optimizer.default_strategy, BALANCED).
    assert stack.stop("optimizer") == 0
    stack.start("optimizer")
    await stack.wait_serving("optimizer")
    async with stack.channel_as("router", "optimizer") as ch:
        watch, first = await watch_rankings(
            optimizer_pb2_grpc.OptimizerServiceStub(ch), common_pb2.STRATEGY_CHEAPEST
        )
        watch.cancel()
    assert first.default_strategy == common_pb2.STRATEGY_CHEAPEST
