"""Live metrics: percentiles with priors as pseudo-observations, the success rate, the
window, and ranking that follows them (20 slow or failing outcomes flip a provider)."""

from __future__ import annotations

import dataclasses

import pytest

from services.common.config import ProviderConfig
from services.common.strategy import Strategy
from services.optimizer.live_metrics import LiveMetrics, Prior, Sample, weighted_percentile
from services.optimizer.ranking import ExclusionReason, rank

NOW = 1_800_000_000.0

FAST = ProviderConfig(
    name="fast", kind="sim", model="m-fast", latency_ms=300, ttft_ms=40, success_rate=0.99
)
STEADY = ProviderConfig(
    name="steady", kind="sim", model="m-steady", latency_ms=600, ttft_ms=120, success_rate=0.98
)


def live(**overrides: float) -> LiveMetrics:
    settings: dict[str, float] = {"window": 100, "window_seconds": 300, "prior_weight": 10}
    settings.update(overrides)
    return LiveMetrics(
        [FAST, STEADY],
        window=int(settings["window"]),
        window_seconds=settings["window_seconds"],
        prior_weight=settings["prior_weight"],
    )


def ok(latency: float, ttft: float, at: float = NOW) -> Sample:
    return Sample(at, True, latency, ttft)


def failed(at: float = NOW) -> Sample:
    return Sample(at, False, None, None)


def test_weighted_percentile_counts_the_prior_as_that_many_samples() -> None:
    assert weighted_percentile([], 40, 10, 0.5) == 40
    # Ten pseudo-samples at 40 against ten real ones at 500: the median stays at 40 ...
    assert weighted_percentile([500] * 10, 40, 10, 0.5) == 40
    # ... and moves once the real ones are the majority.
    assert weighted_percentile([500] * 11, 40, 10, 0.5) == 500
    assert weighted_percentile([10, 20, 30, 40, 50], 1000, 0.001, 0.5) == 30
    assert weighted_percentile([10, 20, 30, 40, 50], 1000, 0.001, 0.99) == 50
    # The prior above every sample is only reached by the top quantiles.
    assert weighted_percentile([10] * 10, 1000, 10, 0.99) == 1000


def test_without_samples_the_metrics_are_the_priors() -> None:
    m = live().metrics("fast", NOW)
    assert (m.p50_latency_ms, m.p99_latency_ms, m.p50_ttft_ms, m.p99_ttft_ms) == (300, 300, 40, 40)
    assert (m.success_rate, m.samples, m.quality, m.model) == (0.99, 0, 0.5, "m-fast")


def test_a_few_bad_outcomes_barely_move_a_provider() -> None:
    metrics = live()
    for _ in range(3):
        metrics.record("fast", ok(5000, 3000), NOW)
    metrics.record("fast", failed(), NOW)
    m = metrics.metrics("fast", NOW)
    assert (m.p50_latency_ms, m.p50_ttft_ms) == (300, 40)
    assert m.p99_ttft_ms == 3000  # the tail does show them
    assert m.samples == 4
    assert m.success_rate == pytest.approx((0.99 * 10 + 3) / 14)
    assert m.success_rate > 0.9


def test_twenty_slow_outcomes_flip_fastest() -> None:
    metrics = live()
    before = rank(metrics.stats(NOW), Strategy.FASTEST)
    assert before.order == ("fast", "steady")
    for _ in range(20):
        metrics.record("fast", ok(4000, 900), NOW)
    m = metrics.metrics("fast", NOW)
    assert (m.p50_latency_ms, m.p50_ttft_ms) == (4000, 900)
    assert rank(metrics.stats(NOW), Strategy.FASTEST).order == ("steady", "fast")


def test_twenty_failures_sink_reliable_and_then_exclude_the_provider() -> None:
    metrics = live()
    assert rank(metrics.stats(NOW), Strategy.RELIABLE).order == ("fast", "steady")
    for _ in range(20):
        metrics.record("fast", failed(), NOW)
    m = metrics.metrics("fast", NOW)
    assert m.success_rate == pytest.approx(0.99 * 10 / 30)
    ranking = rank(metrics.stats(NOW), Strategy.RELIABLE)
    assert ranking.order == ("steady",)
    assert [(e.provider, e.reason) for e in ranking.excluded] == [
        ("fast", ExclusionReason.LOW_SUCCESS_RATE)
    ]


def test_samples_leave_the_window_by_count_and_by_age() -> None:
    metrics = live(window=5, window_seconds=60)
    for _ in range(5):
        metrics.record("fast", failed(), NOW)
    for _ in range(5):
        metrics.record("fast", ok(300, 40), NOW)
    # Only the last five (all successes) are kept.
    assert metrics.metrics("fast", NOW).success_rate > 0.99
    assert metrics.metrics("fast", NOW).samples == 5
    # A minute later they are too old: the priors rule again.
    later = metrics.metrics("fast", NOW + 61)
    assert (later.samples, later.success_rate) == (0, 0.99)
    # A sample already older than the window is not taken; a recent one is.
    assert metrics.record("fast", failed(at=NOW - 61), NOW) is False
    assert metrics.record("fast", failed(at=NOW - 1), NOW) is True
    assert metrics.record("nobody", failed(), NOW) is False


def test_outcomes_that_do_not_blame_the_provider_are_left_out() -> None:
    def sample(status: str, reason: str = "", ttft: int = 0) -> Sample | None:
        return Sample.of_outcome(
            at=NOW, status=status, error_reason=reason, latency_ms=700, ttft_ms=ttft
        )

    assert sample("cancelled") is None
    assert sample("failed", "PROVIDER_REJECTED_INPUT") is None
    # Positive controls: a provider failure counts (with a first token if one came) ...
    assert sample("failed", "PROVIDER_UNAVAILABLE", ttft=55) == Sample(NOW, False, None, 55.0)
    # ... and a success gives latency, and TTFT only if a token arrived.
    assert sample("succeeded") == Sample(NOW, True, 700.0, None)


def test_operator_priors_replace_the_configured_ones_and_can_reset_samples() -> None:
    metrics = live()
    for _ in range(20):
        metrics.record("fast", ok(4000, 900), NOW)
    prior = dataclasses.replace(metrics.prior("fast"), quality=0.9, p99_ttft_ms=100)
    metrics.set_prior("fast", prior)
    m = metrics.metrics("fast", NOW)
    assert (m.quality, m.samples, m.p50_ttft_ms) == (0.9, 20, 900)
    metrics.set_prior("fast", prior, reset_samples=True)
    m = metrics.metrics("fast", NOW)
    assert (m.samples, m.p50_ttft_ms, m.p99_ttft_ms) == (0, 40, 100)


def test_saved_priors_seed_a_provider() -> None:
    saved = Prior(100, 200, 10, 20, 0.7, 0.8)
    metrics = LiveMetrics(
        [FAST, STEADY], window=10, window_seconds=60, prior_weight=10, priors={"fast": saved}
    )
    assert metrics.prior("fast") == saved
    assert metrics.prior("steady") == Prior.from_config(STEADY)
    stats = {s.name: s for s in metrics.stats(NOW)}
    assert (stats["fast"].ttft_ms, stats["fast"].success_rate, stats["fast"].quality) == (
        10.0,
        0.7,
        0.8,
    )
