"""The optimizer's gRPC service, registered with the shared bootstrap.

RPCs not built yet (GetMetrics, UpdateMetrics, GetUsage) are inherited from the generated
base servicer, which the guard answers with UNIMPLEMENTED (reason NOT_IMPLEMENTED).
"""

from __future__ import annotations

import asyncio
import contextlib

from services.common.server import Registration, ServiceHost
from services.optimizer.ranking import Strategy
from services.optimizer.servicer import OptimizerServicer
from services.optimizer.shutdown import shutdown_started
from services.optimizer.snapshots import SnapshotBoard


async def build(host: ServiceHost) -> list[Registration]:
    """The servicers this process serves."""
    board = SnapshotBoard(host.config.providers, Strategy(host.config.optimizer.default_strategy))

    async def end_watches_on_shutdown() -> None:
        await shutdown_started(host.health)
        board.close()

    closer = asyncio.create_task(end_watches_on_shutdown())

    async def stop() -> None:
        board.close()
        closer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await closer

    host.on_stop(stop)
    return [Registration.of(OptimizerServicer(board))]
