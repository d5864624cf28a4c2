"""Request bounds: each refused input names its reason and field, beside an accepted one."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from services.common.errors import InvalidArgument
from services.common.strategy import Strategy
from services.router.calls import (
    DEFAULT_MAX_TOKENS,
    MAX_ACCOUNTING_CHARS,
    MAX_MESSAGES,
    MAX_PROMPT_CHARS,
    Accounting,
    CustomWeights,
    ReasonCall,
    validate,
)
from services.router.engines.base import ChatMessage

OK = ReasonCall(messages=(ChatMessage("user", "hello"),))


@pytest.mark.parametrize(
    ("change", "reason", "field"),
    [
        ({"messages": ()}, "PROMPT_EMPTY", "messages"),
        (
            {"messages": (ChatMessage("user", "  \n"), ChatMessage("assistant", ""))},
            "PROMPT_EMPTY",
            "messages",
        ),
        (
            {"messages": (ChatMessage("user", "x"),) * (MAX_MESSAGES + 1)},
            "PROMPT_TOO_LARGE",
            "messages",
        ),
        (
            {"messages": (ChatMessage("user", "x" * (MAX_PROMPT_CHARS + 1)),)},
            "PROMPT_TOO_LARGE",
            "messages",
        ),
        (
            {"system_prompt": "s" * MAX_PROMPT_CHARS},
            "PROMPT_TOO_LARGE",
            "messages",
        ),
        ({"max_tokens": -1}, "MAX_TOKENS_INVALID", "max_tokens"),
        ({"max_tokens": 32_769}, "MAX_TOKENS_INVALID", "max_tokens"),
        ({"temperature": -0.1}, "OPTION_INVALID", "temperature"),
        ({"temperature": float("nan")}, "OPTION_INVALID", "temperature"),
        ({"stop": ("",)}, "OPTION_INVALID", "stop"),
        ({"stop": ("x",) * 17}, "OPTION_INVALID", "stop"),
        ({"preferred": ("p",) * 65}, "OPTION_INVALID", "preferred_providers"),
        ({"max_cost_micro_usd": -1}, "OPTION_INVALID", "max_cost_micro_usd"),
        (
            {"accounting": Accounting(step_id="s" * (MAX_ACCOUNTING_CHARS + 1))},
            "ACCOUNTING_INVALID",
            "accounting.step_id",
        ),
        (
            {"accounting": Accounting(session_id="s" * (MAX_ACCOUNTING_CHARS + 1))},
            "ACCOUNTING_INVALID",
            "accounting.session_id",
        ),
    ],
)
def test_bad_input_is_refused_with_reason_and_field(
    change: dict[str, object], reason: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate(dataclasses.replace(OK, **change))  # type: ignore[arg-type]
    assert err.value.reason == reason
    assert [v.field for v in err.value.field_violations] == [field]


def test_inputs_at_the_bounds_are_accepted() -> None:
    validate(OK)
    validate(dataclasses.replace(OK, messages=(ChatMessage("user", "x"),) * MAX_MESSAGES))
    validate(dataclasses.replace(OK, max_tokens=32_768, temperature=2.0, stop=("x",) * 16))
    longest = "s" * MAX_ACCOUNTING_CHARS
    validate(dataclasses.replace(OK, accounting=Accounting(longest, longest, "exe", longest)))


def test_max_tokens_zero_means_the_default() -> None:
    assert OK.engine_request().max_tokens == DEFAULT_MAX_TOKENS
    assert dataclasses.replace(OK, max_tokens=7).engine_request().max_tokens == 7


# ---------------------------------------------------------------- allow-list and CUSTOM weights


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        ({"allowed": tuple(f"p{i}" for i in range(65))}, "OPTION_INVALID", "allowed_providers"),
        ({"allowed": ("",)}, "OPTION_INVALID", "allowed_providers"),
        ({"allowed": ("a",), "preferred": ("b",)}, "OPTION_INVALID", "preferred_providers"),
        ({"weights": CustomWeights(cost=1)}, "WEIGHTS_INVALID", "weights"),  # not CUSTOM
        (
            {"weights": CustomWeights(cost=1e308), "strategy": Strategy.CUSTOM},
            "WEIGHTS_INVALID",
            "weights",
        ),
        (
            {"weights": CustomWeights(latency=math.nan), "strategy": Strategy.CUSTOM},
            "WEIGHTS_INVALID",
            "weights",
        ),
        (
            {"weights": CustomWeights(cost=-1, quality=1), "strategy": Strategy.CUSTOM},
            "WEIGHTS_INVALID",
            "weights",
        ),
        ({"weights": CustomWeights(), "strategy": Strategy.CUSTOM}, "WEIGHTS_INVALID", "weights"),
        ({"max_cost_micro_usd": 10**12 + 1}, "OPTION_INVALID", "max_cost_micro_usd"),
    ],
)
def test_bad_selection_options_are_refused_naming_the_field(
    changes: dict[str, Any], reason: str, field: str
) -> None:
    call = ReasonCall(messages=(ChatMessage("user", "hi"),), **changes)
    with pytest.raises(InvalidArgument) as caught:
        validate(call)
    assert caught.value.reason == reason
    assert [v.field for v in caught.value.field_violations] == [field]


def test_good_selection_options_pass() -> None:
    validate(
        ReasonCall(
            messages=(ChatMessage("user", "hi"),),
            allowed=("a", "b"),
            preferred=("b",),
            strategy=Strategy.CUSTOM,
            weights=CustomWeights(cost=0.7, latency=0.3),
            max_cost_micro_usd=10**12,
        )
    )
