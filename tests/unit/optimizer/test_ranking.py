"""Ranking: every strategy's order, normalisation, tie-breaks and exclusions."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.call_options import MAX_WEIGHT
from services.common.strategy import Strategy
from services.optimizer.ranking import (
    ExclusionReason,
    ProviderStats,
    TokenEstimate,
    Weights,
    estimated_cost,
    rank,
)


def stats(name: str, **overrides: Any) -> ProviderStats:
    base = ProviderStats(
        name=name,
        model=f"{name}-model",
        input_micro_usd_per_mtok=1_000_000,
        output_micro_usd_per_mtok=1_000_000,
        latency_ms=500.0,
        ttft_ms=200.0,
        quality=0.5,
        success_rate=0.99,
        capabilities=frozenset({"chat", "streaming"}),
    )
    return dataclasses.replace(base, **overrides)


# cheap: lowest price; quick: lowest ttft; smart: best quality; steady: best success rate.
CHEAP = stats("cheap", input_micro_usd_per_mtok=100_000, output_micro_usd_per_mtok=200_000)
QUICK = stats("quick", ttft_ms=20.0, latency_ms=100.0)
SMART = stats(
    "smart",
    quality=0.95,
    input_micro_usd_per_mtok=5_000_000,
    output_micro_usd_per_mtok=15_000_000,
    ttft_ms=400.0,
    latency_ms=1500.0,
)
STEADY = stats("steady", success_rate=0.999)
ALL = [SMART, STEADY, QUICK, CHEAP]


@pytest.mark.parametrize(
    ("strategy", "best"),
    [
        (Strategy.CHEAPEST, "cheap"),
        (Strategy.FASTEST, "quick"),
        (Strategy.QUALITY, "smart"),
        (Strategy.RELIABLE, "steady"),
    ],
)
def test_single_criterion_strategies_pick_their_best(strategy: Strategy, best: str) -> None:
    ranking = rank(ALL, strategy)
    assert ranking.order[0] == best
    assert ranking.ranked[0].score == 1.0
    assert len(ranking.order) == 4


def test_cheapest_orders_by_estimated_cost() -> None:
    ranking = rank(ALL, Strategy.CHEAPEST)
    costs = [r.breakdown.estimated_cost_micro_usd for r in ranking.ranked]
    assert costs == sorted(costs)
    assert ranking.order[-1] == "smart"
    # 500 input and 500 output tokens by default: 500 * 0.1 + 500 * 0.2 micro-USD.
    assert ranking.ranked[0].breakdown.estimated_cost_micro_usd == 150


def test_fastest_orders_by_ttft_then_latency() -> None:
    a = stats("a", ttft_ms=50.0, latency_ms=900.0)
    b = stats("b", ttft_ms=50.0, latency_ms=300.0)
    c = stats("c", ttft_ms=60.0, latency_ms=100.0)
    assert rank([a, b, c], Strategy.FASTEST).order == ("b", "a", "c")


def test_balanced_weighs_cost_latency_and_quality() -> None:
    ranking = rank([CHEAP, SMART], Strategy.BALANCED)
    assert ranking.weights == Weights(cost=0.5, latency=0.3, quality=0.2)
    by_name = {r.provider: r for r in ranking.ranked}
    cheap, smart = by_name["cheap"], by_name["smart"]
    # Over these two: cheap is cheaper and faster (1.0 each), smart better (quality 1.0).
    assert (cheap.breakdown.cost, cheap.breakdown.latency, cheap.breakdown.quality) == (1, 1, 0)
    assert (smart.breakdown.cost, smart.breakdown.latency, smart.breakdown.quality) == (0, 0, 1)
    assert cheap.score == pytest.approx(0.8)
    assert smart.score == pytest.approx(0.2)
    assert ranking.order == ("cheap", "smart")


def test_custom_weights_are_normalised_and_applied() -> None:
    ranking = rank([CHEAP, SMART], Strategy.CUSTOM, weights=Weights(quality=3, cost=1))
    assert ranking.weights == Weights(cost=0.25, quality=0.75)
    assert ranking.order == ("smart", "cheap")
    assert ranking.ranked[0].score == pytest.approx(0.75)


@pytest.mark.parametrize(
    "weights", [None, Weights(), Weights(cost=-1, quality=2), Weights(cost=float("nan"))]
)
def test_custom_without_valid_weights_is_refused(weights: Weights | None) -> None:
    with pytest.raises(ValueError, match="CUSTOM"):
        rank(ALL, Strategy.CUSTOM, weights=weights)
    # Positive control: valid weights rank.
    assert rank(ALL, Strategy.CUSTOM, weights=Weights(cost=1)).order[0] == "cheap"


@pytest.mark.parametrize("strategy", [s for s in Strategy if s is not Strategy.CUSTOM])
def test_ties_are_broken_by_provider_name(strategy: Strategy) -> None:
    twins = [stats("zeta"), stats("alpha"), stats("mid")]
    ranking = rank(twins, strategy)
    assert ranking.order == ("alpha", "mid", "zeta")


@pytest.mark.parametrize("strategy", [s for s in Strategy if s is not Strategy.CUSTOM])
def test_equal_values_normalise_to_one(strategy: Strategy) -> None:
    ranking = rank([stats("a"), stats("b")], strategy)
    for r in ranking.ranked:
        b = r.breakdown
        assert (b.cost, b.latency, b.quality, b.reliability) == (1.0, 1.0, 1.0, 1.0)
        assert r.score == pytest.approx(1.0)


def test_scores_stay_within_zero_and_one() -> None:
    for strategy in (Strategy.BALANCED, Strategy.CHEAPEST, Strategy.QUALITY):
        for r in rank(ALL, strategy).ranked:
            values = (r.score, r.breakdown.cost, r.breakdown.latency, r.breakdown.quality)
            assert all(0.0 <= v <= 1.0 for v in values)


def test_missing_capability_is_excluded() -> None:
    vision = stats("vision", capabilities=frozenset({"chat", "vision"}))
    ranking = rank([CHEAP, vision], Strategy.CHEAPEST, required_capabilities=["vision"])
    assert ranking.order == ("vision",)
    assert [(e.provider, e.reason) for e in ranking.excluded] == [
        ("cheap", ExclusionReason.MISSING_CAPABILITY)
    ]
    assert "vision" in ranking.excluded[0].detail
    # Positive control: without the requirement both are ranked.
    assert rank([CHEAP, vision], Strategy.CHEAPEST).order == ("cheap", "vision")


def test_success_rate_under_the_floor_is_excluded() -> None:
    flaky = stats("flaky", success_rate=0.49)
    borderline = stats("borderline", success_rate=0.5)
    ranking = rank([flaky, borderline, CHEAP], Strategy.RELIABLE)
    assert set(ranking.order) == {"borderline", "cheap"}
    assert [(e.provider, e.reason) for e in ranking.excluded] == [
        ("flaky", ExclusionReason.LOW_SUCCESS_RATE)
    ]


def test_normalisation_runs_over_the_eligible_only() -> None:
    # The excluded, very expensive provider must not compress the others' cost scores.
    pricey = stats("pricey", input_micro_usd_per_mtok=10**9, success_rate=0.1)
    ranking = rank([CHEAP, QUICK, pricey], Strategy.CHEAPEST)
    assert [r.breakdown.cost for r in ranking.ranked] == [1.0, 0.0]


def test_everything_excluded_gives_an_empty_ranking() -> None:
    ranking = rank([stats("a", success_rate=0.1)], Strategy.BALANCED)
    assert ranking.ranked == ()
    assert len(ranking.excluded) == 1


def test_token_estimate_drives_the_cost() -> None:
    # Output-heavy calls favour the provider with cheap output tokens.
    cheap_in = stats("cheap_in", input_micro_usd_per_mtok=100, output_micro_usd_per_mtok=9000)
    cheap_out = stats("cheap_out", input_micro_usd_per_mtok=9000, output_micro_usd_per_mtok=100)
    prompt_heavy = TokenEstimate(input_tokens=100_000, output_tokens=10)
    answer_heavy = TokenEstimate(input_tokens=10, output_tokens=100_000)
    assert rank([cheap_in, cheap_out], Strategy.CHEAPEST, estimate=prompt_heavy).order[0] == (
        "cheap_in"
    )
    assert rank([cheap_in, cheap_out], Strategy.CHEAPEST, estimate=answer_heavy).order[0] == (
        "cheap_out"
    )


def test_estimated_cost_rounds_half_up() -> None:
    one_each = stats("p", input_micro_usd_per_mtok=1_000_000, output_micro_usd_per_mtok=0)
    assert estimated_cost(one_each, TokenEstimate(3, 0)) == 3
    half = stats("p", input_micro_usd_per_mtok=500_000, output_micro_usd_per_mtok=0)
    assert estimated_cost(half, TokenEstimate(1, 0)) == 1
    assert estimated_cost(half, TokenEstimate(0, 0)) == 0


def test_ranking_is_deterministic_whatever_the_input_order() -> None:
    for strategy in (Strategy.BALANCED, Strategy.FASTEST, Strategy.QUALITY):
        assert rank(ALL, strategy).order == rank(list(reversed(ALL)), strategy).order


def test_a_spent_budget_excludes_every_candidate() -> None:
    ranking = rank(ALL, Strategy.CHEAPEST, budget_left=0)
    assert ranking.order == ()
    assert {(e.provider, e.reason) for e in ranking.excluded} == {
        (s.name, ExclusionReason.BUDGET_EXHAUSTED) for s in ALL
    }
    # Positive control: no budget applies, nothing is excluded.
    assert len(rank(ALL, Strategy.CHEAPEST, budget_left=None).order) == len(ALL)


def test_a_nearly_spent_budget_excludes_what_it_cannot_cover() -> None:
    estimate = TokenEstimate(1000, 1000)
    affordable = estimated_cost(CHEAP, estimate)
    ranking = rank(ALL, Strategy.CHEAPEST, estimate=estimate, budget_left=affordable)
    assert ranking.order == ("cheap",)
    excluded = {e.provider: e for e in ranking.excluded}
    assert set(excluded) == {"quick", "smart", "steady"}
    assert all(e.reason is ExclusionReason.BUDGET_EXHAUSTED for e in excluded.values())
    assert f"{affordable} left" in excluded["smart"].detail


# --- A dominated provider never changes the choice (issue 9: BALANCED flipped to a 16x
# dearer model when one expensive provider was added to the configuration).

_provider = st.builds(
    lambda name, price_in, price_out, ttft, latency, quality, success: stats(
        name,
        input_micro_usd_per_mtok=price_in,
        output_micro_usd_per_mtok=price_out,
        ttft_ms=ttft,
        latency_ms=latency,
        quality=quality,
        success_rate=success,
    ),
    st.text("abcdefgh", min_size=1, max_size=4),
    st.integers(0, 80_000_000),
    st.integers(0, 80_000_000),
    st.floats(1, 5_000),
    st.floats(1, 60_000),
    st.floats(0, 1),
    st.floats(0.5, 1),
)
_weights = st.builds(Weights, *(st.floats(0, 10) for _ in range(4))).filter(lambda w: w.total > 0)


@st.composite
def _worse_than(draw: st.DrawFn, better: ProviderStats) -> ProviderStats:
    """A provider worse than `better` on every dimension: dearer, slower, no better."""
    return dataclasses.replace(
        better,
        name=draw(st.text("abcdefgh", min_size=1, max_size=4)),
        input_micro_usd_per_mtok=better.input_micro_usd_per_mtok + draw(st.integers(0, 10**9)),
        output_micro_usd_per_mtok=better.output_micro_usd_per_mtok + draw(st.integers(0, 10**9)),
        ttft_ms=better.ttft_ms + draw(st.floats(1, 10_000)),
        latency_ms=better.latency_ms + draw(st.floats(1, 100_000)),
        quality=better.quality - draw(st.floats(0, better.quality)),
        success_rate=max(0.5, better.success_rate - draw(st.floats(0, 0.5))),
    )


def _dominates(a: ProviderStats, b: ProviderStats) -> bool:
    def key(s: ProviderStats) -> tuple[float, ...]:
        cost = estimated_cost(s, TokenEstimate())
        return (-cost, -s.ttft_ms, -s.latency_ms, s.quality, s.success_rate)

    return key(a) != key(b) and all(x >= y for x, y in zip(key(a), key(b), strict=True))


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_dominated_provider_never_changes_the_choice(data: st.DataObject) -> None:
    others = data.draw(st.lists(_provider, min_size=1, max_size=6, unique_by=lambda s: s.name))
    better = data.draw(st.sampled_from(others))
    worse = data.draw(_worse_than(better).filter(lambda w: w.name not in {s.name for s in others}))
    weights = data.draw(_weights)
    # `worse` always ranks behind a non-dominated `better`; when another provider dominates
    # `better` too, both are dominated and may tie, broken by name.
    front = [s for s in others if not any(_dominates(o, s) for o in others)]
    for strategy in Strategy:
        extra = {"weights": weights} if strategy is Strategy.CUSTOM else {}
        before = rank(others, strategy, **extra).order
        after = rank([*others, worse], strategy, **extra).order
        assert after[0] == before[0], strategy
        assert tuple(n for n in after if n != worse.name) == before, strategy
        if better in front:
            assert after.index(worse.name) > after.index(better.name), strategy


def test_an_expensive_dominated_model_does_not_flip_balanced() -> None:
    # The load test's shape: a cheap model and a 16x dearer, better one; BALANCED picks the
    # cheap one. Adding a far dearer model that is worse than the dear one on everything
    # must not hand the choice to the dear one.
    # (name, input and output price per Mtok, quality, ttft, latency)
    table = [
        ("cheap", 150_000, 600_000, 0.7, 300.0, 1200.0),
        ("dear", 2_500_000, 10_000_000, 0.9, 250.0, 1000.0),
        ("outlier", 75_000_000, 150_000_000, 0.85, 900.0, 4000.0),
    ]
    cheap, dear, outlier = (
        stats(
            name,
            input_micro_usd_per_mtok=price_in,
            output_micro_usd_per_mtok=price_out,
            quality=quality,
            ttft_ms=ttft,
            latency_ms=latency,
        )
        for name, price_in, price_out, quality, ttft, latency in table
    )
    assert rank([cheap, dear], Strategy.BALANCED).order[0] == "cheap"
    assert rank([cheap, dear, outlier], Strategy.BALANCED).order == ("cheap", "dear", "outlier")


def test_log_cost_keeps_ratios_whatever_else_is_configured() -> None:
    # Three on the front: 1x, 16x and 256x the price; on a log scale the middle one sits
    # half-way, where linear min-max would have put it next to the cheapest.
    a = stats("a", input_micro_usd_per_mtok=1_000_000, output_micro_usd_per_mtok=1_000_000)
    b = stats(
        "b", input_micro_usd_per_mtok=16_000_000, output_micro_usd_per_mtok=16_000_000, quality=0.6
    )
    c = stats(
        "c",
        input_micro_usd_per_mtok=256_000_000,
        output_micro_usd_per_mtok=256_000_000,
        quality=0.7,
    )
    by_name = {r.provider: r.breakdown.cost for r in rank([a, b, c], Strategy.CHEAPEST).ranked}
    assert by_name["a"] == 1.0
    assert by_name["c"] == 0.0
    assert by_name["b"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(
    ("weights", "field"),
    [
        (Weights(cost=1e308, latency=1e308), "cost"),
        (Weights(quality=float("inf")), "quality"),
        (Weights(reliability=-0.5, cost=1), "reliability"),
        (Weights(latency=MAX_WEIGHT * 2), "latency"),
        (Weights(), ""),
    ],
)
def test_weights_name_what_is_wrong_with_them(weights: Weights, field: str) -> None:
    assert not weights.is_valid()
    assert weights.problems()[0][0] == field
    with pytest.raises(ValueError, match="CUSTOM"):
        rank(ALL, Strategy.CUSTOM, weights=weights)
    # Positive control: the largest weight accepted ranks.
    assert Weights(cost=MAX_WEIGHT, quality=MAX_WEIGHT).is_valid()
