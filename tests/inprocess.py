"""Serve servicers inside the test process (after grpclib's `testing.ChannelFor`).

A servicer test that needs no peers and no process — what a servicer answers, its error
reasons, who may call it — serves the servicer here, behind the same `Guard` a service
uses, on an ephemeral loopback port, and talks to it over a real channel. Starting,
configuration, TLS and shutdown stay with the process tests in tests/integration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from services.common.guard import Context, Guard, Identify
from services.common.server import Registration


def as_caller(caller: str) -> Identify:
    """An identity that names `caller` for every call (a servicer that looks up its caller
    itself, like the vault's audit, is given the one the guard uses)."""

    def identify(_context: Context) -> str:
        return caller

    return identify


@asynccontextmanager
async def serve(
    service: str, *registrations: Registration, caller: str
) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to `registrations` served as `service` does; every call arrives from
    `caller` and is checked against the call matrix like a call over mTLS."""
    server = grpc.aio.server(interceptors=[Guard(f"{service}.saga", as_caller(caller))])
    for registration in registrations:
        registration.add(registration.servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)
