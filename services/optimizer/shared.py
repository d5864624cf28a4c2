"""Live metrics that replicas share: the usage ledger (one PostgreSQL for every optimizer
replica) is the source of truth, and each replica re-reads from it, every
`optimizer.metrics_sync_ms`, each provider's recent window and the operators' priors.

Why re-read rather than elect one writer or gossip: every router reports its outcomes to
whichever optimizer replica its channel picked, and every outcome is in the ledger before
RecordOutcomes answers; re-reading the window therefore gives every replica the same
samples — the same metrics and the same rankings — within one sync interval, with nothing
to fail over. Between re-reads a replica adds what it records itself, so its own routers
see a change at once. The same read warms a replica up at start. The cost is one indexed
query per provider per interval (`usage_records (provider, occurred_at)`, at most
`metrics_window` rows each).

A reset of samples (UpdateMetrics `reset_samples`) is a point in time kept with the priors:
re-reads start after it, so the reset holds on every replica and across restarts. The
default strategy an operator set (SetDefaultStrategy, through any replica) is stored too and
taken by every replica at its next re-read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from services.common.config import ProviderConfig
from services.common.database import Database
from services.common.strategy import Strategy
from services.optimizer.ledger import Ledger
from services.optimizer.live_metrics import LiveMetrics
from services.optimizer.priors import PriorStore
from services.optimizer.publisher import RankingPublisher
from services.optimizer.ranking import WEIGHT_NAMES, Weights
from services.optimizer.snapshots import SnapshotBoard

log = logging.getLogger("saga.optimizer.shared")


class DefaultStrategyStore:
    """The `default_strategy` row: what SetDefaultStrategy set last, for every replica."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self._db = db
        self._clock = clock

    async def save(self, strategy: Strategy, weights: Weights | None) -> None:
        """Remember `strategy` (with its weights for CUSTOM) as the deployment's default."""
        values = [getattr(weights, n) if weights is not None else None for n in WEIGHT_NAMES]
        columns = ", ".join(WEIGHT_NAMES)
        updates = ", ".join(f"{n} = excluded.{n}" for n in WEIGHT_NAMES)
        await self._db.execute(
            f"INSERT INTO default_strategy (id, strategy, {columns}, updated_at) "  # noqa: S608 (constant columns)
            "VALUES (1, $1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET "
            f"strategy = excluded.strategy, {updates}, updated_at = excluded.updated_at",
            strategy.value,
            *values,
            self._clock(),
        )

    async def load(self) -> tuple[Strategy, Weights | None] | None:
        """The stored default, or None when no operator set one."""
        row = await self._db.fetchrow("SELECT * FROM default_strategy WHERE id = 1")
        if row is None:
            return None
        strategy = Strategy(str(row["strategy"]))
        if strategy is not Strategy.CUSTOM:
            return strategy, None
        return strategy, Weights(**{n: float(row[n]) for n in WEIGHT_NAMES})


class SharedMetrics:
    """Re-reads the live metrics of every provider from the shared ledger and priors."""

    def __init__(
        self,
        live: LiveMetrics,
        ledger: Ledger,
        priors: PriorStore,
        strategies: DefaultStrategyStore,
        board: SnapshotBoard,
        providers: Sequence[ProviderConfig],
        *,
        window: int,
        window_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self._live = live
        self._ledger = ledger
        self._priors = priors
        self._strategies = strategies
        self._board = board
        self._providers = tuple(providers)
        self._window = window
        self._window_seconds = window_seconds
        self._clock = clock

    async def reread(self) -> int:
        """Replace every provider's priors and window, and the default strategy, with what
        storage holds; how many samples that took."""
        default = await self._strategies.load()
        current = self._board.current
        if default is not None and (
            default[0] is not current.default_strategy
            or (default[1] is not None and default[1] != current.custom_weights)
        ):
            self._board.set_default(*default)
        now = self._clock()
        priors = await self._priors.load(self._providers)
        resets = await self._priors.resets()
        taken = 0
        for provider in self._live.providers:
            since = max(now - self._window_seconds, resets.get(provider, 0.0))
            records = await self._ledger.recent(provider, since, self._window)
            self._live.set_prior(provider, priors[provider])
            samples = (s for s in (r.sample() for r in records) if s is not None)
            taken += self._live.replace(provider, samples, now)
        return taken

    async def run(self, publisher: RankingPublisher, interval: float) -> None:
        """Re-read every `interval` seconds and let the publisher re-rank, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reread()
            except Exception:
                # Storage away for a moment: keep ranking from what this replica has.
                log.warning("re-reading the shared live metrics failed", exc_info=True)
                continue
            publisher.notify()
