"""The optimizer over real processes: Rank, WatchRankings snapshots and their updates,
SetDefaultStrategy (gateway only), RecordOutcomes deduplication, and watch streams that end
cleanly when the optimizer shuts down. Live metrics, the ledger and budgets have their own
test_optimizer_* modules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from saga.execution.v1 import common_pb2
from saga.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc, ranking_pb2
from services.common.status import describe
from tests.harness import Stack

PROVIDERS = """
[[providers]]
name = "smart"
kind = "sim"
model = "sim-smart"
quality = 0.95
latency_ms = 900
ttft_ms = 150
input_micro_usd_per_mtok = 3_000_000
output_micro_usd_per_mtok = 15_000_000

[[providers]]
name = "cheap"
kind = "sim"
model = "sim-cheap"
quality = 0.4
latency_ms = 300
ttft_ms = 50
input_micro_usd_per_mtok = 1_000_000
output_micro_usd_per_mtok = 2_000_000
capabilities = ["chat"]

[[providers]]
name = "flaky"
kind = "sim"
model = "sim-flaky"
success_rate = 0.3
"""

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
    s = Stack.create(tmp_path_factory.mktemp("optimizer"), config=PROVIDERS)
    try:
        await s.start_all(["optimizer"])
        yield s
    finally:
        s.stop_all()


@pytest.fixture
async def as_router(stack: Stack) -> AsyncIterator[optimizer_pb2_grpc.OptimizerServiceAsyncStub]:
    async with stack.channel_as("router", "optimizer") as ch:
        yield optimizer_pb2_grpc.OptimizerServiceStub(ch)


async def test_rank_orders_by_strategy_with_breakdown_and_exclusions(
    as_router: optimizer_pb2_grpc.OptimizerServiceAsyncStub,
) -> None:
    cheapest = await as_router.Rank(
        optimizer_pb2.RankRequest(strategy=S.STRATEGY_CHEAPEST), timeout=5
    )
    assert [r.provider for r in cheapest.ranked] == ["cheap", "smart"]
    assert cheapest.strategy == S.STRATEGY_CHEAPEST
    assert cheapest.weights == ranking_pb2.Weights(cost=1.0)
    # 500 input and 500 output tokens by default, at 1 and 2 micro-USD per token.
    assert cheapest.ranked[0].breakdown.estimated_cost_micro_usd == 1500
    assert (cheapest.ranked[0].score, cheapest.ranked[1].score) == (1.0, 0.0)
    assert [(e.provider, e.reason) for e in cheapest.excluded] == [
        ("flaky", ranking_pb2.EXCLUSION_REASON_LOW_SUCCESS_RATE)
    ]
    quality = await as_router.Rank(
        optimizer_pb2.RankRequest(strategy=S.STRATEGY_QUALITY), timeout=5
    )
    assert [r.provider for r in quality.ranked] == ["smart", "cheap"]


async def test_rank_applies_capabilities_candidates_and_the_default(
    as_router: optimizer_pb2_grpc.OptimizerServiceAsyncStub,
) -> None:
    streaming = await as_router.Rank(
        optimizer_pb2.RankRequest(
            strategy=S.STRATEGY_CHEAPEST, required_capabilities=["streaming"]
        ),
        timeout=5,
    )
    assert [r.provider for r in streaming.ranked] == ["smart"]
    assert ("cheap", ranking_pb2.EXCLUSION_REASON_MISSING_CAPABILITY) in [
        (e.provider, e.reason) for e in streaming.excluded
    ]
    only_smart = await as_router.Rank(
        optimizer_pb2.RankRequest(strategy=S.STRATEGY_CHEAPEST, candidates=["smart"]), timeout=5
    )
    assert [r.provider for r in only_smart.ranked] == ["smart"]
    default = await as_router.Rank(optimizer_pb2.RankRequest(), timeout=5)
    assert default.strategy == S.STRATEGY_BALANCED
    assert default.weights == ranking_pb2.Weights(cost=0.5, latency=0.3, quality=0.2)


@pytest.mark.parametrize(
    ("req", "reason", "field"),
    [
        (optimizer_pb2.RankRequest(candidates=["nobody"]), "UNKNOWN_PROVIDER", "candidates"),
        (
            optimizer_pb2.RankRequest(estimated_input_tokens=-1),
            "RANK_REQUEST_INVALID",
            "estimated_input_tokens",
        ),
        (
            optimizer_pb2.RankRequest(
                strategy=S.STRATEGY_CUSTOM, weights=ranking_pb2.Weights(cost=-1, quality=1)
            ),
            "WEIGHTS_INVALID",
            "weights",
        ),
        (optimizer_pb2.RankRequest(strategy=S.STRATEGY_CUSTOM), "WEIGHTS_INVALID", "weights"),
    ],
)
async def test_bad_rank_requests_name_their_field(
    as_router: optimizer_pb2_grpc.OptimizerServiceAsyncStub,
    req: optimizer_pb2.RankRequest,
    reason: str,
    field: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await as_router.Rank(req, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = describe(err.value)
    assert (details.reason, details.domain) == (reason, "optimizer.saga")
    assert [v.field for v in details.field_violations] == [field]
    # Positive control: custom weights that are valid rank.
    ok = await as_router.Rank(
        optimizer_pb2.RankRequest(
            strategy=S.STRATEGY_CUSTOM, weights=ranking_pb2.Weights(quality=1)
        ),
        timeout=5,
    )
    assert ok.ranked[0].provider == "smart"


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


async def test_set_default_strategy_is_for_the_gateway_and_needs_a_strategy(
    stack: Stack, as_router: optimizer_pb2_grpc.OptimizerServiceAsyncStub
) -> None:
    req = optimizer_pb2.SetDefaultStrategyRequest(strategy=S.STRATEGY_BALANCED)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await as_router.SetDefaultStrategy(req, timeout=5)
    assert describe(err.value).reason == "CALLER_NOT_ALLOWED"
    async with stack.channel_as("gateway", "optimizer") as ch:
        admin = optimizer_pb2_grpc.OptimizerServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await admin.SetDefaultStrategy(optimizer_pb2.SetDefaultStrategyRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert describe(err.value).reason == "STRATEGY_INVALID"
        # Positive control: the gateway setting a real strategy succeeds.
        reply = await admin.SetDefaultStrategy(req, timeout=5)
        assert reply.strategy == S.STRATEGY_BALANCED


def outcome(outcome_id: str) -> optimizer_pb2.Outcome:
    return optimizer_pb2.Outcome(
        outcome_id=outcome_id,
        execution_id=outcome_id.split(":")[0],
        provider="cheap",
        status=optimizer_pb2.OUTCOME_STATUS_SUCCEEDED,
    )


async def test_record_outcomes_counts_each_id_once(
    stack: Stack, as_router: optimizer_pb2_grpc.OptimizerServiceAsyncStub
) -> None:
    batches = [
        optimizer_pb2.RecordOutcomesRequest(outcomes=[outcome("exe_a:s:1"), outcome("exe_a:s:2")]),
        optimizer_pb2.RecordOutcomesRequest(outcomes=[outcome("exe_a:s:2")]),
    ]
    reply = await as_router.RecordOutcomes(iter(batches), timeout=5)
    assert (reply.accepted, reply.duplicates) == (2, 1)
    again = await as_router.RecordOutcomes(iter(batches[:1]), timeout=5)
    assert (again.accepted, again.duplicates) == (0, 2)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await as_router.RecordOutcomes(
            iter([optimizer_pb2.RecordOutcomesRequest(outcomes=[outcome("")])]), timeout=5
        )
    assert describe(err.value).reason == "OUTCOMES_INVALID"
    assert [v.field for v in describe(err.value).field_violations] == ["outcomes[0].outcome_id"]


async def test_watch_streams_end_cleanly_when_the_optimizer_stops(tmp_path: Path) -> None:
    lone = Stack.create(tmp_path, config=PROVIDERS, SAGA_SERVER__GRACE_SECONDS="30")
    try:
        await lone.start_all(["optimizer"])
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
    finally:
        lone.stop_all()
