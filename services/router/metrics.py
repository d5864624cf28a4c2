"""The router's Prometheus metrics: fallbacks, circuit states, attempts, tokens and cost.

Circuit states are read when Prometheus scrapes (a collector over the live circuits), so an
open circuit whose cooldown has passed shows as half-open without any call having touched
it. `saga_router_circuit_state` values are those of `saga.router.v1.CircuitState`:
1 closed, 2 open, 3 half-open.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.router.attempts import AttemptRecord
from services.router.resilience import Resilience

FALLBACKS = Counter(
    "saga_router_fallbacks",
    "Moves from a failed provider to the next candidate.",
    ["from", "to", "reason"],
)
ATTEMPTS = Counter(
    "saga_router_attempts", "Provider attempts by how they ended.", ["provider", "status"]
)
TOKENS = Counter(
    "saga_router_tokens", "Tokens billed, by kind (input, output, cached).", ["provider", "kind"]
)
COST = Counter("saga_router_cost_micro_usd", "Cost of provider attempts, micro-USD.", ["provider"])
REFUSALS = Counter(
    "saga_router_refusals",
    "Candidates passed over without a call, by reason (CIRCUIT_OPEN, PROVIDER_LIMIT_REACHED, "
    "COST_LIMIT_EXCEEDED); each is also announced in the call's Skipped event.",
    ["provider", "reason"],
)
TTFT = Histogram(
    "saga_router_provider_ttft_seconds",
    "Time from calling a provider to its first token.",
    ["provider"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LATENCY = Histogram(
    "saga_router_provider_latency_seconds",
    "Time from calling a provider to the attempt's end.",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)


def observe_attempt(record: AttemptRecord) -> None:
    """Count one finished attempt."""
    p = record.provider
    ATTEMPTS.labels(p, record.status.name.lower()).inc()
    usage = record.usage
    if usage.input_tokens:
        TOKENS.labels(p, "input").inc(usage.input_tokens)
    if usage.output_tokens:
        TOKENS.labels(p, "output").inc(usage.output_tokens)
    if usage.cached_tokens:
        TOKENS.labels(p, "cached").inc(usage.cached_tokens)
    if record.cost_micro_usd:
        COST.labels(p).inc(record.cost_micro_usd)
    if record.ttft_ms:
        TTFT.labels(p).observe(record.ttft_ms / 1000)
    LATENCY.labels(p).observe(record.latency_ms / 1000)


class CircuitCollector(Collector):
    """`saga_router_circuit_state{provider}`, read from the live circuits at scrape time."""

    def __init__(self, resilience: Resilience) -> None:
        self._resilience = resilience

    def collect(self) -> Iterator[Metric]:
        """One sample per provider."""
        gauge = GaugeMetricFamily(
            "saga_router_circuit_state",
            "Circuit state per provider: 1 closed, 2 open, 3 half-open.",
            labels=["provider"],
        )
        for name, state in self._resilience.circuit_states().items():
            gauge.add_metric([name], state.value)
        yield gauge


_registered: CircuitCollector | None = None


def register_circuits(resilience: Resilience) -> None:
    """Expose `resilience`'s circuits (replacing any registered before in this process)."""
    global _registered
    if _registered is not None:
        REGISTRY.unregister(_registered)
    _registered = CircuitCollector(resilience)
    REGISTRY.register(_registered)
