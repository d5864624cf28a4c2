"""The router's view of a ranking snapshot, and the watch's reconnection delays."""

from __future__ import annotations

import grpc

from saga.execution.v1 import common_pb2
from saga.optimizer.v1 import optimizer_pb2, ranking_pb2
from services.router.rankings import RankingWatcher, snapshot_from_proto


def test_a_snapshot_message_becomes_names_per_strategy_and_prices() -> None:
    message = optimizer_pb2.WatchRankingsResponse(
        snapshot_version=7,
        default_strategy=common_pb2.STRATEGY_QUALITY,
        rankings=[
            ranking_pb2.StrategyRanking(
                strategy=common_pb2.STRATEGY_CHEAPEST,
                ranked=[ranking_pb2.RankedProvider(provider=n) for n in ("b", "a")],
            ),
            ranking_pb2.StrategyRanking(strategy=99),  # a strategy of a newer optimizer
        ],
        price_table=ranking_pb2.PriceTable(
            version="prices-1",
            prices=[
                ranking_pb2.ProviderPrice(
                    provider="a",
                    input_per_million_micro_usd=5,
                    output_per_million_micro_usd=6,
                    cache_write_per_million_micro_usd=8,
                )
            ],
        ),
    )
    snapshot = snapshot_from_proto(message)
    assert (snapshot.version, snapshot.default_strategy) == (7, "quality")
    assert snapshot.rankings == {"cheapest": ("b", "a")}
    assert snapshot.prices.version == "prices-1"
    assert snapshot.prices.of("a").cost(1_000_000, 1_000_000) == 11
    # The cache-write price travels with the others: a million written costs 8.
    assert snapshot.prices.of("a").cost(1_000_000, 0, cache_write_tokens=1_000_000) == 8


async def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    channel = grpc.aio.insecure_channel("127.0.0.1:9")  # never dialled: no call is made
    try:
        watcher = RankingWatcher(channel, initial_backoff=0.2, max_backoff=5.0)
        for failures, full in [(0, 0.2), (1, 0.2), (2, 0.4), (3, 0.8), (5, 3.2), (9, 5.0)]:
            delays = [watcher.backoff(failures) for _ in range(50)]
            assert all(full / 2 <= d <= full for d in delays), (failures, delays)
        assert len({watcher.backoff(9) for _ in range(20)}) > 1  # jittered
    finally:
        await channel.close()
