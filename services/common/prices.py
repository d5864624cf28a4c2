"""Prices and costs in integer micro-USD, and the versioned price table (SPEC 3.5).

The optimizer publishes the table in its ranking snapshots; the router prices every attempt
with it and records its version. The version is `prices-` and the first 16 hex digits of the
SHA-256 of the table's canonical JSON (providers sorted by name; input, output, cache-read
and cache-write prices, the last resolved to the input price when not configured): the same
prices give the same version in every process and after every restart, any change gives a
new one — so the router, before its first snapshot, versions the configured prices exactly
as the optimizer would.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.common.config import ProviderConfig

MICRO_PER_MILLION = 1_000_000


@dataclass(frozen=True)
class ProviderPrice:
    """One provider's model prices, micro-USD per million tokens."""

    provider: str
    model: str = ""
    input_micro_usd_per_mtok: int = 0
    output_micro_usd_per_mtok: int = 0
    cached_input_micro_usd_per_mtok: int = 0
    cache_write_micro_usd_per_mtok: int = 0
    """Input tokens written to the prompt cache (`price_table` puts the input price here
    when the operator configured none)."""

    def cost(
        self,
        input_tokens: int,
        output_tokens: int,
        cached_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> int:
        """The cost of one call in micro-USD, rounded half up. Cache reads and writes are
        part of the input tokens, billed at their own prices (never more of them than
        input: reads first, then writes, are clipped to it)."""
        cached = min(cached_tokens, input_tokens)
        written = min(cache_write_tokens, input_tokens - cached)
        numerator = (
            (input_tokens - cached - written) * self.input_micro_usd_per_mtok
            + cached * self.cached_input_micro_usd_per_mtok
            + written * self.cache_write_micro_usd_per_mtok
            + output_tokens * self.output_micro_usd_per_mtok
        )
        return (numerator + MICRO_PER_MILLION // 2) // MICRO_PER_MILLION


@dataclass(frozen=True)
class PriceTable:
    """A version and the prices of the providers it covers, sorted by provider name."""

    version: str
    prices: tuple[ProviderPrice, ...]
    _by_provider: dict[str, ProviderPrice] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_provider", {p.provider: p for p in self.prices})

    def of(self, provider: str) -> ProviderPrice:
        """The prices of `provider` (all zero when the table does not list it)."""
        return self._by_provider.get(provider) or ProviderPrice(provider)


def price_table(providers: Iterable[ProviderConfig]) -> PriceTable:
    """The versioned table of the configured providers' prices."""
    prices = tuple(
        sorted(
            (
                ProviderPrice(
                    p.name,
                    p.model,
                    p.input_micro_usd_per_mtok,
                    p.output_micro_usd_per_mtok,
                    p.cached_input_micro_usd_per_mtok,
                    p.cache_write_price,
                )
                for p in providers
            ),
            key=lambda price: price.provider,
        )
    )
    canonical = json.dumps(
        [
            [
                p.provider,
                p.model,
                p.input_micro_usd_per_mtok,
                p.output_micro_usd_per_mtok,
                p.cached_input_micro_usd_per_mtok,
                p.cache_write_micro_usd_per_mtok,
            ]
            for p in prices
        ],
        separators=(",", ":"),
    )
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return PriceTable(version=f"prices-{digest}", prices=prices)
