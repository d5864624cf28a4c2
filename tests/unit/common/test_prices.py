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
    assert table.of("sim-fast") == ProviderPrice("sim-fast", "sim-small", 150_000, 600_000, 0)
    assert table.of("nobody").cost(1000, 1000) == 0


def test_version_follows_the_prices_not_their_order() -> None:
    table = price_table(DEFAULT_PROVIDERS)
    assert table.version.startswith("prices-")
    assert [p.provider for p in table.prices] == ["sim-fast", "sim-smart"]
    assert price_table(reversed(DEFAULT_PROVIDERS)).version == table.version
    changed = (dataclasses.replace(DEFAULT_PROVIDERS[0], output_micro_usd_per_mtok=1),)
    assert price_table(changed + DEFAULT_PROVIDERS[1:]).version != table.version
