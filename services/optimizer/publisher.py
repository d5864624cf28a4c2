"""From live metrics to ranking snapshots, debounced.

Outcomes arrive in bursts (a busy router sends many a second); re-ranking and pushing a
snapshot for each would flood every router. `RankingPublisher.run` therefore re-ranks at
most once per `interval`: a change marks the metrics dirty and wakes it; it re-ranks at once
(so the first change after a quiet spell reaches routers without delay), then rests for
`interval` while further changes pile up into the next re-ranking. The board publishes only
when an order or an exclusion changed, so pushes are at most 1/`interval` per second. It
also re-ranks every `tick` seconds without any change, because samples age out of the
window by time alone (a provider that turned bad and was left alone recovers).

Both waits go through the injected `sleep` and the metrics are read at the injected
`clock`, so a test moves time by hand instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from services.optimizer.live_metrics import LiveMetrics
from services.optimizer.snapshots import SnapshotBoard

log = logging.getLogger("saga.optimizer.publisher")


class RankingPublisher:
    """Keeps the snapshot board in step with the live metrics."""

    def __init__(
        self,
        live: LiveMetrics,
        board: SnapshotBoard,
        *,
        interval: float,
        tick: float = 5.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.live = live
        self.board = board
        self._interval = interval
        self._tick = tick
        self._clock = clock
        self._sleep = sleep
        self._dirty = asyncio.Event()
        self.published = 0
        """Snapshots published because metrics changed (for tests and logs)."""

    def notify(self) -> None:
        """The metrics changed: re-rank soon."""
        self._dirty.set()

    def refresh(self) -> bool:
        """Re-rank now; True if a new snapshot was published."""
        changed = self.board.refresh(self.live.stats(self._clock()))
        if changed:
            self.published += 1
            log.info(
                "rankings changed",
                extra={"snapshot_version": self.board.current.version},
            )
        return changed

    async def run(self) -> None:
        """Re-rank on change (at most once per interval) and every tick, until cancelled."""
        while not self.board.closed:
            await self._changed_or_tick()
            self._dirty.clear()
            try:
                self.refresh()
            except Exception:
                # A bug in ranking must not stop the feed for good; the next change retries.
                log.exception("re-ranking failed")
            await self._sleep(self._interval)

    async def _changed_or_tick(self) -> None:
        """Return when the metrics change or `tick` seconds pass, whichever comes first."""
        # A race of two tasks rather than `wait_for(…, tick)`: the timeout must run on the
        # injected sleep, not on the event loop's clock.
        changed = asyncio.ensure_future(self._dirty.wait())
        tick = asyncio.ensure_future(self._sleep(self._tick))
        try:
            await asyncio.wait((changed, tick), return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            tick.cancel()
