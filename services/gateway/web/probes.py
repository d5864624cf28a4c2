"""`/healthz`, `/readyz` and `/metrics` on the HTTP port, read from the same health state as
the gRPC probes (`""` is liveness; every built service name must be SERVING for readiness)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web
from grpc_health.v1 import health_pb2
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

_SERVING = health_pb2.HealthCheckResponse.SERVING


def _status_name(status: int) -> str:
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(status))


class Probes:
    """The probe handlers of one gateway process."""

    def __init__(self, health: Any, services: Sequence[str]) -> None:
        self._health = health
        self._services = tuple(services)

    def _status(self, name: str) -> int:
        # grpcio's aio HealthServicer keeps its table in `_server_status` and offers no
        # public read other than an RPC; reading it here keeps both doors on one state.
        statuses: dict[str, int] = self._health._server_status
        return int(statuses.get(name, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN))

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness: 200 while the process serves, 503 otherwise."""
        status = self._status("")
        return web.json_response(
            {"status": _status_name(status)}, status=200 if status == _SERVING else 503
        )

    async def readyz(self, request: web.Request) -> web.Response:
        """Readiness: 200 when every service of this process is SERVING; 503 names those
        that are not."""
        statuses = {name: self._status(name) for name in ("", *self._services)}
        ready = all(status == _SERVING for status in statuses.values())
        return web.json_response(
            {
                "status": "SERVING" if ready else "NOT_SERVING",
                "services": {name or "(liveness)": _status_name(s) for name, s in statuses.items()},
            },
            status=200 if ready else 503,
        )

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text, as the metrics port serves it."""
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    def routes(self) -> list[web.RouteDef]:
        """The probe routes."""
        return [
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readyz),
            web.get("/metrics", self.metrics),
        ]
