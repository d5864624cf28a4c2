"""Serving the HTTP door on the gateway's `http_port` (0 disables it), for the lifetime of
the service host."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiohttp import web

from services.common.server import PortInUse, ServiceHost
from services.common.tls import public_ssl_context

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 2 * 1024 * 1024
"""Largest request body (Execute's inputs are bounded at 1 MiB; JSON spends more bytes)."""


async def serve_http(host: ServiceHost, routes: Sequence[web.RouteDef]) -> None:
    """Start the HTTP server with `routes`; it stops when the host shuts down. PortInUse when
    the port is taken."""
    sc = host.config.services.get(host.service)
    if not sc.http_port:
        return
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.add_routes(routes)
    # Access logs off: request logging is the handlers' (with ids, never credentials).
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    tls = public_ssl_context(host.config)
    site = web.TCPSite(runner, sc.host, sc.http_port, shutdown_timeout=1.0, ssl_context=tls)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        raise PortInUse(f"{sc.host}:{sc.http_port}") from error
    host.on_stop(runner.cleanup)
    log.info(
        "http serving",
        extra={"http_port": sc.http_port, "tls": "public-tls" if tls else "plaintext"},
    )
