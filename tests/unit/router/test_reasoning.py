"""A Reason call over sim engines: events in order, fallback before the first token, a failure
after text, complete mode, and one report per attempt."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.config import ProviderConfig, SimConfig
from services.common.errors import InvalidArgument, SagaError, Unavailable
from services.common.prices import price_table
from services.router.calls import ReasonCall
from services.router.engines import engine_for
from services.router.engines.base import ChatMessage, TextDelta
from services.router.reasoning import (
    AttemptRecord,
    AttemptStarted,
    AttemptStatus,
    Finished,
    ProviderSwitched,
    RouterEvent,
    reason,
)


def sim(name: str, **settings: Any) -> ProviderConfig:
    return ProviderConfig(
        name=name,
        kind="sim",
        model=f"{name}-m",
        input_micro_usd_per_mtok=1_000_000,
        output_micro_usd_per_mtok=2_000_000,
        sim=SimConfig(**{"token_interval_ms": 0.0, "tokens": 4, **settings}),
    )


GOOD = sim("good")
DOWN = sim("down", fail="unavailable")
REFUSES = sim("refuses", fail="invalid_argument")
CUT = sim("cut", fail="unavailable", fail_after_tokens=2)
CALL = ReasonCall(messages=(ChatMessage("user", "three words here"),), allow_fallback=True)


async def run(
    call: ReasonCall, candidates: list[ProviderConfig]
) -> tuple[list[RouterEvent], list[AttemptRecord], SagaError | None]:
    engines = {p.name: engine_for(p) for p in candidates}
    reports: list[AttemptRecord] = []
    events: list[RouterEvent] = []
    try:
        async for event in reason(
            call, candidates, engines, price_table(candidates), reports.append
        ):
            events.append(event)
    except SagaError as error:
        return events, reports, error
    return events, reports, None


async def test_a_call_streams_attempt_deltas_and_final() -> None:
    events, reports, error = await run(CALL, [GOOD])
    assert error is None
    assert events[0] == AttemptStarted("good", "good-m", 1)
    assert [type(e) for e in events[1:-1]] == [TextDelta] * 4
    final = events[-1]
    assert isinstance(final, Finished)
    assert (final.input_tokens, final.output_tokens, final.text) == (3, 4, "")
    assert final.cost_micro_usd == 3 * 1 + 4 * 2
    assert [r.status for r in reports] == [AttemptStatus.SUCCEEDED]
    assert final.attempts == tuple(reports)


async def test_complete_mode_sends_the_text_in_final_only() -> None:
    streamed, _, _ = await run(CALL, [GOOD])
    events, _, _ = await run(ReasonCall(messages=CALL.messages, complete=True), [GOOD])
    assert [type(e) for e in events] == [AttemptStarted, Finished]
    final = events[-1]
    assert isinstance(final, Finished)
    assert final.text == "".join(e.text for e in streamed if isinstance(e, TextDelta))


async def test_failure_before_text_falls_back_to_the_next_candidate() -> None:
    events, reports, error = await run(CALL, [DOWN, GOOD])
    assert error is None
    assert events[:3] == [
        AttemptStarted("down", "down-m", 1),
        ProviderSwitched("down", "good", "PROVIDER_UNAVAILABLE"),
        AttemptStarted("good", "good-m", 2),
    ]
    final = events[-1]
    assert isinstance(final, Finished)
    assert final.provider == "good"
    assert [(r.provider, r.status, r.error_reason) for r in reports] == [
        ("down", AttemptStatus.FAILED, "PROVIDER_UNAVAILABLE"),
        ("good", AttemptStatus.SUCCEEDED, ""),
    ]
    # The failed attempt generated nothing and costs nothing.
    assert (reports[0].input_tokens, reports[0].cost_micro_usd) == (0, 0)


async def test_without_fallback_the_first_failure_ends_the_call() -> None:
    call = ReasonCall(messages=CALL.messages, allow_fallback=False)
    events, reports, error = await run(call, [DOWN, GOOD])
    assert isinstance(error, Unavailable)
    assert (error.reason, error.metadata, error.retry_after) == (
        "PROVIDER_UNAVAILABLE",
        {"provider": "down"},
        1.0,
    )
    assert events == [AttemptStarted("down", "down-m", 1)]
    assert len(reports) == 1


async def test_rejected_input_does_not_fall_back() -> None:
    events, _, error = await run(CALL, [REFUSES, GOOD])
    assert isinstance(error, InvalidArgument)
    assert error.reason == "PROVIDER_REJECTED_INPUT"
    assert not any(isinstance(e, ProviderSwitched) for e in events)


async def test_failure_after_text_ends_the_stream_with_an_estimated_attempt() -> None:
    events, reports, error = await run(CALL, [CUT, GOOD])
    assert isinstance(error, Unavailable)
    assert [type(e) for e in events] == [AttemptStarted, TextDelta, TextDelta]
    (cut,) = reports
    assert (cut.status, cut.input_tokens, cut.output_tokens, cut.estimated) == (
        AttemptStatus.FAILED,
        3,
        2,
        True,
    )
    assert cut.cost_micro_usd == 3 + 2 * 2


async def test_complete_mode_falls_back_even_after_partial_text() -> None:
    # Nothing reached the caller yet, so the cut attempt's words are dropped, not mixed in.
    call = ReasonCall(messages=CALL.messages, complete=True, allow_fallback=True)
    events, reports, error = await run(call, [CUT, GOOD])
    assert error is None
    assert [type(e) for e in events] == [
        AttemptStarted,
        ProviderSwitched,
        AttemptStarted,
        Finished,
    ]
    alone, _, _ = await run(call, [GOOD])
    final, expected = events[-1], alone[-1]
    assert isinstance(final, Finished)
    assert isinstance(expected, Finished)
    assert final.text == expected.text
    # Usage and cost are summed over both attempts, the cut one estimated.
    assert final.output_tokens == 2 + 4
    assert final.estimated
    assert [r.status for r in reports] == [AttemptStatus.FAILED, AttemptStatus.SUCCEEDED]


@pytest.mark.parametrize(
    ("fail", "reason", "code"),
    [
        ("rate_limited", "PROVIDER_RATE_LIMITED", "RESOURCE_EXHAUSTED"),
        ("unauthenticated", "PROVIDER_AUTH_FAILED", "UNAVAILABLE"),
        ("invalid_argument", "PROVIDER_REJECTED_INPUT", "INVALID_ARGUMENT"),
        ("unavailable", "PROVIDER_UNAVAILABLE", "UNAVAILABLE"),
    ],
)
async def test_each_taxonomy_kind_ends_with_its_status(fail: str, reason: str, code: str) -> None:
    _, _, error = await run(CALL, [sim("p", fail=fail)])
    assert error is not None
    assert (error.reason, error.code.name, error.metadata) == (reason, code, {"provider": "p"})
