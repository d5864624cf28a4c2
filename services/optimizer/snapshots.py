"""The ranking snapshot routers watch: every strategy's ranking, the default strategy and the
price table, replaced as a whole whenever something that shapes it changes.

A snapshot is immutable; `SnapshotBoard` holds the current one and wakes the watchers when a
new one replaces it. Versions start at the process's start time in microseconds and grow by
one per change, so they also increase across restarts. Two things change a snapshot: the
default strategy (`set_default`) and live metrics (`refresh`, which publishes only when an
order or an exclusion changed — scores drift with every outcome, and pushing each drift to
every router would be noise; the snapshot then carries the latest scores).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.common.config import ProviderConfig
from services.common.prices import PriceTable, price_table
from services.common.strategy import Strategy
from services.optimizer.ranking import (
    SUCCESS_RATE_FLOOR,
    ProviderStats,
    Ranking,
    Weights,
    rank,
)

WATCHED_BY_DEFAULT = (
    Strategy.CHEAPEST,
    Strategy.FASTEST,
    Strategy.QUALITY,
    Strategy.BALANCED,
    Strategy.RELIABLE,
)
"""Strategies a watcher gets when it names none (plus CUSTOM once custom weights are set)."""


@dataclass(frozen=True)
class Snapshot:
    """One full, immutable ranking state."""

    version: int
    default_strategy: Strategy
    custom_weights: Weights | None
    prices: PriceTable
    rankings: Mapping[Strategy, Ranking]

    def strategies_for(self, requested: Iterable[Strategy]) -> list[Strategy]:
        """The strategies to send to a watcher that asked for `requested` (empty = all);
        CUSTOM only once it has weights."""
        wanted = list(dict.fromkeys(requested)) or [*WATCHED_BY_DEFAULT, Strategy.CUSTOM]
        return [s for s in wanted if s in self.rankings]

    def shape(self) -> tuple[object, ...]:
        """What a router acts on: the default, and each strategy's order and exclusions
        (not the scores, nor the wording of an exclusion's detail)."""
        return (
            self.default_strategy,
            self.custom_weights,
            tuple(
                (s, r.order, tuple((e.provider, e.reason) for e in r.excluded))
                for s, r in self.rankings.items()
            ),
        )


class SnapshotBoard:
    """Holds the current snapshot and notifies watchers of the next."""

    def __init__(
        self,
        providers: Iterable[ProviderConfig],
        default_strategy: Strategy,
        *,
        start_version: int | None = None,
        success_floor: float = SUCCESS_RATE_FLOOR,
    ) -> None:
        providers = tuple(providers)
        self.stats = tuple(ProviderStats.from_config(p) for p in providers)
        self.success_floor = success_floor
        self._prices = price_table(providers)
        self._changed = asyncio.Event()
        self._closed = False
        version = time.time_ns() // 1000 if start_version is None else start_version
        self._current = self._build(version, default_strategy, None)

    @property
    def current(self) -> Snapshot:
        """The snapshot in effect."""
        return self._current

    @property
    def closed(self) -> bool:
        """Whether the board stopped publishing (the service is shutting down)."""
        return self._closed

    def set_default(self, strategy: Strategy, weights: Weights | None) -> Snapshot:
        """Make `strategy` the default (CUSTOM with `weights`, normalised); publish a new
        snapshot if that changes anything. Returns the snapshot in effect."""
        if strategy is Strategy.CUSTOM:
            if weights is None or not weights.is_valid():
                raise ValueError("CUSTOM needs valid weights")
            custom: Weights | None = weights.normalised()
        else:
            custom = self._current.custom_weights
        if strategy is self._current.default_strategy and custom == self._current.custom_weights:
            return self._current
        self._publish(self._build(self._current.version + 1, strategy, custom))
        return self._current

    def refresh(self, stats: Iterable[ProviderStats]) -> bool:
        """Rank from `stats` (the live metrics) from now on; publish a new snapshot when that
        changes an order or an exclusion. True if one was published."""
        self.stats = tuple(stats)
        current = self._current
        candidate = self._build(
            current.version + 1, current.default_strategy, current.custom_weights
        )
        if candidate.shape() == current.shape():
            return False
        self._publish(candidate)
        return True

    async def next_after(self, version: int) -> Snapshot | None:
        """The first snapshot newer than `version` (waiting for it); None once closed."""
        while not self._closed and self._current.version <= version:
            await self._changed.wait()
        return None if self._closed else self._current

    def close(self) -> None:
        """Stop publishing and release every waiter (at shutdown: watch streams end)."""
        self._closed = True
        self._changed.set()

    def _publish(self, snapshot: Snapshot) -> None:
        self._current = snapshot
        # Waking every waiter then arming a fresh event: no waiter can miss a change.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _build(self, version: int, default: Strategy, custom: Weights | None) -> Snapshot:
        floor = self.success_floor
        rankings = {s: rank(self.stats, s, success_floor=floor) for s in WATCHED_BY_DEFAULT}
        if custom is not None:
            rankings[Strategy.CUSTOM] = rank(
                self.stats, Strategy.CUSTOM, weights=custom, success_floor=floor
            )
        return Snapshot(version, default, custom, self._prices, rankings)
