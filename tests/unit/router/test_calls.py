"""Request bounds: each refused input names its reason and field, beside an accepted one."""

from __future__ import annotations

import dataclasses

import pytest

from services.common.errors import InvalidArgument
from services.router.calls import (
    DEFAULT_MAX_TOKENS,
    MAX_ACCOUNTING_CHARS,
    MAX_MESSAGES,
    MAX_PROMPT_CHARS,
    Accounting,
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
