"""The snapshot board: what watchers get, when a new snapshot is published, and closing."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from services.common.config import DEFAULT_PROVIDERS, ProviderConfig
from services.common.prices import price_table
from services.common.strategy import Strategy
from services.optimizer.ranking import ProviderStats, Weights
from services.optimizer.snapshots import WATCHED_BY_DEFAULT, SnapshotBoard


def board() -> SnapshotBoard:
    return SnapshotBoard(DEFAULT_PROVIDERS, Strategy.BALANCED, start_version=10)


def test_a_snapshot_ranks_every_default_strategy() -> None:
    snapshot = board().current
    assert snapshot.version == 10
    assert snapshot.default_strategy is Strategy.BALANCED
    assert set(snapshot.rankings) == set(WATCHED_BY_DEFAULT)
    assert snapshot.rankings[Strategy.CHEAPEST].order == ("sim-fast", "sim-smart")
    assert snapshot.rankings[Strategy.QUALITY].order == ("sim-smart", "sim-fast")
    assert snapshot.strategies_for([]) == list(WATCHED_BY_DEFAULT)
    assert snapshot.strategies_for([Strategy.QUALITY]) == [Strategy.QUALITY]
    # CUSTOM is sent only once it has weights.
    assert snapshot.strategies_for([Strategy.CUSTOM]) == []


async def test_set_default_publishes_a_newer_snapshot_to_waiters() -> None:
    b = board()
    waiter = asyncio.ensure_future(b.next_after(10))
    await asyncio.sleep(0)
    assert not waiter.done()
    b.set_default(Strategy.QUALITY, None)
    got = await asyncio.wait_for(waiter, 1)
    assert got is not None
    assert (got.version, got.default_strategy) == (11, Strategy.QUALITY)


async def test_setting_the_same_default_publishes_nothing() -> None:
    b = board()
    assert b.set_default(Strategy.BALANCED, None).version == 10
    # Positive control: a different default does publish.
    assert b.set_default(Strategy.CHEAPEST, None).version == 11


async def test_custom_default_carries_normalised_weights_and_its_ranking() -> None:
    b = board()
    snapshot = b.set_default(Strategy.CUSTOM, Weights(quality=2, cost=2))
    assert snapshot.custom_weights == Weights(cost=0.5, quality=0.5)
    assert Strategy.CUSTOM in snapshot.strategies_for([])
    with pytest.raises(ValueError, match="weights"):
        b.set_default(Strategy.CUSTOM, Weights())


async def test_close_releases_waiters_with_none() -> None:
    b = board()
    waiter = asyncio.ensure_future(b.next_after(10))
    await asyncio.sleep(0)
    b.close()
    assert await asyncio.wait_for(waiter, 1) is None
    assert await b.next_after(0) is None


def test_versions_default_to_the_start_time_so_they_grow_across_restarts() -> None:
    first = SnapshotBoard(DEFAULT_PROVIDERS, Strategy.BALANCED).current.version
    second = SnapshotBoard(DEFAULT_PROVIDERS, Strategy.BALANCED).current.version
    assert second >= first > 1_600_000_000 * 1_000_000


def test_price_table_version_follows_the_prices() -> None:
    table = price_table(DEFAULT_PROVIDERS)
    assert table.version.startswith("prices-")
    assert [p.provider for p in table.prices] == ["sim-fast", "sim-smart"]
    assert price_table(reversed(DEFAULT_PROVIDERS)).version == table.version
    changed = [
        DEFAULT_PROVIDERS[0],
        ProviderConfig(
            name="sim-smart", kind="sim", model="sim-large", output_micro_usd_per_mtok=1
        ),
    ]
    assert price_table(changed).version != table.version


def _slowed(stats: ProviderStats, ttft_ms: float) -> ProviderStats:
    return dataclasses.replace(stats, ttft_ms=ttft_ms, latency_ms=ttft_ms * 5)


async def test_refresh_publishes_only_when_an_order_or_exclusion_changes() -> None:
    b = board()
    fast, smart = b.stats
    assert b.current.rankings[Strategy.FASTEST].order == ("sim-fast", "sim-smart")
    # Scores drift but no order changes: nothing is pushed, yet Rank sees the new stats.
    assert b.refresh([_slowed(fast, 50), smart]) is False
    assert b.current.version == 10
    assert b.stats[0].ttft_ms == 50
    waiter = asyncio.ensure_future(b.next_after(10))
    assert b.refresh([_slowed(fast, 500), smart]) is True
    got = await asyncio.wait_for(waiter, 1)
    assert got is not None
    assert got.version == 11
    assert got.rankings[Strategy.FASTEST].order == ("sim-smart", "sim-fast")
    # An exclusion is a change too.
    failing = dataclasses.replace(smart, success_rate=0.1)
    assert b.refresh([_slowed(fast, 500), failing]) is True
    assert b.current.rankings[Strategy.FASTEST].order == ("sim-fast",)


def test_the_success_floor_is_the_boards() -> None:
    lenient = SnapshotBoard(DEFAULT_PROVIDERS, Strategy.BALANCED, success_floor=0.0)
    fast, smart = lenient.stats
    lenient.refresh([fast, dataclasses.replace(smart, success_rate=0.1)])
    assert lenient.current.rankings[Strategy.RELIABLE].order == ("sim-fast", "sim-smart")
