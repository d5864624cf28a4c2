"""Candidate order: snapshot ranking per strategy, config order without one, pinned and
preferred providers."""

from __future__ import annotations

import pytest

from services.common.config import ProviderConfig
from services.common.errors import InvalidArgument, Unavailable
from services.common.prices import PriceTable
from services.router.candidates import PromptSize, after_too_long, choose, too_long, too_small
from services.router.context_windows import LearnedWindow
from services.router.rankings import RankingSnapshot
from tests.clock import Clock

PROVIDERS = [ProviderConfig(name=n, kind="sim", model=f"{n}-m") for n in ("a", "b", "c")]
SNAPSHOT = RankingSnapshot(
    version=1,
    default_strategy="balanced",
    rankings={"balanced": ("b", "a", "c"), "cheapest": ("c", "b", "a"), "quality": ("a",)},
    prices=PriceTable("prices-x", ()),
)


def names(providers: list[ProviderConfig]) -> list[str]:
    return [p.name for p in providers]


def test_without_a_snapshot_the_configuration_order_applies() -> None:
    assert names(choose(PROVIDERS, None, strategy="cheapest")) == ["a", "b", "c"]


def test_the_strategy_ranking_of_the_snapshot_applies() -> None:
    assert names(choose(PROVIDERS, SNAPSHOT, strategy="cheapest")) == ["c", "b", "a"]
    assert names(choose(PROVIDERS, SNAPSHOT, strategy="quality")) == ["a"]
    # No strategy, or one the snapshot lacks: the snapshot's default.
    assert names(choose(PROVIDERS, SNAPSHOT)) == ["b", "a", "c"]
    assert names(choose(PROVIDERS, SNAPSHOT, strategy="fastest")) == ["b", "a", "c"]


def test_preferred_providers_move_to_the_front_when_eligible() -> None:
    got = choose(PROVIDERS, SNAPSHOT, strategy="cheapest", preferred=["a", "b"])
    assert names(got) == ["a", "b", "c"]
    # Not eligible for this strategy (excluded by the ranking): not added.
    assert names(choose(PROVIDERS, SNAPSHOT, strategy="quality", preferred=["c"])) == ["a"]


def test_pinned_is_the_only_candidate_even_if_unranked() -> None:
    assert names(choose(PROVIDERS, SNAPSHOT, strategy="quality", pinned="c")) == ["c"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"pinned": "zz"}, "pinned_provider"), ({"preferred": ["a", "zz"]}, "preferred_providers")],
)
def test_unknown_provider_names_are_refused(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        choose(PROVIDERS, SNAPSHOT, **kwargs)  # type: ignore[arg-type]
    assert err.value.reason == "UNKNOWN_PROVIDER"
    assert [v.field for v in err.value.field_violations] == [field]


def test_providers_the_router_does_not_know_are_skipped() -> None:
    foreign = RankingSnapshot(1, "balanced", {"balanced": ("x", "c")}, PriceTable("v", ()))
    assert names(choose(PROVIDERS, foreign)) == ["c"]
    empty = RankingSnapshot(1, "balanced", {"balanced": ("x",)}, PriceTable("v", ()))
    with pytest.raises(Unavailable) as err:
        choose(PROVIDERS, empty)
    assert err.value.reason == "NO_PROVIDER_AVAILABLE"


# --- Passing over candidates known too small for the prompt.

OPENAI_TOO_LONG = (
    "small: HTTP 400: This model's maximum context length is 8192 tokens. However, your "
    "messages resulted in 9000 tokens. Please reduce the length of the messages."
)


def test_after_a_stated_window_only_the_known_too_small_are_passed_over() -> None:
    small = ProviderConfig(name="small", kind="sim", model="m")  # default window, 128k
    twin = ProviderConfig(name="twin", kind="sim", model="m", context_window=8_000)
    roomy = ProviderConfig(name="roomy", kind="sim", model="m")  # default window
    learned = {p.name: LearnedWindow(Clock()) for p in (small, twin, roomy)}
    size = PromptSize(estimate=9_000)
    assert not any(too_small(p, learned[p.name], size) for p in (small, twin, roomy))
    after_too_long(small, learned["small"], size, OPENAI_TOO_LONG)
    assert size.needs == 9_000
    assert learned["small"].window() == 8_192
    # Configured too small (8,000 < 9,000) is passed over; a default window is tried.
    assert too_small(twin, learned["twin"], size)
    assert not too_small(roomy, learned["roomy"], size)
    # Another call with as long a prompt passes the small one over; a short one does not.
    assert too_small(small, learned["small"], PromptSize(estimate=9_000))
    assert not too_small(small, learned["small"], PromptSize(estimate=100))


def test_an_error_without_numbers_needs_more_than_the_window_it_came_from() -> None:
    small = ProviderConfig(name="small", kind="sim", model="m", context_window=8_000)
    same = ProviderConfig(name="same", kind="sim", model="m", context_window=8_000)
    large = ProviderConfig(name="large", kind="sim", model="m", context_window=200_000)
    size = PromptSize(estimate=100)
    after_too_long(small, LearnedWindow(Clock()), size, "small: injected context failure")
    assert size.needs == 8_001
    assert too_small(same, LearnedWindow(Clock()), size)
    assert not too_small(large, LearnedWindow(Clock()), size)


def test_a_prompt_over_a_stated_window_is_refused_with_the_context_reason() -> None:
    error = too_long("small", 8_192, 9_000)
    assert error.reason == "PROVIDER_CONTEXT_LENGTH_EXCEEDED"
    assert error.metadata == {"provider": "small", "context_window": "8192"}


# ---------------------------------------------------------------- the caller's allow-list


def test_an_allow_list_keeps_only_the_named_providers_in_ranking_order() -> None:
    from services.router.candidates import allowed_only

    allowed = allowed_only(PROVIDERS, ["c", "a"])
    assert names(choose(allowed, SNAPSHOT, strategy="cheapest")) == ["c", "a"]
    assert names(choose(allowed, SNAPSHOT)) == ["a", "c"]
    # Empty: every configured provider (control).
    assert names(choose(allowed_only(PROVIDERS, []), SNAPSHOT)) == ["b", "a", "c"]


def test_an_allow_list_naming_an_unknown_provider_is_refused_naming_the_field() -> None:
    from services.router.candidates import allowed_only

    with pytest.raises(InvalidArgument) as caught:
        allowed_only(PROVIDERS, ["a", "nope"])
    assert caught.value.reason == "UNKNOWN_PROVIDER"
    assert [v.field for v in caught.value.field_violations] == ["allowed_providers"]
