"""The optimizer's gRPC service, registered with the shared bootstrap: opens its database
(ledger, budgets, priors), warms the live metrics up from the ledger's recent outcomes, and
spawns its background tasks on the host — the ranking publisher, the re-reading of the
metrics that replicas share (`shared`), and an hourly prune of old reservations.
WatchRankings streams never end by themselves: the board closes as soon as the shutdown
begins (`host.stopping`), so they end at once instead of holding the drain for the whole
grace period; the database closes once the tasks were cancelled.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from services.common.database import Database
from services.common.server import Registration, ServiceHost
from services.common.strategy import Strategy
from services.optimizer.budgets import Budgets
from services.optimizer.ledger import Ledger
from services.optimizer.live_metrics import LiveMetrics
from services.optimizer.priors import PriorStore
from services.optimizer.publisher import RankingPublisher
from services.optimizer.schema import MIGRATIONS
from services.optimizer.servicer import OptimizerServicer, Parts
from services.optimizer.shared import DefaultStrategyStore, SharedMetrics
from services.optimizer.snapshots import SnapshotBoard

log = logging.getLogger("saga.optimizer")

PRUNE_EVERY_SECONDS = 3600.0


async def _prune_forever(budgets: Budgets) -> None:
    while True:
        await asyncio.sleep(PRUNE_EVERY_SECONDS)
        try:
            pruned = await budgets.prune()
        except Exception:
            log.exception("pruning reservations failed")
        else:
            if pruned:
                log.info("old reservations pruned", extra={"count": pruned})


async def build(host: ServiceHost) -> list[Registration]:
    """The servicers this process serves."""
    config = host.config
    settings = config.optimizer
    db: Database = await host.open_database(MIGRATIONS)
    priors = PriorStore(db)
    ledger = Ledger(db)
    live = LiveMetrics(
        config.providers,
        window=settings.metrics_window,
        window_seconds=settings.metrics_window_seconds,
        prior_weight=settings.prior_weight,
    )
    board = SnapshotBoard(
        config.providers,
        Strategy(settings.default_strategy),
        success_floor=settings.success_rate_floor,
    )
    publisher = RankingPublisher(live, board, interval=settings.publish_interval_ms / 1000)
    strategies = DefaultStrategyStore(db, time.time)
    shared = SharedMetrics(
        live,
        ledger,
        priors,
        strategies,
        board,
        config.providers,
        window=settings.metrics_window,
        window_seconds=settings.metrics_window_seconds,
        clock=time.time,
    )
    warmed = await shared.reread()
    publisher.refresh()
    budgets = Budgets(db, config.budgets)
    log.info("live metrics warmed up", extra={"samples": warmed})

    async def end_watches_at_shutdown() -> None:
        await host.stopping.wait()
        board.close()

    host.spawn("end-watches", end_watches_at_shutdown)
    host.spawn("ranking-publisher", publisher.run)
    if settings.metrics_sync_ms > 0:
        interval = settings.metrics_sync_ms / 1000
        host.spawn("shared-metrics", functools.partial(shared.run, publisher, interval))
    host.spawn("prune-reservations", functools.partial(_prune_forever, budgets))
    host.on_stop(db.close)
    parts = Parts(
        publisher=publisher, ledger=ledger, budgets=budgets, priors=priors, strategies=strategies
    )
    return [Registration.of(OptimizerServicer(parts))]
