"""The most a call may cost (its budget reservation) and the ids it is reserved under."""

from __future__ import annotations

from services.common.config import ProviderConfig
from services.common.prices import price_table
from services.router.budget_reservations import max_cost
from services.router.calls import Accounting
from services.router.engines.base import ChatMessage, EngineRequest
from services.router.outcomes import call_id, outcome_id


def priced(name: str, input_price: int, output_price: int) -> ProviderConfig:
    return ProviderConfig(
        name=name,
        kind="sim",
        model="m",
        input_micro_usd_per_mtok=input_price,
        output_micro_usd_per_mtok=output_price,
    )


def test_the_reservation_is_the_dearest_candidates_price_of_prompt_and_max_tokens() -> None:
    cheap = priced("cheap", 1_000_000, 2_000_000)
    dear = priced("dear", 10_000_000, 30_000_000)
    # 40 characters of prompt: ~10 input tokens.
    request = EngineRequest(
        messages=(ChatMessage("user", "x" * 40),), system_prompt="", max_tokens=100
    )
    prices = price_table([cheap, dear])
    assert max_cost(request, [cheap], prices) == 10 * 1 + 100 * 2
    assert max_cost(request, [cheap, dear], prices) == 10 * 10 + 100 * 30


def test_each_call_gets_its_own_id_and_attempts_number_under_it() -> None:
    accounting = Accounting(execution_id="exe_1", step_id="answer")
    first, second = call_id(accounting), call_id(accounting)
    assert first.startswith("exe_1:answer:")
    assert first != second  # a step that calls again does not reuse the ids
    assert outcome_id(first, 2) == f"{first}:2"


def test_the_output_a_cost_limit_pays_for_is_what_the_price_table_bills_within_it() -> None:
    from services.common.prices import ProviderPrice
    from services.router.budget_reservations import output_tokens_within

    price = ProviderPrice("p", "m", 1_000_000, 2_000_000)  # 1 and 2 micro-USD a token
    for left in range(0, 40):
        tokens = output_tokens_within(price, 4, left)
        assert tokens is not None
        if price.cost(4, 0) <= left:
            assert price.cost(4, tokens) <= left < price.cost(4, tokens + 1)
        else:
            assert tokens == 0
    # Rounding half up: 0.4 micro-USD of output bills nothing, so it fits a limit of 0.
    cheap = ProviderPrice("c", "m", 0, 400_000)
    assert output_tokens_within(cheap, 0, 0) == 1
    assert output_tokens_within(ProviderPrice("free", "m", 1, 0), 10, 0) is None
