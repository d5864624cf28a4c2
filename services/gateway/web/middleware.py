"""What every HTTP request goes through, as the guard is for every RPC: a server span (child
of the request's `traceparent`), counts and latency by route and status, and aiohttp's own
refusals (no such route, wrong method, body too large) in the one JSON error shape."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import Counter, Histogram

from services.common.errors import InvalidArgument, NotFound, SagaError, Unimplemented
from services.common.telemetry import end_http_span, start_http_span
from services.gateway.web.errors import error_response

log = logging.getLogger(__name__)

HTTP_REQUESTS = Counter(
    "saga_http_requests",
    "HTTP requests the gateway's HTTP door answered, by route, method and status "
    "(499: the client went away first).",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "saga_http_request_seconds",
    "Time from an HTTP request's start to its end (a whole stream for SSE).",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
)

_PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
"""Routes not traced: probes and scrapes are noise in traces (as gRPC health checks are)."""

CLIENT_CLOSED = 499
"""The status counted for a request whose client disconnected (nginx's convention)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_of(request: web.Request) -> str:
    """The route template a request matched (`/v1/executions/{execution_id}`), so metric
    labels stay bounded; `unmatched` for a path no route serves."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Span, metrics and JSON refusals around one request."""
    route = route_of(request)
    traced = None if route in _PROBES else start_http_span(request.method, route, request.headers)
    start = time.perf_counter()
    status = 500
    try:
        response = await _answer(request, handler)
        status = response.status
        return response
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        HTTP_REQUESTS.labels(route, request.method, str(status)).inc()
        HTTP_SECONDS.labels(route).observe(time.perf_counter() - start)
        if traced is not None:
            end_http_span(*traced, status)


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as refusal:
        return _refusal(request, refusal)
    except Exception as error:
        # A bug: the caller gets INTERNAL (no stack trace), the log gets the trace.
        if not isinstance(error, SagaError):
            log.exception("http handler failed", extra={"route": route_of(request)})
        return error_response(error)


def _refusal(request: web.Request, refusal: web.HTTPException) -> web.StreamResponse:
    """aiohttp's refusals as JSON errors, keeping their HTTP status and headers."""
    error: SagaError
    if isinstance(refusal, web.HTTPNotFound):
        error = NotFound(f"no route {request.path}", reason="ROUTE_NOT_FOUND")
    elif isinstance(refusal, web.HTTPMethodNotAllowed):
        error = Unimplemented(
            f"{request.method} is not a method of {request.path} (allowed: "
            f"{', '.join(sorted(refusal.allowed_methods))})",
            reason="METHOD_NOT_ALLOWED",
        )
    elif isinstance(refusal, web.HTTPRequestEntityTooLarge):
        error = InvalidArgument(
            f"the request body is larger than {request.app[MAX_BODY_KEY]} bytes",
            reason="REQUEST_TOO_LARGE",
            metadata={"maxBytes": str(request.app[MAX_BODY_KEY])},
        )
    else:
        return refusal
    headers = {k: v for k, v in refusal.headers.items() if k.lower() == "allow"}
    return error_response(error, headers, status=refusal.status)


MAX_BODY_KEY = web.AppKey("max_body_bytes", int)
"""The app's body limit, for the 413's message."""
