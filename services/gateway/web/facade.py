"""The JSON facade of the public contract (SPEC 3.1): each route is a gateway RPC."""

from __future__ import annotations

from aiohttp import web

from saga.gateway.v1 import patterns_pb2
from services.gateway.patterns import PatternServicer
from services.gateway.web.calls import call_unary

READ_TIMEOUT_SECONDS = 30.0
"""Deadline of a read (the gRPC door's callers choose theirs; HTTP callers get this)."""


class Facade:
    """The facade's handlers, over the gateway's servicers."""

    def __init__(self, patterns: PatternServicer) -> None:
        self._patterns = patterns

    async def list_patterns(self, request: web.Request) -> web.Response:
        """GET /v1/patterns: ListPatterns."""
        return await call_unary(
            self._patterns.ListPatterns,
            patterns_pb2.ListPatternsRequest(),
            request,
            READ_TIMEOUT_SECONDS,
        )

    def routes(self) -> list[web.RouteDef]:
        """The facade's routes."""
        return [web.get("/v1/patterns", self.list_patterns)]
