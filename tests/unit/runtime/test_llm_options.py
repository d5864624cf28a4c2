"""The run's options reach the router's request for each `llm.complete` step: the
allow-list, the opt-out of fallback, the CUSTOM weights and what is left of the cost limit."""

from __future__ import annotations

import pytest

from saga.execution.v1 import common_pb2
from services.common.errors import ResourceExhausted
from services.runtime.agents.llm import reason_request
from services.runtime.agents.step import RunScope, StepCall


def step(spent: int = 0, **scope: object) -> StepCall:
    run = RunScope(
        execution_id="exe_1",
        pattern_id="chat",
        user_id="usr_a",
        session_id="",
        asof="2026-12-03",
        context_token="",  # not sent anywhere here
        **scope,  # type: ignore[arg-type]
    )
    return StepCall(run, "answer", "llm.complete", {"prompt": "hi"}, spent_micro_usd=spent)


def test_the_options_are_carried_into_the_reason_request() -> None:
    request = reason_request(
        step(
            strategy=common_pb2.STRATEGY_CUSTOM,
            allowed_providers=("a", "b"),
            disable_fallback=True,
            weights=(0.7, 0.3, 0.0, 0.0),
            max_cost_micro_usd=100,
        )
    )
    assert list(request.allowed_providers) == ["a", "b"]
    assert not request.allow_fallback
    assert (request.weights.cost, request.weights.latency) == (0.7, 0.3)
    assert request.max_cost_micro_usd == 100
    # Control: the defaults fall back, allow everyone, send no weights and no limit.
    plain = reason_request(step())
    assert plain.allow_fallback
    assert not plain.allowed_providers
    assert not plain.HasField("weights")
    assert plain.max_cost_micro_usd == 0


def test_a_step_may_spend_what_the_steps_before_it_left() -> None:
    assert reason_request(step(spent=30, max_cost_micro_usd=100)).max_cost_micro_usd == 70
    with pytest.raises(ResourceExhausted) as caught:
        reason_request(step(spent=100, max_cost_micro_usd=100))
    assert caught.value.reason == "COST_LIMIT_EXCEEDED"
    assert caught.value.metadata["spentMicroUsd"] == "100"
