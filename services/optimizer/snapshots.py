"""The ranking snapshot routers watch: every strategy's ranking, the default strategy and the
price table, replaced as a whole whenever something that shapes it changes.

A snapshot is immutable; `SnapshotBoard` holds the current one and wakes the watchers when a
new one replaces it. Versions start at the process's start time in microseconds and grow by
one per change, so they also increase across restarts. Today only `set_default` changes a
snapshot; live metrics and circuit states (issue 5) will call the same `_publish`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.common.config import ProviderConfig
from services.common.prices import PriceTable, price_table
from services.optimizer.ranking import ProviderStats, Ranking, Strategy, Weights, rank

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


class SnapshotBoard:
    """Holds the current snapshot and notifies watchers of the next."""

    def __init__(
        self,
        providers: Iterable[ProviderConfig],
        default_strategy: Strategy,
        *,
        start_version: int | None = None,
    ) -> None:
        providers = tuple(providers)
        self.stats = tuple(ProviderStats.from_config(p) for p in providers)
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
        rankings = {s: rank(self.stats, s) for s in WATCHED_BY_DEFAULT}
        if custom is not None:
            rankings[Strategy.CUSTOM] = rank(self.stats, Strategy.CUSTOM, weights=custom)
        return Snapshot(version, default, custom, self._prices, rankings)
