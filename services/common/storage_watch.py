"""Readiness that follows the database: a PostgreSQL-backed service probes its database
(`SELECT 1` with a timeout) every `storage.probe_interval_seconds`; `storage.probe_failures`
failed probes in a row set the readiness hold `"storage"` (NOT_SERVING: a load balancer or a
Kubernetes readiness probe stops sending it work it cannot do), `storage.probe_successes`
good ones in a row release it. Hysteresis both ways, so one slow query does not flap the
replica out and one lucky probe does not bring it back too early. `saga_storage_reachable`
is 1 while the database counts as reachable, 0 while the hold is set.

SQLite files need no watch (the bootstrap, `ServiceHost.open_database`, starts one only for
PostgreSQL). Calls keep failing typed (UNAVAILABLE `STORAGE_UNAVAILABLE`) while the hold is
set; the watch changes what health says, not what calls do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from prometheus_client import Gauge

from services.common.config import StorageConfig
from services.common.readiness import Readiness

log = logging.getLogger("saga.storage")

HOLD = "storage"
"""The readiness hold the watch sets while the database is out of reach."""
REASON = "storage unreachable"

REACHABLE = Gauge(
    "saga_storage_reachable",
    "1 while this process's database answers its probes, 0 while readiness is held for it.",
)


class Pingable(Protocol):
    """A database that can be probed (`PostgresDatabase`)."""

    async def ping(self, within: float) -> bool:
        """Whether it answered within `within` seconds."""
        ...


class StorageWatch:
    """Probes one database and holds readiness while it is out of reach."""

    def __init__(
        self,
        db: Pingable,
        readiness: Readiness,
        settings: StorageConfig,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._db = db
        self._readiness = readiness
        self._settings = settings
        self._sleep = sleep
        self._failures = 0
        self._successes = 0
        self.reachable = True
        REACHABLE.set(1)

    async def probe_once(self) -> None:
        """One probe, and the hold set or released if the streak says so."""
        s = self._settings
        if await self._db.ping(s.probe_timeout_seconds):
            self._failures = 0
            self._successes += 1
            if not self.reachable and self._successes >= s.probe_successes:
                self.reachable = True
                REACHABLE.set(1)
                log.info("storage reachable again", extra={"probes": self._successes})
                await self._readiness.release(HOLD)
        else:
            self._successes = 0
            self._failures += 1
            if self.reachable and self._failures >= s.probe_failures:
                self.reachable = False
                REACHABLE.set(0)
                log.warning("storage unreachable", extra={"probes": self._failures})
                await self._readiness.hold(HOLD, REASON)

    async def run(self) -> None:
        """Probe forever (a supervised task: `ServiceHost.spawn`)."""
        while True:
            await self._sleep(self._settings.probe_interval_seconds)
            await self.probe_once()
