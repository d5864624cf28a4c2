"""Prometheus metrics shared by every service: RPC counts and latency by method and code,
and the state of each peer channel."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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


class _MetricsHandler(BaseHTTPRequestHandler):
    """`GET /metrics` and nothing else: prometheus_client's own server answers every path
    with 200, which a probe pointed at the wrong port would take for health."""

    def do_GET(self) -> None:
        """Answer a scrape (the name is the one http.server calls)."""
        if self.path.split("?", 1)[0] != "/metrics":
            self._answer(404, b"not found: this port serves /metrics only\n", "text/plain")
            return
        self._answer(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Silent: scrapes every few seconds would drown the service's own log."""


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def serve_metrics(host: str, port: int) -> None:
    """Expose /metrics on `port` (0 = disabled) from a background thread, as
    prometheus_client's server does, off the event loop (a busy loop still gets scraped)."""
    if port:
        server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
        server = server_class((host, port), _MetricsHandler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()


PeerStates = Callable[[], Mapping[str, int]]


class PeerChannelCollector(Collector):
    """`saga_peer_channel_state{peer}`, read from the channels at scrape time.

    This is how a service reports a peer it cannot reach: its readiness stays as it is (a
    dependent dropped from its Service for a peer's outage would turn one failure into a
    total one), its calls fail fast with UNAVAILABLE, and this gauge says which peer."""

    def __init__(self, states: PeerStates) -> None:
        self._states = states

    def collect(self) -> Iterator[Metric]:
        """One sample per peer channel opened so far."""
        gauge = GaugeMetricFamily(
            "saga_peer_channel_state",
            "gRPC connectivity of the channel to each peer: 0 idle, 1 connecting, 2 ready, "
            "3 transient failure (unreachable or hung), 4 shut down.",
            labels=["peer"],
        )
        for peer, state in sorted(self._states().items()):
            gauge.add_metric([peer], state)
        yield gauge


_registered: dict[str, Collector] = {}


def register_collector(key: str, collector: Collector) -> None:
    """Register `collector` in place of the one registered under `key` before (a process
    builds a service again in tests and benchmarks)."""
    before = _registered.pop(key, None)
    if before is not None:
        REGISTRY.unregister(before)
    _registered[key] = collector
    REGISTRY.register(collector)


def register_peer_channels(states: PeerStates) -> None:
    """Expose this process's peer channels (replacing any registered before)."""
    register_collector("peer-channels", PeerChannelCollector(states))
