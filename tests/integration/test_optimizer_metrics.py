"""Live metrics over real processes: outcomes the router reports move GetMetrics and the
rankings, and the routers' WatchRankings snapshot reflects a provider turned slow or failing
within a second; a restart warms the metrics up from the ledger; UpdateMetrics (gateway only)
sets priors that survive a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from saga.execution.v1 import common_pb2
from saga.optimizer.v1 import metrics_pb2, optimizer_pb2, optimizer_pb2_grpc
from services.common.status import describe
from tests.harness import Stack, stack_for

PROVIDERS = """
[optimizer]
publish_interval_ms = 200

[[providers]]
name = "quick"
kind = "sim"
model = "sim-quick"
latency_ms = 300
ttft_ms = 40

[[providers]]
name = "steady"
kind = "sim"
model = "sim-steady"
latency_ms = 800
ttft_ms = 150
success_rate = 0.98
"""
PUBLISH_INTERVAL = 0.2


def outcome(
    n: int, provider: str, *, ttft_ms: int = 40, latency_ms: int = 300, failed: bool = False
) -> optimizer_pb2.Outcome:
    message = optimizer_pb2.Outcome(
        outcome_id=f"exe_{provider}_{time.time_ns()}:s:{n}",
        user_id="usr_metrics",
        provider=provider,
        model=f"sim-{provider}",
        latency_ms=latency_ms,
        ttft_ms=ttft_ms,
        status=optimizer_pb2.OUTCOME_STATUS_FAILED
        if failed
        else optimizer_pb2.OUTCOME_STATUS_SUCCEEDED,
        error_reason="PROVIDER_UNAVAILABLE" if failed else "",
    )
    message.occurred_at.GetCurrentTime()
    return message


async def record(
    router: optimizer_pb2_grpc.OptimizerServiceAsyncStub, outcomes: list[optimizer_pb2.Outcome]
) -> None:
    reply = await router.RecordOutcomes(
        iter([optimizer_pb2.RecordOutcomesRequest(outcomes=outcomes)]), timeout=10
    )
    assert reply.accepted == len(outcomes)


def order(snapshot: optimizer_pb2.WatchRankingsResponse, strategy: int) -> list[str]:
    ranking = next(r for r in snapshot.rankings if r.strategy == strategy)
    return [p.provider for p in ranking.ranked]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with stack_for(tmp_path, ["optimizer"], config=PROVIDERS) as s:
        yield s


async def next_snapshot_where(
    watch: grpc.aio.UnaryStreamCall[
        optimizer_pb2.WatchRankingsRequest, optimizer_pb2.WatchRankingsResponse
    ],
    strategy: int,
    expected: list[str],
) -> optimizer_pb2.WatchRankingsResponse:
    while True:
        snapshot = await watch.read()
        assert isinstance(snapshot, optimizer_pb2.WatchRankingsResponse)
        if order(snapshot, strategy) == expected:
            return snapshot


Watch = grpc.aio.UnaryStreamCall[
    optimizer_pb2.WatchRankingsRequest, optimizer_pb2.WatchRankingsResponse
]


async def watch_rankings(
    router: optimizer_pb2_grpc.OptimizerServiceAsyncStub, strategy: int
) -> tuple[Watch, optimizer_pb2.WatchRankingsResponse]:
    """A WatchRankings of one strategy, and the first snapshot it gave."""
    watch = router.WatchRankings(
        optimizer_pb2.WatchRankingsRequest(strategies=[strategy]), timeout=60
    )
    first = await asyncio.wait_for(watch.read(), 5)
    assert isinstance(first, optimizer_pb2.WatchRankingsResponse)
    return watch, first


async def test_a_provider_turned_slow_drops_in_the_routers_snapshot_within_a_second(
    stack: Stack,
) -> None:
    async with stack.channel_as("router", "optimizer") as ch:
        router = optimizer_pb2_grpc.OptimizerServiceStub(ch)
        watch, first = await watch_rankings(router, common_pb2.STRATEGY_FASTEST)
        assert order(first, common_pb2.STRATEGY_FASTEST) == ["quick", "steady"]
        # A few slow outcomes do not flip it (the priors hold) ...
        await record(router, [outcome(n, "quick", ttft_ms=2000, latency_ms=5000) for n in range(3)])
        metrics = await gateway_metrics(stack, "quick")
        assert (metrics.samples, metrics.p50_ttft_ms) == (3, 40)
        # ... twenty do, and the watching router sees it within a second (five publish
        # intervals).
        await record(
            router, [outcome(n, "quick", ttft_ms=2000, latency_ms=5000) for n in range(3, 23)]
        )
        flipped = await asyncio.wait_for(
            next_snapshot_where(watch, common_pb2.STRATEGY_FASTEST, ["steady", "quick"]),
            PUBLISH_INTERVAL * 5,
        )
        assert flipped.snapshot_version > first.snapshot_version
        metrics = await gateway_metrics(stack, "quick")
        assert (metrics.p50_ttft_ms, metrics.p50_latency_ms) == (2000, 5000)
        watch.cancel()
    # A restart warms the live metrics up from the ledger: the slowness is not forgotten.
    assert stack.stop("optimizer") == 0
    await stack.start_all(["optimizer"])
    restarted = await gateway_metrics(stack, "quick")
    assert (restarted.samples, restarted.p50_ttft_ms) == (23, 2000)


async def test_a_failing_provider_is_excluded_from_reliable_within_a_second(
    stack: Stack,
) -> None:
    async with stack.channel_as("router", "optimizer") as ch:
        router = optimizer_pb2_grpc.OptimizerServiceStub(ch)
        watch = router.WatchRankings(
            optimizer_pb2.WatchRankingsRequest(strategies=[common_pb2.STRATEGY_RELIABLE]),
            timeout=60,
        )
        first = await asyncio.wait_for(watch.read(), 5)
        assert isinstance(first, optimizer_pb2.WatchRankingsResponse)
        assert order(first, common_pb2.STRATEGY_RELIABLE) == ["quick", "steady"]
        await record(router, [outcome(n, "quick", failed=True) for n in range(20)])
        dropped = await asyncio.wait_for(
            next_snapshot_where(watch, common_pb2.STRATEGY_RELIABLE, ["steady"]),
            PUBLISH_INTERVAL * 5,
        )
        excluded = dropped.rankings[0].excluded
        assert [(e.provider, e.reason) for e in excluded] == [
            ("quick", 2)  # EXCLUSION_REASON_LOW_SUCCESS_RATE
        ]
        # Rank (the router's fallback when it has no snapshot) agrees.
        ranked = await router.Rank(
            optimizer_pb2.RankRequest(strategy=common_pb2.STRATEGY_RELIABLE), timeout=5
        )
        assert [r.provider for r in ranked.ranked] == ["steady"]
        watch.cancel()


async def gateway_metrics(stack: Stack, provider: str) -> metrics_pb2.ProviderMetrics:
    async with stack.channel_as("gateway", "optimizer") as ch:
        reply = await optimizer_pb2_grpc.OptimizerServiceStub(ch).GetMetrics(
            optimizer_pb2.GetMetricsRequest(providers=[provider]), timeout=5
        )
    (metrics,) = reply.metrics
    return metrics


async def test_get_metrics_starts_from_the_priors_and_is_for_the_gateway(stack: Stack) -> None:
    async with stack.channel_as("gateway", "optimizer") as ch:
        gateway = optimizer_pb2_grpc.OptimizerServiceStub(ch)
        reply = await gateway.GetMetrics(optimizer_pb2.GetMetricsRequest(), timeout=5)
        assert [m.provider for m in reply.metrics] == ["quick", "steady"]
        steady = reply.metrics[1]
        assert (steady.p50_latency_ms, steady.p50_ttft_ms, steady.samples) == (800, 150, 0)
        assert steady.success_rate == pytest.approx(0.98)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await gateway.GetMetrics(
                optimizer_pb2.GetMetricsRequest(providers=["nobody"]), timeout=5
            )
        assert describe(err.value).reason == "UNKNOWN_PROVIDER"
    async with stack.channel_as("router", "optimizer") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await optimizer_pb2_grpc.OptimizerServiceStub(ch).GetMetrics(
                optimizer_pb2.GetMetricsRequest(), timeout=5
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert describe(err.value).reason == "CALLER_NOT_ALLOWED"


async def test_update_metrics_sets_priors_that_rerank_and_survive_a_restart(stack: Stack) -> None:
    async with stack.channel_as("router", "optimizer") as ch:
        router = optimizer_pb2_grpc.OptimizerServiceStub(ch)
        watch = router.WatchRankings(
            optimizer_pb2.WatchRankingsRequest(strategies=[common_pb2.STRATEGY_QUALITY]),
            timeout=60,
        )
        first = await asyncio.wait_for(watch.read(), 5)
        assert isinstance(first, optimizer_pb2.WatchRankingsResponse)
        # Equal quality priors: the name breaks the tie.
        assert order(first, common_pb2.STRATEGY_QUALITY) == ["quick", "steady"]
        async with stack.channel_as("gateway", "optimizer") as gch:
            gateway = optimizer_pb2_grpc.OptimizerServiceStub(gch)
            reply = await gateway.UpdateMetrics(
                optimizer_pb2.UpdateMetricsRequest(
                    priors=[
                        metrics_pb2.ProviderPrior(provider="steady", quality=0.9, p99_ttft_ms=400)
                    ]
                ),
                timeout=5,
            )
            (updated,) = reply.metrics
            assert (updated.provider, updated.quality, updated.p99_ttft_ms) == ("steady", 0.9, 400)
            assert updated.p50_ttft_ms == 150  # unset values are kept
            await asyncio.wait_for(
                next_snapshot_where(watch, common_pb2.STRATEGY_QUALITY, ["steady", "quick"]), 5
            )
            for bad, field in [
                (metrics_pb2.ProviderPrior(provider="steady", quality=1.5), "priors[0].quality"),
                (
                    metrics_pb2.ProviderPrior(provider="steady", p50_ttft_ms=-1),
                    "priors[0].p50_ttft_ms",
                ),
            ]:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await gateway.UpdateMetrics(
                        optimizer_pb2.UpdateMetricsRequest(priors=[bad]), timeout=5
                    )
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert describe(err.value).reason == "METRICS_INVALID"
                assert [v.field for v in describe(err.value).field_violations] == [field]
        watch.cancel()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await router.UpdateMetrics(optimizer_pb2.UpdateMetricsRequest(), timeout=5)
        assert describe(err.value).reason == "CALLER_NOT_ALLOWED"

    assert stack.stop("optimizer") == 0
    await stack.start_all(["optimizer"])
    steady = await gateway_metrics(stack, "steady")
    assert steady.quality == pytest.approx(0.9)
    assert (steady.p99_ttft_ms, steady.p50_ttft_ms) == (400, 150)
