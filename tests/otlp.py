"""An in-test OTLP trace receiver: a real grpc.aio `TraceService` that keeps every span."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)


@dataclass(frozen=True)
class Span:
    """The parts of a received span the tests look at."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any] = field(default_factory=dict)
    """Attribute values as Python values (str, int, float, bool, list)."""
    kind: int = 0
    """The OTLP `Span.SpanKind` (2 server, 3 client)."""
    status_code: int = 0
    """The OTLP `Status.StatusCode` (0 unset, 1 ok, 2 error)."""
    start_ns: int = 0
    end_ns: int = 0


SERVER = 2
CLIENT = 3
ERROR = 2


def _value(v: Any) -> Any:
    """An OTLP AnyValue as a Python value."""
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, which) if which else None


class Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """Receives OTLP/gRPC exports and records their spans."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.server: grpc.aio.Server | None = None
        self.endpoint = ""

    async def Export(self, request: Any, context: Any) -> Any:
        for resource_spans in request.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    self.spans.append(
                        Span(
                            service=service,
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            kind=s.kind,
                            status_code=s.status.code,
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                        )
                    )
        return trace_service_pb2.ExportTraceServiceResponse()

    async def start(self) -> str:
        """Listen on an ephemeral loopback port; return the endpoint URL."""
        self.server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.endpoint = f"http://127.0.0.1:{port}"
        return self.endpoint

    async def stop(self) -> None:
        """Stop listening."""
        if self.server is not None:
            await self.server.stop(0)
