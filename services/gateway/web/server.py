"""Serving the HTTP door on the gateway's `http_port` (0 disables it), for the lifetime of
the service host.

Shutdown runs beside the gRPC drain, not after it: when `host.stopping` is set (readiness
already NOT_SERVING) the listener closes and in-flight SSE streams get `server.grace_seconds`
to finish; those still open then end with `event: error` GATEWAY_STOPPING (never a clean end
over a truncated run), and the other requests in flight get the grace again from aiohttp's
shutdown. The host's `Phase.FINISH` waits for all that, so the peer channels the streams
relay through close only afterwards."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiohttp import web

from services.common.lifecycle import Phase
from services.common.server import PortInUse, ServiceHost
from services.common.tls import public_ssl_context
from services.gateway.web.middleware import MAX_BODY_KEY, observe
from services.gateway.web.sse import HEARTBEAT_KEY, STREAMS_KEY, OpenStreams

log = logging.getLogger(__name__)

STOPPING_KEY = web.AppKey("stopping", asyncio.Event)
"""Set when the host's graceful shutdown began (a stream cut by it says so)."""


def application(host: ServiceHost, routes: Sequence[web.RouteDef]) -> web.Application:
    """The HTTP door's app: `routes` behind the `observe` middleware, with the configured
    body limit and SSE heartbeat."""
    http = host.config.http
    app = web.Application(client_max_size=http.max_body_bytes, middlewares=[observe])
    app[MAX_BODY_KEY] = http.max_body_bytes
    app[HEARTBEAT_KEY] = http.heartbeat_seconds
    app[STOPPING_KEY] = host.stopping
    app[STREAMS_KEY] = OpenStreams()
    app.add_routes(routes)
    return app


async def serve_http(host: ServiceHost, routes: Sequence[web.RouteDef]) -> None:
    """Start the HTTP server with `routes`; it drains and stops when the host shuts down.
    PortInUse when the port is taken."""
    sc = host.config.services.get(host.service)
    if not sc.http_port:
        return
    app = application(host, routes)
    grace = host.config.server.grace_seconds
    runner = web.AppRunner(
        app,
        # Access logs off: request logging is the handlers' (with ids, never credentials).
        access_log=None,
        handle_signals=False,
        # aiohttp >= 3.9 lets a handler run on after its client disconnected; a run whose
        # caller went away must be cancelled down the chain (SPEC 2), as on the gRPC door.
        handler_cancellation=True,
        shutdown_timeout=grace,
    )
    await runner.setup()
    tls = public_ssl_context(host.config)
    site = web.TCPSite(runner, sc.host, sc.http_port, ssl_context=tls)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        raise PortInUse(f"{sc.host}:{sc.http_port}") from error
    drained = asyncio.Event()

    async def drain_when_stopping() -> None:
        try:
            await host.stopping.wait()
            await site.stop()  # no new connections
            await app[STREAMS_KEY].drain(grace)
            await runner.cleanup()  # the other requests in flight get the grace too
        finally:
            drained.set()

    async def wait_drained() -> None:
        await drained.wait()

    host.spawn("http-door", drain_when_stopping)
    host.on_stop(wait_drained, Phase.FINISH)
    log.info(
        "http serving",
        extra={"http_port": sc.http_port, "tls": "public-tls" if tls else "plaintext"},
    )
