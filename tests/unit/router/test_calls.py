"""Request bounds: each refused input names its reason and field, beside an accepted one."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from services.common.config import ProviderConfig
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
    able,
    validate,
)
from services.router.engines.base import ChatMessage, Sampling

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


@pytest.mark.parametrize(
    ("sampling", "field"),
    [
        (Sampling(top_p=1.5), "top_p"),
        (Sampling(top_p=float("nan")), "top_p"),
        (Sampling(presence_penalty=-2.5), "presence_penalty"),
        (Sampling(frequency_penalty=2.5), "frequency_penalty"),
        (Sampling(seed=2**60), "seed"),
        (Sampling(end_user="u" * 257), "end_user"),
    ],
)
def test_bad_sampling_fields_are_refused_naming_them(sampling: Sampling, field: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        validate(dataclasses.replace(OK, sampling=sampling))
    assert (error.value.reason, error.value.field_violations[0].field) == ("OPTION_INVALID", field)


def _providers(*kinds: str) -> list[ProviderConfig]:
    return [
        ProviderConfig(name=f"p-{kind}", kind=kind, model="m", base_url="http://x")
        for kind in kinds
    ]


def test_only_engines_that_send_every_sampling_field_set_are_candidates() -> None:
    mixed = _providers("anthropic", "ollama", "openai")
    assert able(mixed, OK) == mixed  # nothing set: every provider
    seeded = dataclasses.replace(OK, sampling=Sampling(seed=3))
    assert [p.kind for p in able(mixed, seeded)] == ["ollama", "openai"]
    user = dataclasses.replace(OK, sampling=Sampling(end_user="u", top_p=0.5))
    assert [p.kind for p in able(mixed, user)] == ["anthropic", "openai"]


def test_a_field_no_candidate_sends_is_refused_naming_it() -> None:
    call = dataclasses.replace(OK, sampling=Sampling(seed=3, end_user="u"))
    with pytest.raises(InvalidArgument) as error:
        able(_providers("anthropic", "ollama"), call)
    assert error.value.reason == "PARAMETER_UNSUPPORTED"
    assert [v.field for v in error.value.field_violations] == ["seed", "end_user"]
