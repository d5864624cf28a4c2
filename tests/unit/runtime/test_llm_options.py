"""The run's options reach the router's request for each `llm.complete` step: the
allow-list, the opt-out of fallback, the CUSTOM weights and what is left of the cost limit;
and a step's `history` becomes the messages before its prompt."""

from __future__ import annotations

import dataclasses

import pytest

from saga.execution.v1 import common_pb2
from saga.router.v1 import router_pb2
from services.common.errors import InvalidArgument, ResourceExhausted
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


def with_args(**args: object) -> StepCall:
    return dataclasses.replace(step(), args={"prompt": "and now?", **args})


def test_history_turns_go_before_the_prompt_in_order() -> None:
    history = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi there"},
    ]
    request = reason_request(with_args(history=history))
    assert [(m.role, m.content) for m in request.messages] == [
        (router_pb2.ROLE_USER, "hello"),
        (router_pb2.ROLE_ASSISTANT, "hi there"),
        (router_pb2.ROLE_USER, "and now?"),
    ]
    # Control: no history (a run in no session renders it as None) sends the prompt alone.
    for alone in (with_args(), with_args(history=None), with_args(history=[])):
        assert [m.content for m in reason_request(alone).messages] == ["and now?"]


def test_a_malformed_history_is_refused_naming_each_bad_turn() -> None:
    bad = [
        {"role": "user", "content": "ok"},
        {"role": "system", "content": "no"},
        {"role": "assistant"},
        "text",
    ]
    with pytest.raises(InvalidArgument) as caught:
        reason_request(with_args(history=bad))
    assert caught.value.reason == "STEP_ARGS_INVALID"
    assert [v.field for v in caught.value.field_violations] == [
        "steps.answer.args.history[1]",
        "steps.answer.args.history[2]",
        "steps.answer.args.history[3]",
    ]
    with pytest.raises(InvalidArgument):
        reason_request(with_args(history="not a list"))
