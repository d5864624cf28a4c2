"""The router's Prometheus metrics: fallbacks, circuit states, attempts, tokens and cost.

Circuit states are read when Prometheus scrapes (a collector over the live circuits), so an
open circuit whose cooldown has passed shows as half-open without any call having touched
it. `saga_router_circuit_state` values are those of `saga.router.v1.CircuitState`:
1 closed, 2 open, 3 half-open.

The outbox's gauges (`saga_router_outbox_backlog`, `…_oldest_age_seconds`, `…_in_flight`)
are read at scrape time too, from the outbox's latest reading (at most a second old; the age
as of the scrape); `saga_router_outbox_dead_letters_total` counts outcomes the optimizer
refused for good — any increase wants an operator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.common.circuit import CircuitCollector
from services.common.metrics import register_collector
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
    "saga_router_tokens",
    "Tokens billed, by kind (input, output, cached, cache_write).",
    ["provider", "kind"],
)
COST = Counter("saga_router_cost_micro_usd", "Cost of provider attempts, micro-USD.", ["provider"])
REFUSALS = Counter(
    "saga_router_refusals",
    "Candidates passed over without a call, by reason (CIRCUIT_OPEN, PROVIDER_LIMIT_REACHED, "
    "COST_LIMIT_EXCEEDED); each is also announced in the call's Skipped event.",
    ["provider", "reason"],
)
DEAD_LETTERS = Counter(
    "saga_router_outbox_dead_letters",
    "Usage outcomes moved to the dead-letter table: the optimizer can never accept them.",
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
    if usage.cache_write_tokens:
        TOKENS.labels(p, "cache_write").inc(usage.cache_write_tokens)
    if record.cost_micro_usd:
        COST.labels(p).inc(record.cost_micro_usd)
    if record.ttft_ms:
        TTFT.labels(p).observe(record.ttft_ms / 1000)
    LATENCY.labels(p).observe(record.latency_ms / 1000)


def register_circuits(resilience: Resilience) -> None:
    """Expose `resilience`'s circuits (replacing any registered before in this process)."""
    register_collector(
        "router-circuits",
        CircuitCollector(
            "saga_router_circuit_state", "provider", "provider", resilience.circuit_states
        ),
    )


OutboxGauges = Callable[[], tuple[int, float, int]]
"""(backlog, the oldest outcome's age in seconds, attempts in flight) — `Outbox.gauges`."""


class OutboxCollector(Collector):
    """The outbox's backlog, its oldest row's age and its attempts in flight, at scrape
    time."""

    def __init__(self, gauges: OutboxGauges) -> None:
        self._gauges = gauges

    def collect(self) -> Iterator[Metric]:
        """Three gauges."""
        backlog, age, in_flight = self._gauges()
        yield GaugeMetricFamily(
            "saga_router_outbox_backlog",
            "Usage outcomes stored and not yet acknowledged by the optimizer.",
            value=backlog,
        )
        yield GaugeMetricFamily(
            "saga_router_outbox_oldest_age_seconds",
            "How long the oldest unacknowledged usage outcome has waited (0: none).",
            value=age,
        )
        yield GaugeMetricFamily(
            "saga_router_outbox_in_flight",
            "Attempts in flight held as provisional (estimated) usage records.",
            value=in_flight,
        )


def register_outbox(gauges: OutboxGauges) -> None:
    """Expose an outbox's gauges (replacing any registered before in this process)."""
    register_collector("router-outbox", OutboxCollector(gauges))
