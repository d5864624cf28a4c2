"""Costs in integer micro-USD, and a price-table version that names its content."""

from __future__ import annotations

import dataclasses

from services.common.config import DEFAULT_PROVIDERS
from services.common.prices import ProviderPrice, price_table


def test_cost_applies_prices_per_million_tokens() -> None:
    prices = ProviderPrice("p", "m", 1_000_000, 2_000_000, 100_000)
    assert prices.cost(3, 6) == 15
    # Cached input tokens are billed at the cached price (a subset of the input tokens).
    assert prices.cost(10, 0, cached_tokens=10) == 1
    # Half a micro-USD rounds up; less rounds down.
    assert ProviderPrice("p", input_micro_usd_per_mtok=500_000).cost(1, 0) == 1
    assert ProviderPrice("p", input_micro_usd_per_mtok=499_999).cost(1, 0) == 0


def test_a_provider_missing_from_the_table_costs_nothing() -> None:
    table = price_table(DEFAULT_PROVIDERS)
    # No cache-write price configured: writes are billed as input.
    assert table.of("sim-fast") == ProviderPrice(
        "sim-fast", "sim-small", 150_000, 600_000, 0, 150_000
    )
    assert table.of("nobody").cost(1000, 1000) == 0


def test_version_follows_the_prices_not_their_order() -> None:
    table = price_table(DEFAULT_PROVIDERS)
    assert table.version.startswith("prices-")
    assert [p.provider for p in table.prices] == ["sim-fast", "sim-smart"]
    assert price_table(reversed(DEFAULT_PROVIDERS)).version == table.version
    changed = (dataclasses.replace(DEFAULT_PROVIDERS[0], output_micro_usd_per_mtok=1),)
    assert price_table(changed + DEFAULT_PROVIDERS[1:]).version != table.version


def test_cache_writes_are_billed_at_the_write_price_apart_from_reads() -> None:
    # Input 3, output 15, cache reads 0.3, cache writes 3.75 (Anthropic's 1.25x) per token.
    prices = ProviderPrice("p", "m", 3_000_000, 15_000_000, 300_000, 3_750_000)
    # 100 input tokens: 60 written to the cache, 30 read from it, 10 plain.
    assert prices.cost(100, 0, cached_tokens=30, cache_write_tokens=60) == 30 + 9 + 225
    # Never more reads and writes than input: the writes are clipped to what is left.
    assert prices.cost(10, 0, cached_tokens=8, cache_write_tokens=8) == 2 + 8
    assert prices.cost(10, 1, cache_write_tokens=0) == 30 + 15


def test_a_provider_without_a_write_price_bills_writes_as_input() -> None:
    plain = dataclasses.replace(DEFAULT_PROVIDERS[0], input_micro_usd_per_mtok=2_000_000)
    priced = dataclasses.replace(plain, cache_write_micro_usd_per_mtok=2_500_000)
    assert price_table([plain]).of(plain.name).cache_write_micro_usd_per_mtok == 2_000_000
    assert price_table([priced]).of(plain.name).cache_write_micro_usd_per_mtok == 2_500_000
    # The write price is part of the version: the table named the same is priced the same.
    assert price_table([priced]).version != price_table([plain]).version
    # An explicit write price equal to the input price is the same table as none.
    same = dataclasses.replace(plain, cache_write_micro_usd_per_mtok=2_000_000)
    assert price_table([same]).version == price_table([plain]).version
