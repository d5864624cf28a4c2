"""Live provider metrics: rolling p50/p99 latency and time to first token, and success rate,
from the outcomes the routers report (pure: no gRPC, no I/O, the caller passes the time).

Each provider keeps its last `window` outcomes, of which those younger than `window_seconds`
count. Its configured priors count as `prior_weight` pseudo-observations: a p50 prior is
that many extra samples at the prior's value when the p50 is taken (likewise p99), and the
success-rate prior that many attempts succeeding at the prior rate. A few outcomes therefore
barely move a provider, while a run of bad ones (more than `prior_weight`) takes over its
median and sinks its success rate — and as samples age out, the priors rule again, so a
provider nobody calls any more recovers by itself.

What an outcome says about the provider:
* a cancelled attempt says nothing (the caller went away or its deadline passed);
* nor does a failure the provider is not to blame for (`NEUTRAL_REASONS`);
* any other failure counts against the success rate;
* latency comes from succeeded attempts only (a quick error is not a fast answer);
* time to first token from any attempt that saw a first token.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from services.common.config import ProviderConfig
from services.optimizer.ranking import ProviderStats

NEUTRAL_REASONS = frozenset(
    {
        "PROVIDER_REJECTED_INPUT",
        "PROVIDER_CONTEXT_LENGTH_EXCEEDED",
        "PROVIDER_CONTENT_FILTERED",
        "CIRCUIT_OPEN",
        "PROVIDER_LIMIT_REACHED",
    }
)
"""Failure reasons that say nothing of a provider's health, so they stay out of its success
rate: the request was at fault (rejected input, too long a context, content policy), or the
router never reached the provider (its circuit was open, or the router's own limit for it was
full — counting those would keep a provider down only because it was down)."""


@dataclass(frozen=True)
class Prior:
    """What is assumed of a provider before (and beside) live samples. The configuration
    gives one latency and one TTFT figure, taken as both p50 and p99 until an operator sets
    the p99s with UpdateMetrics."""

    p50_latency_ms: float
    p99_latency_ms: float
    p50_ttft_ms: float
    p99_ttft_ms: float
    success_rate: float
    quality: float

    @classmethod
    def from_config(cls, provider: ProviderConfig) -> Prior:
        """The priors configured for `provider`."""
        return cls(
            p50_latency_ms=provider.latency_ms,
            p99_latency_ms=provider.latency_ms,
            p50_ttft_ms=provider.ttft_ms,
            p99_ttft_ms=provider.ttft_ms,
            success_rate=provider.success_rate,
            quality=provider.quality,
        )


@dataclass(frozen=True)
class Sample:
    """What one outcome tells about its provider. None fields tell nothing on that count."""

    at: float
    succeeded: bool | None
    latency_ms: float | None
    ttft_ms: float | None

    @classmethod
    def of_outcome(
        cls, *, at: float, status: str, error_reason: str, latency_ms: int, ttft_ms: int
    ) -> Sample | None:
        """The sample of an outcome (`status` succeeded/failed/cancelled), or None when it
        says nothing about the provider."""
        ttft = float(ttft_ms) if ttft_ms > 0 else None
        if status == "succeeded":
            return cls(at, True, float(max(latency_ms, 0)), ttft)
        if status == "failed" and error_reason not in NEUTRAL_REASONS:
            return cls(at, False, None, ttft)
        return None


@dataclass(frozen=True)
class Metrics:
    """A provider's current metrics, priors blended with the samples in its window."""

    provider: str
    model: str
    p50_latency_ms: int
    p99_latency_ms: int
    p50_ttft_ms: int
    p99_ttft_ms: int
    success_rate: float
    samples: int
    quality: float


def weighted_percentile(
    samples: Sequence[float], prior: float, prior_weight: float, q: float
) -> float:
    """The `q` quantile (0 < q ≤ 1, nearest rank) of `samples` plus `prior_weight`
    pseudo-samples at `prior`."""
    ordered = sorted(samples)
    target = q * (len(ordered) + prior_weight)
    seen = 0.0
    prior_counted = False
    for value in ordered:
        if not prior_counted and prior < value:
            seen += prior_weight
            prior_counted = True
            if seen >= target:
                return prior
        seen += 1
        if seen >= target:
            return value
    # Only the pseudo-samples (at or above every sample) are left to reach the target.
    return prior if not prior_counted else ordered[-1]


class ProviderWindow:
    """One provider's recent samples, bounded by count."""

    def __init__(self, size: int) -> None:
        self._samples: deque[Sample] = deque(maxlen=size)

    def add(self, sample: Sample) -> None:
        """Keep `sample` (the oldest leaves once the window is full)."""
        self._samples.append(sample)

    def clear(self) -> None:
        """Forget every sample."""
        self._samples.clear()

    def recent(self, since: float) -> list[Sample]:
        """The samples taken at or after `since`."""
        return [s for s in self._samples if s.at >= since]


class LiveMetrics:
    """Every configured provider's priors and recent samples."""

    def __init__(
        self,
        providers: Iterable[ProviderConfig],
        *,
        window: int,
        window_seconds: float,
        prior_weight: float,
        priors: Mapping[str, Prior] | None = None,
    ) -> None:
        configured = tuple(providers)
        self._base = {p.name: ProviderStats.from_config(p) for p in configured}
        saved = priors or {}
        self._priors = {p.name: saved.get(p.name) or Prior.from_config(p) for p in configured}
        self._windows = {name: ProviderWindow(window) for name in self._base}
        self._window_seconds = window_seconds
        self._prior_weight = prior_weight

    @property
    def providers(self) -> tuple[str, ...]:
        """The configured provider names, in configuration order."""
        return tuple(self._base)

    def knows(self, provider: str) -> bool:
        """Whether `provider` is configured."""
        return provider in self._base

    def prior(self, provider: str) -> Prior:
        """The priors in effect for `provider`."""
        return self._priors[provider]

    def record(self, provider: str, sample: Sample, now: float) -> bool:
        """Add a sample; False (ignored) for an unknown provider or a sample already older
        than the window."""
        window = self._windows.get(provider)
        if window is None or sample.at < now - self._window_seconds:
            return False
        window.add(sample)
        return True

    def replace(self, provider: str, samples: Iterable[Sample], now: float) -> int:
        """Make `samples` (oldest first) `provider`'s whole window, as re-read from the
        shared ledger; how many were kept (the ones inside the window)."""
        window = self._windows[provider]
        window.clear()
        kept = 0
        for sample in samples:
            if self.record(provider, sample, now):
                kept += 1
        return kept

    def set_prior(self, provider: str, prior: Prior, *, reset_samples: bool = False) -> None:
        """Replace `provider`'s priors; `reset_samples` drops its live samples too."""
        self._priors[provider] = prior
        if reset_samples:
            self._windows[provider].clear()

    def metrics(self, provider: str, now: float) -> Metrics:
        """`provider`'s current metrics."""
        prior = self._priors[provider]
        recent = self._windows[provider].recent(now - self._window_seconds)
        weight = self._prior_weight
        latencies = [s.latency_ms for s in recent if s.latency_ms is not None]
        ttfts = [s.ttft_ms for s in recent if s.ttft_ms is not None]
        attempts = [s.succeeded for s in recent if s.succeeded is not None]
        successes = sum(1 for ok in attempts if ok)
        success_rate = (prior.success_rate * weight + successes) / (weight + len(attempts))
        return Metrics(
            provider=provider,
            model=self._base[provider].model,
            p50_latency_ms=round(weighted_percentile(latencies, prior.p50_latency_ms, weight, 0.5)),
            p99_latency_ms=round(
                weighted_percentile(latencies, prior.p99_latency_ms, weight, 0.99)
            ),
            p50_ttft_ms=round(weighted_percentile(ttfts, prior.p50_ttft_ms, weight, 0.5)),
            p99_ttft_ms=round(weighted_percentile(ttfts, prior.p99_ttft_ms, weight, 0.99)),
            success_rate=min(1.0, max(0.0, success_rate)),
            samples=len(recent),
            quality=prior.quality,
        )

    def stats(self, now: float) -> tuple[ProviderStats, ...]:
        """Ranking statistics of every provider: prices and capabilities from the
        configuration, latency, TTFT (the p50s), success rate and quality live."""
        out = []
        for name, base in self._base.items():
            m = self.metrics(name, now)
            out.append(
                dataclasses.replace(
                    base,
                    latency_ms=float(m.p50_latency_ms),
                    ttft_ms=float(m.p50_ttft_ms),
                    success_rate=m.success_rate,
                    quality=m.quality,
                )
            )
        return tuple(out)
