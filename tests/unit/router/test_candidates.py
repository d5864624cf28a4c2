"""Candidate order: snapshot ranking per strategy, config order without one, pinned and
preferred providers."""

from __future__ import annotations

import pytest

from services.common.config import ProviderConfig
from services.common.errors import InvalidArgument, Unavailable
from services.common.prices import PriceTable
from services.router.candidates import choose
from services.router.rankings import RankingSnapshot

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
