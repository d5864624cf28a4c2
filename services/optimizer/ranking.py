"""Provider ranking by strategy: pure functions over provider statistics (no gRPC, no I/O).

Scoring. Each criterion is scored in [0, 1], higher is better:

* cost — the estimated cost of one call (estimated input and output tokens at the
  provider's prices), lower is better, on a log scale (`log1p` of micro-USD): what matters
  is how many times dearer a provider is, so a 16x dearer model stays 16x dearer whatever
  else is configured, and one outlier price cannot squash the others' differences;
* latency — the mean of the normalised time to first token and whole-call latency, lower is
  better (a streaming caller feels the first, a complete-mode caller the second);
* quality — the quality prior;
* reliability — the success rate.

Each criterion is min-max normalised over the *non-dominated* eligible candidates only (the
Pareto front over estimated cost, time to first token, latency, quality and success rate):
a candidate that another is at least as good as on every one of those and better on one
never sets a range, and its scores are clamped to [0, 1]. When the front shares a value,
each candidate with that value (or better) scores 1 and a worse one 0. So adding a provider
that is worse on every dimension than one already there changes no other provider's scores,
and it can never rank above the provider that dominates it: the order among the others, and
so the top choice, stay what they were.

Single-criterion strategies order by the raw values, so no rounding can reorder them:
CHEAPEST by estimated cost, FASTEST by time to first token then latency, QUALITY by quality,
RELIABLE by success rate. BALANCED (cost 0.5, latency 0.3, quality 0.2) and CUSTOM order by
the weighted score (weights normalised to sum to 1). Ties go to a non-dominated candidate
before a dominated one, then to the provider name, so rankings are deterministic.

A candidate that lacks a required capability, whose success rate (live, see `metrics`) is
under the floor, or whose estimated cost the caller's remaining budget cannot cover, is
excluded with the reason. Circuits are the router's: it skips providers whose circuit is open
when it walks a ranking.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from services.common.call_options import MAX_WEIGHT
from services.common.config import ProviderConfig
from services.common.strategy import Strategy

SUCCESS_RATE_FLOOR = 0.5
"""Providers whose success rate is under this are excluded (LOW_SUCCESS_RATE)."""

_SCORE_DIGITS = 9  # weighted scores are compared rounded, so float noise cannot reorder ties


class ExclusionReason(enum.Enum):
    """Why a candidate is left out (values mirror saga.optimizer.v1.ExclusionReason)."""

    CIRCUIT_OPEN = 1
    LOW_SUCCESS_RATE = 2
    MISSING_CAPABILITY = 3
    BUDGET_EXHAUSTED = 4


WEIGHT_NAMES = ("cost", "latency", "quality", "reliability")
"""The criteria a `Weights` weighs, in the order of its fields (and of the proto message)."""


@dataclass(frozen=True)
class Weights:
    """Relative importance of each criterion (any non-negative scale)."""

    cost: float = 0.0
    latency: float = 0.0
    quality: float = 0.0
    reliability: float = 0.0

    @property
    def total(self) -> float:
        """The sum of the four weights."""
        return self.cost + self.latency + self.quality + self.reliability

    def problems(self) -> list[tuple[str, str]]:
        """What makes these weights unusable, as (criterion, why) pairs; empty when they are
        usable. Each weight must be finite, non-negative and at most `MAX_WEIGHT` (so their
        sum stays finite and normalising cannot turn them all into zeros), and one must be
        above zero."""
        found: list[tuple[str, str]] = []
        for name in WEIGHT_NAMES:
            value = getattr(self, name)
            if not math.isfinite(value):
                found.append((name, "must be finite"))
            elif value < 0:
                found.append((name, "must not be negative"))
            elif value > MAX_WEIGHT:
                found.append((name, f"must be at most {MAX_WEIGHT:g}"))
        if not found and self.total <= 0:
            found.append(("", "at least one weight must be above zero"))
        return found

    def is_valid(self) -> bool:
        """Finite, non-negative, bounded by `MAX_WEIGHT`, and not all zero."""
        return not self.problems()

    def normalised(self) -> Weights:
        """The same weights scaled to sum to 1 (call only when `is_valid`)."""
        total = self.total
        return Weights(
            self.cost / total, self.latency / total, self.quality / total, self.reliability / total
        )


STRATEGY_WEIGHTS: dict[Strategy, Weights] = {
    Strategy.CHEAPEST: Weights(cost=1.0),
    Strategy.FASTEST: Weights(latency=1.0),
    Strategy.QUALITY: Weights(quality=1.0),
    Strategy.BALANCED: Weights(cost=0.5, latency=0.3, quality=0.2),
    Strategy.RELIABLE: Weights(reliability=1.0),
}
"""The fixed weights of every strategy but CUSTOM."""


@dataclass(frozen=True)
class TokenEstimate:
    """Tokens one call is expected to use, for cost scoring."""

    input_tokens: int = 500
    output_tokens: int = 500


@dataclass(frozen=True)
class ProviderStats:
    """What ranking knows of one provider: prices, capabilities and its current metrics."""

    name: str
    model: str
    input_micro_usd_per_mtok: int
    output_micro_usd_per_mtok: int
    latency_ms: float
    ttft_ms: float
    quality: float
    success_rate: float
    capabilities: frozenset[str]

    @classmethod
    def from_config(cls, provider: ProviderConfig) -> ProviderStats:
        """Statistics seeded from a provider's configured priors."""
        return cls(
            name=provider.name,
            model=provider.model,
            input_micro_usd_per_mtok=provider.input_micro_usd_per_mtok,
            output_micro_usd_per_mtok=provider.output_micro_usd_per_mtok,
            latency_ms=provider.latency_ms,
            ttft_ms=provider.ttft_ms,
            quality=provider.quality,
            success_rate=provider.success_rate,
            capabilities=frozenset(provider.capabilities),
        )


@dataclass(frozen=True)
class Breakdown:
    """A candidate's normalised score per criterion, before weighting."""

    cost: float
    latency: float
    quality: float
    reliability: float
    estimated_cost_micro_usd: int


@dataclass(frozen=True)
class Ranked:
    """One eligible provider with its weighted score."""

    provider: str
    model: str
    score: float
    breakdown: Breakdown


@dataclass(frozen=True)
class Excluded:
    """A provider left out of a ranking, and why."""

    provider: str
    reason: ExclusionReason
    detail: str


@dataclass(frozen=True)
class Ranking:
    """The outcome of ranking: eligible providers best first, and the excluded ones."""

    strategy: Strategy
    weights: Weights
    ranked: tuple[Ranked, ...]
    excluded: tuple[Excluded, ...]

    @property
    def order(self) -> tuple[str, ...]:
        """Provider names, best first."""
        return tuple(r.provider for r in self.ranked)


def estimated_cost(stats: ProviderStats, estimate: TokenEstimate) -> int:
    """Expected cost of one call in micro-USD, rounded half up."""
    numerator = (
        estimate.input_tokens * stats.input_micro_usd_per_mtok
        + estimate.output_tokens * stats.output_micro_usd_per_mtok
    )
    return (numerator + 500_000) // 1_000_000


def _higher_is_better(values: Sequence[float], front: Sequence[bool]) -> list[float]:
    """Min-max over the values of the front (`front[i]`: candidate i is non-dominated),
    clamped to [0, 1]; when the front shares one value, 1 for that value or better, else 0."""
    ranged = [v for v, f in zip(values, front, strict=True) if f]
    low, high = min(ranged), max(ranged)
    if high == low:
        return [1.0 if v >= high else 0.0 for v in values]
    return [min(1.0, max(0.0, (v - low) / (high - low))) for v in values]


def _lower_is_better(values: Sequence[float], front: Sequence[bool]) -> list[float]:
    return _higher_is_better([-v for v in values], front)


def _criteria(stats: ProviderStats, cost: int) -> tuple[float, ...]:
    """The raw values dominance compares, each oriented so that higher is better."""
    return (-cost, -stats.ttft_ms, -stats.latency_ms, stats.quality, stats.success_rate)


def non_dominated(values: Sequence[tuple[float, ...]]) -> list[bool]:
    """For each candidate (its criteria, higher is better), whether no other candidate is at
    least as good on every criterion and better on one (the Pareto front). Quadratic in the
    candidates, who are few (a deployment's providers)."""

    def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        return a != b and all(x >= y for x, y in zip(a, b, strict=True))

    return [not any(dominates(other, mine) for other in values) for mine in values]


def _exclusion(
    stats: ProviderStats,
    required: frozenset[str],
    success_floor: float,
    cost: int,
    budget_left: int | None,
) -> Excluded | None:
    missing = sorted(required - stats.capabilities)
    if missing:
        return Excluded(
            stats.name, ExclusionReason.MISSING_CAPABILITY, f"lacks {', '.join(missing)}"
        )
    if stats.success_rate < success_floor:
        return Excluded(
            stats.name,
            ExclusionReason.LOW_SUCCESS_RATE,
            f"success rate {stats.success_rate:.3f} is under {success_floor:.3f}",
        )
    if budget_left is not None and (budget_left <= 0 or cost > budget_left):
        return Excluded(
            stats.name,
            ExclusionReason.BUDGET_EXHAUSTED,
            f"estimated cost {cost} micro-USD; {max(budget_left, 0)} left in the budget",
        )
    return None


def rank(
    candidates: Iterable[ProviderStats],
    strategy: Strategy,
    *,
    weights: Weights | None = None,
    required_capabilities: Iterable[str] = (),
    estimate: TokenEstimate | None = None,
    success_floor: float = SUCCESS_RATE_FLOOR,
    budget_left: int | None = None,
) -> Ranking:
    """Rank `candidates` for `strategy`. `weights` applies to CUSTOM (and must be valid
    there); the other strategies have fixed weights. `budget_left` is what remains of the
    caller's budget in micro-USD (None: no budget applies); with nothing left every
    candidate is excluded, otherwise those whose estimated cost exceeds it."""
    if strategy is Strategy.CUSTOM:
        if weights is None or not weights.is_valid():
            raise ValueError(
                "CUSTOM needs finite, non-negative, bounded weights that are not all zero"
            )
        applied = weights.normalised()
    else:
        applied = STRATEGY_WEIGHTS[strategy]
    estimate = estimate or TokenEstimate()
    required = frozenset(required_capabilities)

    eligible: list[ProviderStats] = []
    excluded: list[Excluded] = []
    for stats in candidates:
        cost = estimated_cost(stats, estimate)
        exclusion = _exclusion(stats, required, success_floor, cost, budget_left)
        if exclusion is None:
            eligible.append(stats)
        else:
            excluded.append(exclusion)
    if not eligible:
        return Ranking(strategy, applied, (), tuple(sorted(excluded, key=lambda e: e.provider)))

    costs = [estimated_cost(s, estimate) for s in eligible]
    front = non_dominated([_criteria(s, c) for s, c in zip(eligible, costs, strict=True)])
    # log1p: ratios of cost count, not differences (the module docstring); 0 stays 0.
    cost_scores = _lower_is_better([math.log1p(c) for c in costs], front)
    ttft_scores = _lower_is_better([s.ttft_ms for s in eligible], front)
    latency_only = _lower_is_better([s.latency_ms for s in eligible], front)
    quality_scores = _higher_is_better([s.quality for s in eligible], front)
    reliability_scores = _higher_is_better([s.success_rate for s in eligible], front)

    scored: list[tuple[tuple[object, ...], Ranked]] = []
    for i, stats in enumerate(eligible):
        breakdown = Breakdown(
            cost=cost_scores[i],
            latency=(ttft_scores[i] + latency_only[i]) / 2,
            quality=quality_scores[i],
            reliability=reliability_scores[i],
            estimated_cost_micro_usd=costs[i],
        )
        score = (
            applied.cost * breakdown.cost
            + applied.latency * breakdown.latency
            + applied.quality * breakdown.quality
            + applied.reliability * breakdown.reliability
        )
        ranked = Ranked(stats.name, stats.model, score, breakdown)
        scored.append((_order_key(strategy, stats, costs[i], score, not front[i]), ranked))
    scored.sort(key=lambda pair: pair[0])
    return Ranking(
        strategy,
        applied,
        tuple(r for _, r in scored),
        tuple(sorted(excluded, key=lambda e: e.provider)),
    )


def _order_key(
    strategy: Strategy, stats: ProviderStats, cost: int, score: float, dominated: bool
) -> tuple[object, ...]:
    """Sort key, best first: raw values for single-criterion strategies, the rounded score
    otherwise; a non-dominated candidate wins a tie over a dominated one (so adding a
    dominated provider cannot take the first place by its name), then the provider name."""
    if strategy is Strategy.CHEAPEST:
        return (cost, dominated, stats.name)
    if strategy is Strategy.FASTEST:
        return (stats.ttft_ms, stats.latency_ms, dominated, stats.name)
    if strategy is Strategy.QUALITY:
        return (-stats.quality, dominated, stats.name)
    if strategy is Strategy.RELIABLE:
        return (-stats.success_rate, dominated, stats.name)
    return (-round(score, _SCORE_DIGITS), dominated, stats.name)
