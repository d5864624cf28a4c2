"""OpenTelemetry tracing, lean: one server span per traced RPC, W3C context in metadata.

Every process has a tracer provider (exporting over OTLP/gRPC when an endpoint is
configured). The guard opens a SERVER span around each RPC, as the child of the caller's
`traceparent`, and makes it current for the RPC's task; the peer channels put the current
context into the `traceparent` metadata of every outgoing call. So one trace spans every hop,
and the parent of a service's span is the span of the service that called it.

Why not opentelemetry-instrumentation-grpc: its aio interceptors cost ~300-350 µs of CPU per
hop per call (bench/README.md), wrap every streamed message, and on a cancelled stream
detach their context from another task and log errors. Here a span costs one extract, one
start and one end, and nothing per message. Health checks and reflection are not traced.
Call `setup_tracing` before any server or channel is created.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import Token
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_provider: TracerProvider | None = None
_tracer: trace.Tracer = trace.get_tracer("saga")
_propagator = TraceContextTextMapPropagator()
_CONTEXT_KEYS = ("traceparent", "tracestate")

# Probes and reflection are noise in traces.
_UNTRACED = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def traced(method: str) -> bool:
    """Whether calls of `method` get a span."""
    return not method.startswith(_UNTRACED)


def setup_tracing(service_name: str, otlp_endpoint: str) -> TracerProvider:
    """Install this process's tracer provider (exporting to `otlp_endpoint` if set)."""
    global _provider, _tracer
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        insecure = not otlp_endpoint.startswith("https://")
        # Batching settings come from the standard OTEL_BSP_* variables.
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=insecure))
        )
    trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = provider.get_tracer("saga")
    return provider


def start_server_span(method: str, metadata: Iterable[tuple[str, Any]] | None) -> Span:
    """Open the SERVER span of one RPC and make it current for the RPC's task.

    grpc.aio runs each RPC in its own task, whose context dies with it: the context is
    attached and never detached, so nothing can detach it from the wrong task later."""
    carrier = {k: v for k, v in metadata or () if k in _CONTEXT_KEYS and isinstance(v, str)}
    parent = _propagator.extract(carrier) if carrier else None
    service, _, name = method[1:].partition("/")
    span = _tracer.start_span(
        method,
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
    )
    otel_context.attach(trace.set_span_in_context(span, parent))
    return span


MAX_TRACEPARENT_CHARS = 128
"""A traceparent carried in a message (not metadata) longer than this is not parsed."""


@contextmanager
def span_in_trace(name: str, traceparent: str, **attributes: Any) -> Iterator[Span]:
    """An INTERNAL span, current inside the block, as the child of `traceparent` — a trace
    context carried in a message rather than in the call's metadata (the optimizer records
    many calls' outcomes in one RPC, each in its own run's trace). An empty or invalid one
    gives a root span, never the child of whatever is current."""
    carrier = {"traceparent": traceparent} if 0 < len(traceparent) <= MAX_TRACEPARENT_CHARS else {}
    parent = _propagator.extract(carrier) if carrier else otel_context.Context()
    with _tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.INTERNAL, attributes=attributes
    ) as span:
        yield span


def end_server_span(span: Span, code: str) -> None:
    """Close an RPC's span with its final status code."""
    span.set_attribute("rpc.grpc.status_code", grpc.StatusCode[code].value[0])
    if code not in ("OK", "CANCELLED"):
        span.set_status(Status(StatusCode.ERROR, code))
    span.end()


def start_http_span(
    method: str, route: str, headers: Mapping[str, str]
) -> tuple[Span, Token[otel_context.Context]]:
    """Open the SERVER span of one HTTP request (the gateway's HTTP door, which the guard
    does not see) as the child of its `traceparent`, and make it current; end it with
    `end_http_span(span, token, status)` in the same task.

    Unlike an RPC's task, an HTTP connection's task serves one request after another, so the
    context is detached again (a later request must not become this one's child)."""
    carrier = {k: v for k in _CONTEXT_KEYS if (v := headers.get(k)) is not None}
    # No traceparent: a root span, never the child of whatever is current.
    parent = _propagator.extract(carrier) if carrier else otel_context.Context()
    span = _tracer.start_span(
        f"{method} {route}",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "http.route": route},
    )
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    return span, token


def end_http_span(span: Span, token: Token[otel_context.Context], status: int) -> None:
    """Close an HTTP request's span with its response status (5xx is an error)."""
    otel_context.detach(token)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR, str(status)))
    span.end()


def with_trace_context(metadata: Any) -> Any:
    """`metadata` (None, a sequence of pairs or grpc.aio.Metadata) plus the current trace
    context, when there is one."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    if not carrier:
        return metadata
    if metadata is None:
        return tuple(carrier.items())
    return (*tuple(metadata), *carrier.items())


class _Traced:
    """A channel's multi-callable that puts the current trace context into each call's
    metadata. A plain wrapper rather than a grpc.aio client interceptor: grpc.aio runs an
    intercepted call through an extra task, and a stream's every message through an extra
    async iterator (~80 µs per call and several µs per message and hop, bench/README.md)."""

    __slots__ = ("_call",)

    def __init__(self, call: Any) -> None:
        self._call = call

    def __call__(self, request: Any, *, metadata: Any = None, **kwargs: Any) -> Any:
        return self._call(request, metadata=with_trace_context(metadata), **kwargs)


class TracedChannel(grpc.aio.Channel):
    """A grpc.aio channel whose every call carries the current trace context (see `_Traced`);
    everything else is the wrapped channel's."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _Traced(self._channel.unary_unary(*args, **kwargs))

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _Traced(self._channel.unary_stream(*args, **kwargs))

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _Traced(self._channel.stream_unary(*args, **kwargs))

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _Traced(self._channel.stream_stream(*args, **kwargs))

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._channel.channel_ready()

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    async def __aenter__(self) -> TracedChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close(None)


def shutdown_tracing() -> None:
    """Flush pending spans (called on shutdown)."""
    if _provider is not None:
        _provider.shutdown()
