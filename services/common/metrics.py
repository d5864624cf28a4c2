"""Prometheus metrics shared by every service: RPC counts and latency by method and code,
and the state of each peer channel."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
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


def serve_metrics(host: str, port: int) -> None:
    """Expose /metrics on `port` (0 = disabled) from a background thread."""
    if port:
        start_http_server(port, addr=host)


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
