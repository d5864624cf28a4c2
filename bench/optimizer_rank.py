"""How long ranking takes: `rank` over 20 providers, in process (SPEC 3.5 budgets provider
selection at < 1 ms).

Times the pure ranking function for each strategy and the whole Rank handler path (request
translation, ranking, response building) without sockets, and prints the median and the 99th
percentile per call. The machine is shared and noisy: read the figures as an order of
magnitude against the 1 ms budget, not as exact times.

    .venv/bin/python -m bench.optimizer_rank [--providers 20] [--calls 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from saga.execution.v1 import common_pb2
from saga.optimizer.v1 import optimizer_pb2
from services.common.config import BudgetsConfig, ProviderConfig
from services.common.database import open_database
from services.common.strategy import Strategy
from services.optimizer.budgets import Budgets
from services.optimizer.ledger import Ledger
from services.optimizer.live_metrics import LiveMetrics
from services.optimizer.priors import PriorStore
from services.optimizer.publisher import RankingPublisher
from services.optimizer.ranking import ProviderStats, Weights, rank
from services.optimizer.schema import MIGRATIONS
from services.optimizer.servicer import OptimizerServicer, Parts
from services.optimizer.snapshots import SnapshotBoard


def providers(count: int) -> list[ProviderConfig]:
    """`count` providers with spread-out priors and prices."""
    return [
        ProviderConfig(
            name=f"provider-{i:02d}",
            kind="sim",
            model=f"model-{i}",
            quality=(i * 37 % 100) / 100,
            latency_ms=200 + i * 53 % 900,
            ttft_ms=20 + i * 17 % 300,
            success_rate=0.9 + (i % 10) / 100,
            input_micro_usd_per_mtok=100_000 + i * 91_000,
            output_micro_usd_per_mtok=400_000 + i * 310_000,
        )
        for i in range(count)
    ]


def timed(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    """(median, p99) of one call of `fn`, in microseconds."""
    for _ in range(min(200, calls)):
        fn()  # warm up
    samples = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--providers", type=int, default=20)
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    configs = providers(args.providers)
    stats = [ProviderStats.from_config(p) for p in configs]
    print(f"{args.providers} providers, {args.calls} calls each; microseconds per call")
    print(f"{'what':<28}{'median':>10}{'p99':>10}")
    for strategy in Strategy:
        weights = Weights(cost=1, quality=2) if strategy is Strategy.CUSTOM else None
        median, p99 = timed(lambda s=strategy, w=weights: rank(stats, s, weights=w), args.calls)
        print(f"{'rank ' + strategy.value:<28}{median:>10.1f}{p99:>10.1f}")

    with tempfile.TemporaryDirectory() as tmp:
        db = await open_database("", "saga", Path(tmp), "optimizer", MIGRATIONS)
        live = LiveMetrics(configs, window=100, window_seconds=300, prior_weight=10)
        publisher = RankingPublisher(live, SnapshotBoard(configs, Strategy.BALANCED), interval=0.2)
        parts = Parts(publisher, Ledger(db), Budgets(db, BudgetsConfig()), PriorStore(db))
        try:
            await _time_handler(OptimizerServicer(parts), args.calls)
        finally:
            await db.close()


async def _time_handler(servicer: OptimizerServicer, calls: int) -> None:
    request = optimizer_pb2.RankRequest(
        strategy=common_pb2.STRATEGY_BALANCED, required_capabilities=["chat"]
    )
    samples = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        await servicer.Rank(request, None)
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    median, p99 = statistics.median(samples), samples[int(len(samples) * 0.99) - 1]
    print(f"{'Rank handler (balanced)':<28}{median:>10.1f}{p99:>10.1f}")


if __name__ == "__main__":
    asyncio.run(main())
