"""Noticing that a graceful shutdown began, so endless watch streams can end at once.

The shared bootstrap first flips health to NOT_SERVING, then lets in-flight RPCs drain for
the grace period, and only then runs `on_stop` callbacks. A WatchRankings stream never ends
by itself: without this it would hold every shutdown for the whole grace period and then be
cut. The liveness status `""` turns NOT_SERVING only when the shutdown begins, so watching it
through the health servicer's own `Watch` (with a minimal stand-in for the call context,
which `Watch` only writes to) tells us when to end the streams cleanly.
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpc_health.v1 import health_pb2


class _StatusSink:
    """Receives what `HealthServicer.Watch` would write to a client."""

    def __init__(self) -> None:
        self.not_serving = asyncio.Event()

    async def write(self, response: health_pb2.HealthCheckResponse) -> None:
        if response.status == health_pb2.HealthCheckResponse.NOT_SERVING:
            self.not_serving.set()


async def shutdown_started(health: Any) -> None:
    """Return once `health` (the process's aio HealthServicer) enters graceful shutdown."""
    sink = _StatusSink()
    watch = asyncio.ensure_future(health.Watch(health_pb2.HealthCheckRequest(service=""), sink))
    try:
        await sink.not_serving.wait()
    finally:
        watch.cancel()
