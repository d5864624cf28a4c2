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
re-reads start after it, so the reset holds on every replica and across restarts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from services.common.config import ProviderConfig
from services.optimizer.ledger import Ledger
from services.optimizer.live_metrics import LiveMetrics
from services.optimizer.priors import PriorStore
from services.optimizer.publisher import RankingPublisher

log = logging.getLogger("saga.optimizer.shared")


class SharedMetrics:
    """Re-reads the live metrics of every provider from the shared ledger and priors."""

    def __init__(
        self,
        live: LiveMetrics,
        ledger: Ledger,
        priors: PriorStore,
        providers: Sequence[ProviderConfig],
        *,
        window: int,
        window_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self._live = live
        self._ledger = ledger
        self._priors = priors
        self._providers = tuple(providers)
        self._window = window
        self._window_seconds = window_seconds
        self._clock = clock

    async def reread(self) -> int:
        """Replace every provider's priors and window with what storage holds; how many
        samples that took."""
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
