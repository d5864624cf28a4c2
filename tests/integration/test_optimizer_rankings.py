"""The optimizer over real processes: WatchRankings snapshots and their updates, and watch
streams that end cleanly when the optimizer shuts down. Rank, SetDefaultStrategy and
RecordOutcomes are tested on the servicer in process (tests/unit/optimizer/test_servicer.py,
over the same providers); live metrics, the ledger and budgets have their own
test_optimizer_* modules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from saga.execution.v1 import common_pb2
from saga.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc, ranking_pb2
from tests.harness import Stack, stack_for
from tests.unit.optimizer.test_servicer import PROVIDERS

S = common_pb2
ALL_FIVE = [
    S.STRATEGY_CHEAPEST,
    S.STRATEGY_FASTEST,
    S.STRATEGY_QUALITY,
    S.STRATEGY_BALANCED,
    S.STRATEGY_RELIABLE,
]


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with stack_for(
        tmp_path_factory.mktemp("optimizer"), ["optimizer"], config=PROVIDERS
    ) as s:
        yield s


@pytest.fixture
async def as_router(stack: Stack) -> AsyncIterator[optimizer_pb2_grpc.OptimizerServiceAsyncStub]:
    async with stack.channel_as("router", "optimizer") as ch:
        yield optimizer_pb2_grpc.OptimizerServiceStub(ch)


async def test_watch_sends_a_snapshot_then_one_per_default_change(stack: Stack) -> None:
    async with (
        stack.channel_as("router", "optimizer") as router_ch,
        stack.channel_as("gateway", "optimizer") as gateway_ch,
    ):
        watch = optimizer_pb2_grpc.OptimizerServiceStub(router_ch).WatchRankings(
            optimizer_pb2.WatchRankingsRequest(), timeout=30
        )
        first = await asyncio.wait_for(watch.read(), 5)
        assert isinstance(first, optimizer_pb2.WatchRankingsResponse)
        assert [r.strategy for r in first.rankings] == ALL_FIVE
        assert first.default_strategy == S.STRATEGY_BALANCED
        assert first.price_table.version.startswith("prices-")
        assert {p.provider for p in first.price_table.prices} == {"smart", "cheap", "flaky"}
        by_strategy = {r.strategy: [p.provider for p in r.ranked] for r in first.rankings}
        assert by_strategy[S.STRATEGY_CHEAPEST] == ["cheap", "smart"]
        assert by_strategy[S.STRATEGY_QUALITY] == ["smart", "cheap"]

        admin = optimizer_pb2_grpc.OptimizerServiceStub(gateway_ch)
        try:
            reply = await admin.SetDefaultStrategy(
                optimizer_pb2.SetDefaultStrategyRequest(
                    strategy=S.STRATEGY_CUSTOM, weights=ranking_pb2.Weights(quality=3, cost=1)
                ),
                timeout=5,
            )
            assert reply.weights == ranking_pb2.Weights(cost=0.25, quality=0.75)
            second = await asyncio.wait_for(watch.read(), 5)
            assert isinstance(second, optimizer_pb2.WatchRankingsResponse)
            assert second.snapshot_version > first.snapshot_version
            assert second.default_strategy == S.STRATEGY_CUSTOM
            # The default is custom now: its ranking travels with the snapshot.
            assert [r.strategy for r in second.rankings] == [*ALL_FIVE, S.STRATEGY_CUSTOM]
        finally:
            await admin.SetDefaultStrategy(
                optimizer_pb2.SetDefaultStrategyRequest(strategy=S.STRATEGY_BALANCED), timeout=5
            )
        third = await asyncio.wait_for(watch.read(), 5)
        assert isinstance(third, optimizer_pb2.WatchRankingsResponse)
        assert third.default_strategy == S.STRATEGY_BALANCED
        watch.cancel()


async def test_watch_can_ask_for_some_strategies(
    as_router: optimizer_pb2_grpc.OptimizerServiceAsyncStub,
) -> None:
    watch = as_router.WatchRankings(
        optimizer_pb2.WatchRankingsRequest(strategies=[S.STRATEGY_QUALITY]), timeout=30
    )
    snapshot = await asyncio.wait_for(watch.read(), 5)
    assert isinstance(snapshot, optimizer_pb2.WatchRankingsResponse)
    assert [r.strategy for r in snapshot.rankings] == [S.STRATEGY_QUALITY]
    watch.cancel()


async def test_watch_streams_end_cleanly_when_the_optimizer_stops(tmp_path: Path) -> None:
    async with stack_for(
        tmp_path, ["optimizer"], config=PROVIDERS, SAGA_SERVER__GRACE_SECONDS="30"
    ) as lone:
        async with lone.channel_as("router", "optimizer") as ch:
            watch = optimizer_pb2_grpc.OptimizerServiceStub(ch).WatchRankings(
                optimizer_pb2.WatchRankingsRequest(), timeout=60
            )
            assert await asyncio.wait_for(watch.read(), 5) is not grpc.aio.EOF
            lone.processes["optimizer"].send_signal(15)
            # The stream ends with OK at the start of the shutdown; it is not held for the
            # 30 s grace period and then cut.
            assert await asyncio.wait_for(watch.read(), 10) is grpc.aio.EOF
            assert await watch.code() == grpc.StatusCode.OK
        assert await asyncio.to_thread(lone.processes["optimizer"].wait, 20) == 0
