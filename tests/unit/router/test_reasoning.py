"""A Reason call over sim engines and scripted fake providers: events in order, retries inside a
provider, fallback, input errors, context windows, mid-stream continuation, circuits, limits,
and one report per attempt."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.common.circuit import CircuitState
from services.common.config import ProviderConfig, RouterConfig, SimConfig
from services.common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    SagaError,
    Unavailable,
)
from services.common.prices import price_table
from services.router.calls import ReasonCall
from services.router.charges import ChargePolicy
from services.router.continuation import CONTINUE_INSTRUCTION
from services.router.engines import engine_for
from services.router.engines.base import (
    ChatMessage,
    Engine,
    EngineEvent,
    EngineRequest,
    Finish,
    FinishReason,
    ProviderCredentialFailed,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    TextDelta,
)
from services.router.reasoning import (
    AttemptRecord,
    AttemptStarted,
    AttemptStatus,
    Finished,
    ProvidersSkipped,
    ProviderSwitched,
    RouterEvent,
    Skip,
    reason,
)
from services.router.resilience import Resilience
from tests.clock import Clock


def sim(name: str, **settings: Any) -> ProviderConfig:
    options = {
        k: settings.pop(k) for k in list(settings) if k in ProviderConfig.__dataclass_fields__
    }
    return ProviderConfig(
        name=name,
        kind="sim",
        model=f"{name}-m",
        input_micro_usd_per_mtok=1_000_000,
        output_micro_usd_per_mtok=2_000_000,
        sim=SimConfig(**{"token_interval_ms": 0.0, "tokens": 4, **settings}),
        **options,
    )


GOOD = sim("good")
DOWN = sim("down", fail="unavailable", max_retries=0)
REFUSES = sim("refuses", fail="invalid_argument")
CUT = sim("cut", fail="unavailable", fail_after_tokens=2)
CALL = ReasonCall(messages=(ChatMessage("user", "three words here"),), allow_fallback=True)


Step = str | Exception


class Scripted:
    """A fake provider: call k plays script k (the last one repeats); strings are deltas,
    an exception is raised where it stands."""

    def __init__(self, *scripts: Sequence[Step]) -> None:
        self.scripts = scripts
        self.requests: list[EngineRequest] = []

    async def stream(self, request: EngineRequest) -> AsyncGenerator[EngineEvent, None]:
        script = self.scripts[min(len(self.requests), len(self.scripts) - 1)]
        self.requests.append(request)
        sent = 0
        for step in script:
            await asyncio.sleep(0)
            if isinstance(step, Exception):
                raise step
            sent += 1
            yield TextDelta(step)
        yield Finish(FinishReason.STOP, input_tokens=5, output_tokens=sent)

    async def close(self) -> None:
        pass


@dataclass
class Outcome:
    events: list[RouterEvent] = field(default_factory=list)
    reports: list[AttemptRecord] = field(default_factory=list)
    error: SagaError | None = None
    sleeps: list[float] = field(default_factory=list)

    def text(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, TextDelta))

    def final(self) -> Finished:
        final = self.events[-1]
        assert isinstance(final, Finished)
        return final

    def attempts(self) -> list[tuple[str, int]]:
        return [(e.provider, e.n) for e in self.events if isinstance(e, AttemptStarted)]

    def switches(self) -> list[ProviderSwitched]:
        return [e for e in self.events if isinstance(e, ProviderSwitched)]


def resilience_for(
    candidates: Sequence[ProviderConfig], clock: Clock | None = None, **router: Any
) -> Resilience:
    config = RouterConfig(**{"retry_initial_backoff_ms": 10.0, **router})
    return Resilience.build(candidates, config, clock or Clock())


async def run(
    call: ReasonCall,
    candidates: Sequence[ProviderConfig],
    engines: dict[str, Engine] | None = None,
    resilience: Resilience | None = None,
    deadline: float | None = None,
    policy: ChargePolicy = ChargePolicy.ALL_ATTEMPTS,
) -> Outcome:
    engines = {**{p.name: engine_for(p) for p in candidates}, **(engines or {})}
    resilience = resilience or resilience_for(candidates)
    out = Outcome()

    async def sleep(seconds: float) -> None:
        out.sleeps.append(seconds)

    try:
        async for event in reason(
            call,
            candidates,
            engines,
            price_table(candidates),
            out.reports.append,
            resilience,
            deadline=deadline,
            sleep=sleep,
            policy=policy,
        ):
            out.events.append(event)
    except SagaError as error:
        out.error = error
    return out


async def test_a_call_streams_attempt_deltas_and_final() -> None:
    got = await run(CALL, [GOOD])
    assert got.error is None
    assert got.events[0] == AttemptStarted("good", "good-m", 1)
    assert [type(e) for e in got.events[1:-1]] == [TextDelta] * 4
    final = got.final()
    assert (final.usage.input_tokens, final.usage.output_tokens, final.text) == (3, 4, "")
    assert final.cost_micro_usd == 3 * 1 + 4 * 2
    assert [r.status for r in got.reports] == [AttemptStatus.SUCCEEDED]
    assert final.attempts == tuple(got.reports)


async def test_complete_mode_sends_the_text_in_final_only() -> None:
    streamed = await run(CALL, [GOOD])
    got = await run(ReasonCall(messages=CALL.messages, complete=True), [GOOD])
    assert [type(e) for e in got.events] == [AttemptStarted, Finished]
    assert got.final().text == streamed.text()


# ---------------------------------------------------------------- retries


async def test_a_transient_failure_is_retried_on_the_same_provider() -> None:
    flaky = Scripted([ProviderUnavailable("502")], ["fine ", "now "])
    p = sim("flaky")
    got = await run(CALL, [p, GOOD], {"flaky": flaky})
    assert got.error is None
    assert got.attempts() == [("flaky", 1), ("flaky", 2)]
    assert got.switches() == []
    assert got.text() == "fine now "
    assert [(r.status, r.retry_count) for r in got.reports] == [
        (AttemptStatus.FAILED, 0),
        (AttemptStatus.SUCCEEDED, 1),
    ]
    assert len(got.sleeps) == 1
    assert 0 <= got.sleeps[0] <= 0.01  # full jitter under the first cap (10 ms here)
    assert got.final().attempts == tuple(got.reports)


async def test_retry_after_is_honoured() -> None:
    limited = Scripted([ProviderRateLimited("429", retry_after=0.5)], ["ok "])
    got = await run(CALL, [sim("limited")], {"limited": limited})
    assert got.error is None
    assert got.sleeps[0] >= 0.5


async def test_a_provider_asking_for_a_long_wait_is_left_for_the_next() -> None:
    limited = Scripted([ProviderRateLimited("429", retry_after=30)], ["ok "])
    got = await run(CALL, [sim("limited"), GOOD], {"limited": limited})
    assert got.sleeps == []
    assert got.attempts() == [("limited", 1), ("good", 2)]
    assert got.switches() == [ProviderSwitched("limited", "good", "PROVIDER_RATE_LIMITED")]


async def test_retries_are_bounded_by_max_retries() -> None:
    always = Scripted([ProviderUnavailable("503")])
    got = await run(CALL, [sim("always", max_retries=2), GOOD], {"always": always})
    assert got.attempts() == [("always", 1), ("always", 2), ("always", 3), ("good", 4)]
    assert len(got.sleeps) == 2
    assert got.final().provider == "good"


async def test_no_retry_after_the_first_token() -> None:
    got = await run(ReasonCall(messages=CALL.messages), [CUT])
    assert got.attempts() == [("cut", 1)]
    assert got.sleeps == []
    assert isinstance(got.error, Unavailable)


async def test_the_retry_budget_caps_retries_across_calls() -> None:
    always = Scripted([ProviderUnavailable("503")])
    p = sim("always", max_retries=2)
    resilience = resilience_for([p], retry_budget_min=1, retry_budget_ratio=0.0)
    first = await run(CALL, [p], {"always": always}, resilience)
    assert len(first.attempts()) == 2  # the one retry the budget holds
    second = await run(CALL, [p], {"always": always}, resilience)
    assert len(second.attempts()) == 1  # spent: no retry
    assert isinstance(second.error, Unavailable)


async def test_a_retry_is_not_started_when_the_deadline_cannot_fit_it() -> None:
    flaky = Scripted([ProviderUnavailable("502")], ["fine "])
    now = asyncio.get_running_loop().time()
    got = await run(CALL, [sim("flaky")], {"flaky": flaky}, deadline=now + 0.1)
    assert got.attempts() == [("flaky", 1)]
    assert isinstance(got.error, Unavailable)
    # Positive control: with time to spare it is retried.
    flaky = Scripted([ProviderUnavailable("502")], ["fine "])
    got = await run(CALL, [sim("flaky")], {"flaky": flaky}, deadline=now + 30)
    assert got.attempts() == [("flaky", 1), ("flaky", 2)]


# ---------------------------------------------------------------- fallback


async def test_failure_before_text_falls_back_to_the_next_candidate() -> None:
    got = await run(CALL, [DOWN, GOOD])
    assert got.error is None
    assert got.events[:3] == [
        AttemptStarted("down", "down-m", 1),
        ProviderSwitched("down", "good", "PROVIDER_UNAVAILABLE"),
        AttemptStarted("good", "good-m", 2),
    ]
    assert got.final().provider == "good"
    assert [(r.provider, r.status, r.error_reason) for r in got.reports] == [
        ("down", AttemptStatus.FAILED, "PROVIDER_UNAVAILABLE"),
        ("good", AttemptStatus.SUCCEEDED, ""),
    ]
    # The failed attempt generated nothing and costs nothing.
    assert (got.reports[0].usage.input_tokens, got.reports[0].cost_micro_usd) == (0, 0)


async def test_a_rate_limited_provider_falls_back_after_its_retries() -> None:
    limited = sim("limited", fail="rate_limited", max_retries=1)
    got = await run(CALL, [limited, GOOD])
    assert got.attempts() == [("limited", 1), ("limited", 2), ("good", 3)]
    assert got.switches() == [ProviderSwitched("limited", "good", "PROVIDER_RATE_LIMITED")]
    assert got.sleeps[0] >= 1.0  # the sim's Retry-After


async def test_without_fallback_the_first_failure_ends_the_call() -> None:
    call = ReasonCall(messages=CALL.messages, allow_fallback=False)
    got = await run(call, [DOWN, GOOD])
    assert isinstance(got.error, Unavailable)
    assert (got.error.reason, got.error.metadata, got.error.retry_after) == (
        "PROVIDER_UNAVAILABLE",
        {"provider": "down"},
        1.0,
    )
    assert got.attempts() == [("down", 1)]
    assert len(got.reports) == 1


async def test_rejected_input_stops_without_retry_or_fallback() -> None:
    got = await run(CALL, [REFUSES, GOOD])
    assert isinstance(got.error, InvalidArgument)
    assert got.error.reason == "PROVIDER_REJECTED_INPUT"
    assert got.attempts() == [("refuses", 1)]
    assert got.switches() == []


async def test_context_length_moves_only_to_a_larger_window() -> None:
    small = sim("small", fail="context_length", context_window=8_000)
    same = sim("same", context_window=8_000)
    large = sim("large", context_window=200_000)
    got = await run(CALL, [small, same, large])
    assert got.error is None
    assert got.attempts() == [("small", 1), ("large", 2)]
    assert got.switches() == [
        ProviderSwitched("small", "large", "PROVIDER_CONTEXT_LENGTH_EXCEEDED")
    ]
    # Nowhere larger to go: the input error ends the call.
    got = await run(CALL, [small, same])
    assert isinstance(got.error, InvalidArgument)
    assert got.error.reason == "PROVIDER_CONTEXT_LENGTH_EXCEEDED"


async def test_an_auth_failure_opens_the_circuit_and_moves_on() -> None:
    locked = sim("locked", fail="unauthenticated")
    resilience = resilience_for([locked, GOOD])
    got = await run(CALL, [locked, GOOD], resilience=resilience)
    assert got.attempts() == [("locked", 1), ("good", 2)]  # not retried
    assert got.switches() == [ProviderSwitched("locked", "good", "PROVIDER_AUTH_FAILED")]
    assert resilience.states["locked"].circuit.state is CircuitState.OPEN
    again = await run(CALL, [locked, GOOD], resilience=resilience)
    assert again.attempts() == [("good", 1)]  # excluded while open


async def test_a_credential_failure_is_relayed_as_auths_when_no_candidate_is_left() -> None:
    upstream = FailedPrecondition("relink", reason="REAUTH_REQUIRED", domain="auth.saga")
    user = ProviderConfig(name="user", kind="sim", model="m", credential="oauth_user")
    engine = Scripted([ProviderCredentialFailed("no token", upstream)])
    got = await run(CALL, [user], {"user": engine})
    assert got.error is upstream
    got = await run(CALL, [user, GOOD], {"user": engine})
    assert got.switches() == [ProviderSwitched("user", "good", "REAUTH_REQUIRED")]


@pytest.mark.parametrize(
    ("fail", "reason", "code"),
    [
        ("rate_limited", "PROVIDER_RATE_LIMITED", "RESOURCE_EXHAUSTED"),
        ("unauthenticated", "PROVIDER_AUTH_FAILED", "UNAVAILABLE"),
        ("invalid_argument", "PROVIDER_REJECTED_INPUT", "INVALID_ARGUMENT"),
        ("context_length", "PROVIDER_CONTEXT_LENGTH_EXCEEDED", "INVALID_ARGUMENT"),
        ("unavailable", "PROVIDER_UNAVAILABLE", "UNAVAILABLE"),
    ],
)
async def test_each_taxonomy_kind_ends_with_its_status(fail: str, reason: str, code: str) -> None:
    got = await run(CALL, [sim("p", fail=fail, max_retries=0)])
    assert got.error is not None
    assert (got.error.reason, got.error.code.name, got.error.metadata) == (
        reason,
        code,
        {"provider": "p"},
    )


async def test_a_timeout_falls_back_and_is_not_retried() -> None:
    slow = Scripted([ProviderTimeout("no first token in 30 s")])
    got = await run(CALL, [sim("slow"), GOOD], {"slow": slow})
    assert got.attempts() == [("slow", 1), ("good", 2)]
    assert got.switches()[0].reason == "PROVIDER_TIMEOUT"


# ---------------------------------------------------------------- mid-stream


async def test_a_stream_cut_after_text_continues_on_the_next_provider() -> None:
    cheap = Scripted(["and ", "the ", "rest "])
    got = await run(
        ReasonCall(messages=CALL.messages, allow_fallback=True), [CUT, sim("next")], {"next": cheap}
    )
    assert got.error is None
    kinds = [type(e).__name__ for e in got.events]
    assert kinds == [
        "AttemptStarted",
        "TextDelta",
        "TextDelta",
        "ProviderSwitched",
        "AttemptStarted",
        "TextDelta",
        "TextDelta",
        "TextDelta",
        "Finished",
    ]
    partial = "".join(e.text for e in got.events[1:3] if isinstance(e, TextDelta))
    assert got.text() == partial + "and the rest "
    assert got.switches() == [ProviderSwitched("cut", "next", "PROVIDER_UNAVAILABLE")]
    # The next provider was asked to continue the partial text, with what is left of max_tokens.
    (request,) = cheap.requests
    assert request.messages[-2:] == (
        ChatMessage("assistant", partial),
        ChatMessage("user", CONTINUE_INSTRUCTION),
    )
    assert request.max_tokens < CALL.engine_request().max_tokens
    # Usage and cost are summed; the cut attempt is estimated and flagged.
    cut, rest = got.reports
    assert (cut.status, cut.usage.estimated) == (AttemptStatus.FAILED, True)
    assert cut.usage.output_tokens > 0
    assert cut.cost_micro_usd > 0
    assert (rest.status, rest.usage.estimated) == (AttemptStatus.SUCCEEDED, False)
    final = got.final()
    assert final.usage.output_tokens == cut.usage.output_tokens + rest.usage.output_tokens
    assert final.usage.input_tokens == cut.usage.input_tokens + rest.usage.input_tokens
    assert final.cost_micro_usd == cut.cost_micro_usd + rest.cost_micro_usd
    assert final.usage.estimated
    assert final.provider == "next"


async def test_a_continuation_that_starts_over_is_not_repeated() -> None:
    first = Scripted(["Once ", "upon ", ProviderUnavailable("reset")])
    again = Scripted(["Once ", "upon ", "a ", "time."])
    got = await run(CALL, [sim("first"), sim("again")], {"first": first, "again": again})
    assert got.text() == "Once upon a time."


async def test_a_cut_stream_without_fallback_ends_after_its_text() -> None:
    got = await run(ReasonCall(messages=CALL.messages), [CUT, GOOD])
    assert isinstance(got.error, Unavailable)
    assert [type(e) for e in got.events] == [AttemptStarted, TextDelta, TextDelta]
    (cut,) = got.reports
    assert (cut.status, cut.usage.estimated) == (AttemptStatus.FAILED, True)


async def test_complete_mode_falls_back_from_scratch_after_partial_text() -> None:
    # Nothing reached the caller yet, so the cut attempt's words are dropped, not continued.
    call = ReasonCall(messages=CALL.messages, complete=True, allow_fallback=True)
    got = await run(call, [CUT, GOOD])
    assert [type(e) for e in got.events] == [
        AttemptStarted,
        ProviderSwitched,
        AttemptStarted,
        Finished,
    ]
    alone = await run(call, [GOOD])
    assert got.final().text == alone.final().text
    assert got.final().usage.output_tokens == got.reports[0].usage.output_tokens + 4
    assert got.final().usage.estimated


@pytest.mark.parametrize(
    ("policy", "complete", "cut_charged"),
    [
        (ChargePolicy.ALL_ATTEMPTS, False, True),
        (ChargePolicy.ALL_ATTEMPTS, True, True),
        # Streamed, the cut attempt's text reached the caller; complete, none of it did.
        (ChargePolicy.DELIVERED_ONLY, False, True),
        (ChargePolicy.DELIVERED_ONLY, True, False),
        (ChargePolicy.WAIVE_UPSTREAM_FAILURES, False, False),
        (ChargePolicy.WAIVE_UPSTREAM_FAILURES, True, False),
    ],
)
async def test_each_attempt_is_charged_by_the_policy_beside_its_cost(
    policy: ChargePolicy, complete: bool, cut_charged: bool
) -> None:
    call = ReasonCall(messages=CALL.messages, complete=complete, allow_fallback=True)
    got = await run(call, [CUT, GOOD], policy=policy)
    cut, answered = got.reports
    assert cut.cost_micro_usd > 0  # the provider's cost is kept whatever the policy
    assert cut.charge_micro_usd == (cut.cost_micro_usd if cut_charged else 0)
    assert answered.charge_micro_usd == answered.cost_micro_usd > 0
    final = got.final()
    assert final.cost_micro_usd == cut.cost_micro_usd + answered.cost_micro_usd
    assert final.charge_micro_usd == cut.charge_micro_usd + answered.charge_micro_usd


# ---------------------------------------------------------------- circuits


async def test_the_circuit_opens_after_consecutive_failures_and_fails_fast() -> None:
    clock = Clock()
    down = sim("down", fail="unavailable", fail_calls=3, max_retries=0)
    engines = {"down": engine_for(down)}  # one engine: it counts its calls
    resilience = resilience_for([down], clock, circuit_consecutive_failures=3)
    for _ in range(3):
        got = await run(CALL, [down], engines, resilience)
        assert got.error is not None
        assert got.error.reason == "PROVIDER_UNAVAILABLE"
    # Alone in its group, it trips too: the call fails fast, nothing is attempted; the only
    # event says why the provider was skipped.
    got = await run(CALL, [down], engines, resilience)
    assert isinstance(got.error, Unavailable)
    assert got.error.reason == "CIRCUIT_OPEN"
    assert got.error.retry_after == pytest.approx(30.0)
    assert got.events == [ProvidersSkipped((Skip("down", "CIRCUIT_OPEN", 30.0),))]
    assert got.reports == []
    # After the cooldown one probe goes through; the provider has recovered, so it closes.
    clock.now += 30
    got = await run(CALL, [down], engines, resilience)
    assert got.error is None
    assert resilience.states["down"].circuit.state is CircuitState.CLOSED


async def test_an_attempt_whose_gate_fails_is_never_sent_and_judges_no_provider() -> None:
    """The consumer could not store the attempt's provisional record: the provider is not
    called, the attempt is reported unsent (nothing to bill or record), and however often
    it happens — a database outage — the provider's circuit stays closed."""
    engine = Scripted(["a", "b"])
    resilience = resilience_for([GOOD], circuit_consecutive_failures=2)
    for _ in range(4):
        reports: list[AttemptRecord] = []
        error: SagaError | None = None
        try:
            async for event in reason(
                CALL,
                [GOOD],
                {"good": engine},
                price_table([GOOD]),
                reports.append,
                resilience,
                gated=True,
            ):
                if isinstance(event, AttemptStarted) and event.held is not None:
                    event.held.set_exception(Unavailable("no", reason="USAGE_NOT_STORED"))
        except SagaError as raised:
            error = raised
        assert error is not None
        assert error.reason == "USAGE_NOT_STORED"
        assert [(r.sent, r.cost_micro_usd, r.usage.total_tokens) for r in reports] == [
            (False, 0, 0)
        ]
    assert engine.requests == []
    assert resilience.states["good"].circuit.state is CircuitState.CLOSED


async def test_concurrent_calls_on_a_half_open_circuit_send_one_probe() -> None:
    clock = Clock()
    slow = sim("slow", token_interval_ms=5.0)
    resilience = resilience_for([slow], clock)
    resilience.states["slow"].circuit.trip()
    clock.now += 30
    results = await asyncio.gather(*(run(CALL, [slow], resilience=resilience) for _ in range(3)))
    answered = [r for r in results if r.error is None]
    refused = [r for r in results if r.error is not None]
    assert len(answered) == 1
    assert [r.error.reason for r in refused if r.error] == ["CIRCUIT_OPEN"] * 2


# ---------------------------------------------------------------- limits


async def test_max_concurrency_sends_the_overflow_elsewhere_or_refuses_it() -> None:
    one = sim("one", max_concurrency=1, token_interval_ms=5.0)
    other = sim("other", token_interval_ms=5.0)
    resilience = resilience_for([one, other], concurrency_wait_ms=0.0)
    results = await asyncio.gather(
        *(run(CALL, [one, other], resilience=resilience) for _ in range(3))
    )
    assert all(r.error is None for r in results)
    assert sorted(r.final().provider for r in results) == ["one", "other", "other"]
    # The overflow was never attempted at "one": no Switched, only an attempt at "other".
    assert all(r.switches() == [] for r in results)
    # Alone, the overflow is refused with the limit's reason.
    resilience = resilience_for([one], concurrency_wait_ms=0.0)
    results = await asyncio.gather(*(run(CALL, [one], resilience=resilience) for _ in range(3)))
    assert sum(r.error is None for r in results) == 1
    errors = [r.error for r in results if r.error is not None]
    assert [(type(e), e.reason) for e in errors] == [
        (ResourceExhausted, "PROVIDER_LIMIT_REACHED")
    ] * 2
    assert all(e.retry_after for e in errors)


# ---------------------------------------------------------------- cancellation


async def test_a_cancelled_call_records_a_cancelled_attempt_and_frees_its_slot() -> None:
    slow = sim("slow", max_concurrency=1, token_interval_ms=50.0)
    resilience = resilience_for([slow], concurrency_wait_ms=0.0)
    reports: list[AttemptRecord] = []
    stream = reason(
        CALL, [slow], {"slow": engine_for(slow)}, price_table([slow]), reports.append, resilience
    )
    assert isinstance(await anext(stream), AttemptStarted)
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()
    assert [r.status for r in reports] == [AttemptStatus.CANCELLED]
    assert resilience.states["slow"].limits.in_flight == 0


async def test_deadline_error_kind_is_deadline_exceeded() -> None:
    got = await run(
        CALL,
        [sim("slow", max_retries=0)],
        {"slow": Scripted([ProviderTimeout("no first token in 30 s")])},
    )
    assert isinstance(got.error, DeadlineExceeded)


async def test_an_engine_bug_is_accounted_and_frees_the_probe() -> None:
    clock = Clock()
    p = sim("buggy")
    resilience = resilience_for([p], clock)
    resilience.states["buggy"].circuit.trip()
    clock.now += 30  # half-open: this call is the probe
    with pytest.raises(RuntimeError):
        async for _ in reason(
            CALL,
            [p],
            {"buggy": Scripted([RuntimeError("bug")])},
            price_table([p]),
            lambda record: None,
            resilience,
        ):
            pass
    # The probe permit was released: the next call may probe.
    assert resilience.states["buggy"].circuit.allow() is not None
    assert resilience.states["buggy"].limits.in_flight == 0


# ---------------------------------------------------------------- skipped providers


async def test_an_open_circuit_is_announced_as_skipped_before_the_fallback_attempt() -> None:
    clock = Clock()
    down = sim("down", fail="unavailable", max_retries=0)
    counted: list[tuple[str, str]] = []
    config = RouterConfig(retry_initial_backoff_ms=10.0, circuit_consecutive_failures=1)
    resilience = Resilience.build(
        [down, GOOD], config, clock, on_refusal=lambda p, r: counted.append((p, r))
    )
    # Control: the first call tries "down" (nothing skipped), fails over, and opens its circuit.
    first = await run(CALL, [down, GOOD], resilience=resilience)
    assert first.error is None
    assert not [e for e in first.events if isinstance(e, ProvidersSkipped)]
    assert resilience.states["down"].circuit.state is CircuitState.OPEN
    got = await run(CALL, [down, GOOD], resilience=resilience)
    assert got.error is None
    assert got.events[0] == ProvidersSkipped((Skip("down", "CIRCUIT_OPEN", 30.0),))
    assert got.events[1] == AttemptStarted("good", "good-m", 1)
    assert counted == [("down", "CIRCUIT_OPEN")]
    # An open circuit ranked after the provider that answers was never reached: not said.
    after = await run(CALL, [GOOD, down], resilience=resilience)
    assert after.error is None
    assert not [e for e in after.events if isinstance(e, ProvidersSkipped)]
    assert counted == [("down", "CIRCUIT_OPEN")]


# ---------------------------------------------------------------- the call's cost limit

WORDS = Scripted(["abcd"] * 5)
"""Five deltas of one estimated token each (4 characters)."""


async def test_a_stream_that_would_pass_the_cost_limit_is_stopped_and_accounted() -> None:
    # The prompt is ~4 tokens at 1 micro-USD, each output token 2: a limit of 8 pays for two.
    limited = dataclasses.replace(CALL, max_cost_micro_usd=8)
    got = await run(limited, [GOOD], {"good": WORDS})
    assert isinstance(got.error, ResourceExhausted)
    assert got.error.reason == "COST_LIMIT_EXCEEDED"
    assert got.error.quota_violations[0].subject == "max_cost_micro_usd"
    assert got.text() == "abcd" * 2  # the chunk past the limit never reached the caller
    (report,) = got.reports
    assert report.status is AttemptStatus.FAILED
    assert report.error_reason == "COST_LIMIT_EXCEEDED"
    # The attempt's tokens are accounted: the prompt and the three chunks the provider sent.
    assert (report.usage.input_tokens, report.usage.output_tokens) == (4, 3)
    assert report.usage.estimated
    assert report.cost_micro_usd == 4 + 3 * 2
    # Control: a limit that covers the answer lets it finish.
    enough = await run(dataclasses.replace(CALL, max_cost_micro_usd=15), [GOOD], {"good": WORDS})
    assert enough.error is None
    assert enough.text() == "abcd" * 5


async def test_a_candidate_whose_least_cost_passes_the_limit_is_skipped() -> None:
    dear = dataclasses.replace(sim("dear"), input_micro_usd_per_mtok=10_000_000)
    got = await run(dataclasses.replace(CALL, max_cost_micro_usd=20), [dear, GOOD])
    assert got.error is None
    assert got.events[0] == ProvidersSkipped((Skip("dear", "COST_LIMIT_EXCEEDED"),))
    assert got.attempts() == [("good", 1)]
    # A skip is no failure: without fallback too, the first candidate that fits is called.
    single = dataclasses.replace(CALL, max_cost_micro_usd=20, allow_fallback=False)
    assert (await run(single, [dear, GOOD])).attempts() == [("good", 1)]
    # Alone, it is refused before any call.
    alone = await run(dataclasses.replace(CALL, max_cost_micro_usd=20), [dear])
    assert isinstance(alone.error, ResourceExhausted)
    assert alone.error.reason == "COST_LIMIT_EXCEEDED"
    assert alone.reports == []
