"""The router's copy of the optimizer's ranking snapshot, kept fresh by a background watch.

`RankingWatcher.run` (a background task of the host) subscribes to the optimizer's
`WatchRankings` and keeps the latest snapshot; when the stream ends or fails it reconnects
with capped exponential backoff and jitter. Reason only ever reads `snapshot` — it never
waits for the optimizer: without a snapshot yet it ranks by configuration order, and when
the optimizer goes away the last snapshot stays in use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import grpc

from saga.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
from services.common.backoff import Backoff
from services.common.prices import PriceTable, ProviderPrice
from services.common.strategy import Strategy
from services.common.strategy_proto import FROM_PROTO

log = logging.getLogger("saga.router.rankings")


@dataclass(frozen=True)
class RankingSnapshot:
    """One snapshot: provider names best first per strategy, the default, the prices."""

    version: int
    default_strategy: Strategy
    rankings: Mapping[Strategy, tuple[str, ...]]
    prices: PriceTable


def snapshot_from_proto(message: optimizer_pb2.WatchRankingsResponse) -> RankingSnapshot:
    """The domain view of a WatchRankings message (strategies this build does not know are
    skipped)."""
    rankings = {
        FROM_PROTO[r.strategy]: tuple(p.provider for p in r.ranked)
        for r in message.rankings
        if r.strategy in FROM_PROTO
    }
    table = message.price_table
    return RankingSnapshot(
        version=message.snapshot_version,
        default_strategy=FROM_PROTO.get(message.default_strategy, Strategy.BALANCED),
        rankings=rankings,
        prices=PriceTable(
            version=table.version,
            prices=tuple(
                ProviderPrice(
                    p.provider,
                    p.model,
                    p.input_per_million_micro_usd,
                    p.output_per_million_micro_usd,
                    p.cached_input_per_million_micro_usd,
                    p.cache_write_per_million_micro_usd,
                )
                for p in table.prices
            ),
        ),
    )


class RankingWatcher:
    """Watches the optimizer's rankings in the background (see the module docstring)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        initial_backoff: float = 0.2,
        max_backoff: float = 5.0,
    ) -> None:
        self._stub = optimizer_pb2_grpc.OptimizerServiceStub(channel)
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._snapshot: RankingSnapshot | None = None

    @property
    def snapshot(self) -> RankingSnapshot | None:
        """The latest snapshot received, or None before the first."""
        return self._snapshot

    def backoff(self, failures: int) -> float:
        """Seconds to wait after `failures` consecutive failed watches."""
        return Backoff(self._initial_backoff, self._max_backoff).delay(failures)

    async def run(self) -> None:
        """Watch, and reconnect whenever the watch ends, until cancelled."""
        failures = 0  # consecutive watches that delivered nothing
        while True:
            received = await self._watch_once()
            failures = 0 if received else failures + 1
            delay = self.backoff(failures)
            extra = {"retry_in_seconds": round(delay, 3), "failures": failures}
            # A watch that delivered and ended (its deadline, an optimizer restart) is routine;
            # the first failure to connect is worth a warning, the ones after it are not.
            if received:
                log.info("rankings watch ended; reconnecting", extra=extra)
            else:
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "rankings watch failed; retrying", extra=extra)
            await asyncio.sleep(delay)

    async def _watch_once(self) -> bool:
        """One subscription, until it ends; True if it delivered any snapshot."""
        received = False
        try:
            async for message in self._stub.WatchRankings(optimizer_pb2.WatchRankingsRequest()):
                snapshot = snapshot_from_proto(message)
                previous, self._snapshot = self._snapshot, snapshot
                received = True
                if previous is None or previous.default_strategy != snapshot.default_strategy:
                    log.info(
                        "rankings snapshot",
                        extra={
                            "snapshot_version": snapshot.version,
                            "default_strategy": snapshot.default_strategy,
                            "price_table_version": snapshot.prices.version,
                        },
                    )
        except grpc.aio.AioRpcError as error:
            log.debug("rankings watch failed", extra={"code": error.code().name})
        except Exception:
            # A bad message must not end the watch for good.
            log.exception("rankings watch broke")
        return received
