"""Active health checks: how a probe's ending maps to a reason and a circuit verdict, how it
moves (or leaves) the provider's circuit, the request's validation, bounded concurrency and
the periodic probes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import pytest

from services.common.circuit import CircuitState
from services.common.config import ProviderConfig, RouterConfig, SimConfig
from services.common.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SagaError,
    Unavailable,
)
from services.common.lifecycle import Lifecycle
from services.router.engines.base import (
    EngineEvent,
    EngineRequest,
    Finish,
    FinishReason,
    ProviderContextTooLong,
    ProviderCredentialFailed,
    ProviderError,
    ProviderRateLimited,
    ProviderRejectedInput,
    ProviderTimeout,
    ProviderUnauthenticated,
    ProviderUnavailable,
    TextDelta,
)
from services.router.engines.sim import SimEngine
from services.router.failures import Verdict
from services.router.probes import (
    NOT_PROBED,
    PROBE_MAX_TOKENS,
    SKIPPED_PER_USER_CREDENTIAL,
    HealthChecks,
    ProbeResult,
    probe,
    probe_outcome,
    probe_timeout,
)
from services.router.resilience import Resilience
from tests.clock import Clock, settle


def sim(name: str, **settings: Any) -> ProviderConfig:
    options = {
        k: settings.pop(k) for k in list(settings) if k in ProviderConfig.__dataclass_fields__
    }
    return ProviderConfig(
        name=name,
        kind="sim",
        model=f"{name}-m",
        sim=SimConfig(**{"token_interval_ms": 0.0, "first_token_ms": 0.0, **settings}),
        **options,
    )


GOOD = sim("good")
DOWN = sim("down", fail="unavailable")
LOCKED = sim("locked", fail="unauthenticated")


def resilience_for(
    providers: Sequence[ProviderConfig], clock: Clock | None = None, **router: Any
) -> Resilience:
    config = RouterConfig(**{"circuit_consecutive_failures": 2, **router})
    return Resilience.build(providers, config, clock or Clock())


class Gated:
    """An engine that answers once `gate` is set, counting calls and calls in flight."""

    def __init__(
        self,
        gate: asyncio.Event | None = None,
        error: Exception | None = None,
        stream_error: Exception | None = None,
    ) -> None:
        self.gate = gate
        self.error = error
        self.stream_error = stream_error
        """Raised by streamed calls only (a provider whose streams are broken)."""
        self.calls = 0
        self.in_flight = 0
        self.most = 0
        self.requests: list[EngineRequest] = []

    async def stream(self, request: EngineRequest) -> AsyncGenerator[EngineEvent, None]:
        self.calls += 1
        self.requests.append(request)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.error is not None:
                raise self.error
            if request.stream and self.stream_error is not None:
                raise self.stream_error
            yield TextDelta("pong")
            yield Finish(FinishReason.LENGTH, input_tokens=1, output_tokens=1)
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        pass


# --- outcome mapping --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reason", "verdict"),
    [
        (ProviderUnavailable("x"), "PROVIDER_UNAVAILABLE", Verdict.FAILURE),
        (ProviderRateLimited("x", retry_after=2), "PROVIDER_RATE_LIMITED", Verdict.FAILURE),
        (ProviderTimeout("x"), "PROVIDER_TIMEOUT", Verdict.FAILURE),
        (ProviderUnauthenticated("x"), "PROVIDER_AUTH_FAILED", Verdict.TRIP),
        # The one-word probe refused: no call would get through, unlike a user's input.
        (ProviderRejectedInput("x"), "PROVIDER_REJECTED_INPUT", Verdict.FAILURE),
        (ProviderContextTooLong("x"), "PROVIDER_CONTEXT_LENGTH_EXCEEDED", Verdict.FAILURE),
        # A key not stored yet says nothing about the provider: no verdict.
        (
            ProviderCredentialFailed("x", NotFound("no key", reason="PROVIDER_KEY_NOT_SET")),
            "PROVIDER_KEY_NOT_SET",
            Verdict.NONE,
        ),
        (
            ProviderCredentialFailed(
                "x", PermissionDenied("refused", reason="PROVIDER_CLIENT_INVALID")
            ),
            "PROVIDER_CLIENT_INVALID",
            Verdict.TRIP,
        ),
        (
            ProviderCredentialFailed("x", Unavailable("auth down", reason="AUTH_UNAVAILABLE")),
            "AUTH_UNAVAILABLE",
            Verdict.NONE,
        ),
    ],
)
def test_a_failed_probe_maps_to_the_calls_reason_and_a_verdict(
    error: ProviderError, reason: str, verdict: Verdict
) -> None:
    provider = sim("p", credential="api_key")
    outcome = probe_outcome(error, provider)
    assert (outcome.error_reason, outcome.verdict) == (reason, verdict)


def test_the_probe_timeout_is_the_tightest_bound() -> None:
    assert probe_timeout(sim("p"), 10.0, None) == (10.0, False)
    assert probe_timeout(sim("p", total_timeout_ms=2000), 10.0, None) == (2.0, False)
    assert probe_timeout(sim("p"), 10.0, 60.0) == (10.0, False)
    assert probe_timeout(sim("p"), 10.0, 1.2) == pytest.approx((1.0, True))
    assert probe_timeout(sim("p"), 10.0, 0.1) == (0.0, True)


# --- probes and circuits ----------------------------------------------------------------


async def test_a_healthy_provider_answers_the_probe() -> None:
    resilience = resilience_for([GOOD])
    result = await probe(resilience.states["good"], SimEngine(GOOD), limit=5)
    assert (result.provider, result.ok, result.error_reason) == ("good", True, "")
    assert result.latency_ms >= 0
    circuit = resilience.states["good"].circuit
    assert (circuit.state, circuit.healthy) == (CircuitState.CLOSED, True)


def modes(result: ProbeResult) -> tuple[tuple[bool, str], tuple[bool, str]]:
    """(ok, reason) of the streamed and the non-streamed probe."""
    assert result.stream is not None
    assert result.complete is not None
    return (result.stream.ok, result.stream.error_reason), (
        result.complete.ok,
        result.complete.error_reason,
    )


async def test_the_probe_is_one_token_streamed_then_not_streamed() -> None:
    engine = Gated()
    resilience = resilience_for([GOOD])
    result = await probe(resilience.states["good"], engine, limit=5)
    assert result.ok
    assert modes(result) == ((True, ""), (True, ""))
    assert [(r.max_tokens, r.stream) for r in engine.requests] == [
        (PROBE_MAX_TOKENS, True),
        (PROBE_MAX_TOKENS, False),
    ]
    assert [[m.content for m in r.messages] for r in engine.requests] == [["ping"], ["ping"]]


async def test_broken_streams_fail_the_probe_though_plain_answers_work() -> None:
    resilience = resilience_for([GOOD])
    state = resilience.states["good"]
    engine = Gated(stream_error=ProviderUnavailable("stream cut"))
    result = await probe(state, engine, limit=5)
    assert (result.ok, result.error_reason) == (False, "PROVIDER_UNAVAILABLE")
    assert modes(result) == ((False, "PROVIDER_UNAVAILABLE"), (True, ""))
    assert state.circuit.healthy is False  # a failure for the circuit, like a failed call
    # Positive control: the same provider with working streams is healthy.
    assert (await probe(state, Gated(), limit=5)).ok


async def test_a_refused_credential_is_not_probed_twice() -> None:
    resilience = resilience_for([GOOD])
    engine = Gated(error=ProviderUnauthenticated("401"))
    result = await probe(resilience.states["good"], engine, limit=5)
    assert (result.ok, result.error_reason, engine.calls) == (False, "PROVIDER_AUTH_FAILED", 1)
    assert modes(result)[1] == (False, NOT_PROBED)


async def test_failed_probes_count_towards_opening_the_circuit() -> None:
    resilience = resilience_for([GOOD, DOWN])
    engine = SimEngine(DOWN)
    first = await probe(resilience.states["down"], engine, limit=5)
    assert (first.ok, first.error_reason) == (False, "PROVIDER_UNAVAILABLE")
    circuit = resilience.states["down"].circuit
    assert (circuit.state, circuit.healthy) == (CircuitState.CLOSED, False)
    await probe(resilience.states["down"], engine, limit=5)
    assert circuit.state is CircuitState.OPEN  # two in a row, as configured
    # Positive control: the healthy provider's circuit did not move.
    await probe(resilience.states["good"], SimEngine(GOOD), limit=5)
    assert resilience.states["good"].circuit.state is CircuitState.CLOSED


async def test_an_authentication_failure_opens_the_circuit_at_once() -> None:
    resilience = resilience_for([LOCKED])
    result = await probe(resilience.states["locked"], SimEngine(LOCKED), limit=5)
    assert (result.ok, result.error_reason) == (False, "PROVIDER_AUTH_FAILED")
    assert resilience.states["locked"].circuit.state is CircuitState.OPEN


async def test_a_successful_probe_closes_a_half_open_circuit() -> None:
    clock = Clock()
    flaky = sim("flaky", fail="unavailable", fail_calls=4)  # two probes, two calls each
    resilience = resilience_for([flaky], clock, circuit_cooldown_seconds=30)
    state = resilience.states["flaky"]
    engine = SimEngine(flaky)
    for _ in range(2):
        assert not (await probe(state, engine, limit=5)).ok
    assert state.circuit.state is CircuitState.OPEN
    clock.now += 31
    assert state.circuit.state is CircuitState.HALF_OPEN
    assert (await probe(state, engine, limit=5)).ok
    assert (state.circuit.state, state.circuit.healthy) == (CircuitState.CLOSED, True)


async def test_a_failed_probe_reopens_a_half_open_circuit() -> None:
    clock = Clock()
    resilience = resilience_for([DOWN], clock, circuit_cooldown_seconds=30)
    state = resilience.states["down"]
    engine = SimEngine(DOWN)
    for _ in range(2):
        await probe(state, engine, limit=5)
    clock.now += 31
    assert state.circuit.state is CircuitState.HALF_OPEN
    assert not (await probe(state, engine, limit=5)).ok
    assert state.circuit.state is CircuitState.OPEN
    assert state.circuit.retry_after() == pytest.approx(30)  # a fresh cooldown


async def test_a_probe_in_the_cooldown_shows_health_but_leaves_the_circuit_open() -> None:
    clock = Clock()
    flaky = sim("flaky", fail="unavailable", fail_calls=4)  # two probes, two calls each
    resilience = resilience_for([flaky], clock, circuit_cooldown_seconds=30)
    state = resilience.states["flaky"]
    engine = SimEngine(flaky)
    for _ in range(2):
        await probe(state, engine, limit=5)
    assert (state.circuit.state, state.circuit.healthy) == (CircuitState.OPEN, False)
    result = await probe(state, engine, limit=5)
    assert result.ok  # the provider was called, and answered
    assert (state.circuit.state, state.circuit.healthy) == (CircuitState.OPEN, True)


async def test_a_per_user_credential_is_skipped_without_a_call() -> None:
    personal = sim("personal", credential="oauth_user")
    resilience = resilience_for([personal])
    engine = Gated()
    result = await probe(resilience.states["personal"], engine, limit=5)
    assert result == ProbeResult("personal", False, 0, SKIPPED_PER_USER_CREDENTIAL)
    assert engine.calls == 0
    circuit = resilience.states["personal"].circuit
    assert (circuit.state, circuit.healthy) == (CircuitState.CLOSED, True)
    # Positive control: the same engine behind a shared credential is probed.
    shared = sim("shared", credential="api_key")
    assert (await probe(resilience_for([shared]).states["shared"], engine, limit=5)).ok
    assert engine.calls == 2  # streamed and not


async def test_a_provider_that_does_not_answer_in_time_fails_the_probe() -> None:
    resilience = resilience_for([GOOD])
    state = resilience.states["good"]
    result = await probe(state, Gated(asyncio.Event()), limit=0.05)
    assert (result.ok, result.error_reason) == (False, "PROVIDER_TIMEOUT")
    assert state.circuit.healthy is False


async def test_a_probe_cut_by_the_callers_deadline_gives_no_verdict() -> None:
    clock = Clock()
    resilience = resilience_for([DOWN], clock, circuit_cooldown_seconds=30)
    state = resilience.states["down"]
    for _ in range(2):
        await probe(state, SimEngine(DOWN), limit=5)
    clock.now += 31
    result = await probe(state, Gated(asyncio.Event()), limit=5, remaining=0.25)
    assert (result.ok, result.error_reason) == (False, "PROVIDER_TIMEOUT")
    # No verdict: still half-open, and the probe permit was handed back for the next call.
    assert state.circuit.state is CircuitState.HALF_OPEN
    assert state.circuit.allow() is not None


async def test_a_probe_refused_by_the_routers_own_limit_gives_no_verdict() -> None:
    limited = sim("limited", rpm=1)
    resilience = resilience_for([limited])
    state = resilience.states["limited"]
    engine = Gated()
    assert (await probe(state, engine, limit=5)).ok
    refused = await probe(state, engine, limit=5)
    assert (refused.ok, refused.error_reason) == (False, "PROVIDER_LIMIT_REACHED")
    assert engine.calls == 2  # the first probe's two calls, none for the refused one
    assert state.circuit.healthy is True


async def test_an_engine_bug_is_reported_and_other_probes_go_on() -> None:
    broken = Gated(error=RuntimeError("bug"))
    relayed = Gated(error=SagaError("auth said no", reason="SOMETHING_UPSTREAM"))
    providers = [sim("broken"), sim("relayed"), GOOD]
    checks = HealthChecks(
        providers,
        {"broken": broken, "relayed": relayed, "good": SimEngine(GOOD)},
        resilience_for(providers),
        RouterConfig(),
    )
    results = await checks.check(providers)
    assert [(r.provider, r.ok, r.error_reason) for r in results] == [
        ("broken", False, "INTERNAL"),
        ("relayed", False, "SOMETHING_UPSTREAM"),
        ("good", True, ""),
    ]


# --- the checks -------------------------------------------------------------------------


def checks_for(
    providers: Sequence[ProviderConfig], engines: dict[str, Any] | None = None, **router: Any
) -> tuple[HealthChecks, Resilience]:
    engines = engines or {p.name: SimEngine(p) for p in providers}
    config = RouterConfig(**router)
    resilience = Resilience.build(providers, config)
    return HealthChecks(providers, engines, resilience, config), resilience


def test_select_names_all_by_default_and_each_once() -> None:
    checks, _ = checks_for([GOOD, DOWN, LOCKED])
    assert [p.name for p in checks.select([])] == ["good", "down", "locked"]
    assert [p.name for p in checks.select(["locked", "good", "locked"])] == ["locked", "good"]


def test_select_refuses_unknown_names_and_too_many() -> None:
    checks, _ = checks_for([GOOD, DOWN])
    with pytest.raises(InvalidArgument) as unknown:
        checks.select(["good", "nope"])
    assert unknown.value.reason == "UNKNOWN_PROVIDER"
    assert unknown.value.field_violations[0].field == "providers"
    with pytest.raises(InvalidArgument) as many:
        checks.select(["good"] * 257)
    assert many.value.reason == "CHECK_REQUEST_INVALID"
    assert [p.name for p in checks.select(["good"] * 256)] == ["good"]


async def test_probes_run_at_most_the_configured_number_at_once() -> None:
    gate = asyncio.Event()
    engine = Gated(gate)
    providers = [sim(f"p{i}") for i in range(5)]
    checks, _ = checks_for(
        providers, {p.name: engine for p in providers}, health_check_concurrency=2
    )
    running = asyncio.create_task(checks.check(providers))
    await settle()  # every probe the bound lets start has started
    assert (engine.calls, engine.in_flight) == (2, 2)
    gate.set()
    results = await running
    assert [r.ok for r in results] == [True] * 5
    assert (engine.calls, engine.most) == (10, 2)  # two calls per probe, one at a time


async def test_periodic_probes_flip_health_without_calls_and_stop() -> None:
    checks, resilience = checks_for([GOOD, DOWN], health_check_interval_seconds=0.05)
    circuits = {name: s.circuit for name, s in resilience.states.items()}
    assert circuits["down"].healthy is True  # nothing known yet
    assert checks.periodic
    lifecycle = Lifecycle()
    lifecycle.spawn("router-health-checks", checks.run_periodic)
    try:
        for _ in range(200):
            if not circuits["down"].healthy:
                break
            await asyncio.sleep(0.02)
        assert (circuits["down"].healthy, circuits["good"].healthy) == (False, True)
    finally:
        await lifecycle.shut_down()
    assert not lifecycle.running("router-health-checks")


async def test_no_periodic_probes_when_the_interval_is_zero() -> None:
    checks, _ = checks_for([DOWN])
    assert not checks.periodic
