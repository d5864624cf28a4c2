"""A process's readiness: one table of holds (name → reason) that keep its built services
NOT_SERVING, and the health servicer kept in step with it.

A hold is a dependency the service cannot work without that is missing now: a sealed vault
(`"sealed"`), its database out of reach (`"storage"`, set and cleared by
`services.common.storage_watch`). While any hold is set, every readiness name (each built
service) says NOT_SERVING; when the last is released they say SERVING again. Liveness (`""`)
is never held: a process that is up but not ready still answers, with its own typed error.
Each flip is logged once, with the holds that caused it. After a graceful shutdown began
(`enter_graceful_shutdown`), nothing flips a name back to SERVING.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # stubs lag

log = logging.getLogger("saga.readiness")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Readiness:
    """The holds on a process's readiness and the health names they govern."""

    def __init__(self, health: health_aio.HealthServicer) -> None:
        self._health = health
        self._holds: dict[str, str] = {}
        self._names: tuple[str, ...] = ()
        self._started = False
        self._shutting_down = False

    @property
    def holds(self) -> dict[str, str]:
        """The holds set now (a copy): name → reason."""
        return dict(self._holds)

    @property
    def ready(self) -> bool:
        """No hold is set (and no shutdown began)."""
        return not self._holds and not self._shutting_down

    async def start(self, names: Iterable[str]) -> None:
        """Report liveness SERVING and each of `names` as the holds say (at start-up)."""
        self._names = tuple(names)
        self._started = True
        await self._health.set("", SERVING)
        if self._holds:
            log.warning("not ready", extra={"holds": self.holds})
        await self._apply()

    def hold_at_start(self, name: str, reason: str) -> None:
        """Set hold `name` before the servers start (a service's `build` does)."""
        if self._started:
            raise RuntimeError("readiness already started: use hold()")
        self._holds[name] = reason

    async def hold(self, name: str, reason: str) -> None:
        """Set (or re-word) hold `name`; readiness says NOT_SERVING while it is set."""
        was_ready = self.ready
        self._holds[name] = reason
        if was_ready and self._started:
            log.warning("not ready", extra={"hold": name, "reason": reason})
            await self._apply()

    async def release(self, name: str) -> None:
        """Clear hold `name`; readiness says SERVING again when no other hold is left."""
        if self._holds.pop(name, None) is None:
            return
        if self.ready and self._started:
            log.info("ready again", extra={"hold": name})
            await self._apply()

    async def enter_graceful_shutdown(self) -> None:
        """NOT_SERVING for every name, liveness included, for good."""
        self._shutting_down = True
        await self._health.enter_graceful_shutdown()

    async def _apply(self) -> None:
        if self._shutting_down:
            return
        status = SERVING if self.ready else NOT_SERVING
        for name in self._names:
            await self._health.set(name, status)
