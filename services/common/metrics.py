"""Prometheus metrics shared by every service: RPC counts and latency by method and code."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

RPC_HANDLED = Counter(
    "saga_rpc_server_handled",
    "RPCs completed by this server, by method and status code.",
    ["method", "code"],
)
RPC_SECONDS = Histogram(
    "saga_rpc_server_handling_seconds",
    "Time from an RPC's start to its end (whole stream for streaming RPCs).",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def serve_metrics(host: str, port: int) -> None:
    """Expose /metrics on `port` (0 = disabled) from a background thread."""
    if port:
        start_http_server(port, addr=host)
