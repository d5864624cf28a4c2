"""A circuit breaker per agent: failed steps in a row open it, a step of an open agent fails
fast with UNAVAILABLE AGENT_CIRCUIT_OPEN and RetryInfo before the agent sees it, one probe
after the cooldown closes it; the caller's mistakes and cancelled steps give no verdict."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.common.circuit import CircuitState
from services.common.errors import InvalidArgument, SagaError, Unavailable
from services.runtime.agent_circuits import AgentCircuits, agent_settings
from services.runtime.agents.step import RunScope, StepCall, StepEvent, StepResult
from services.runtime.capabilities import Capability, CapabilityRegistry, FieldSpec
from tests.clock import Clock

THING = Capability("thing.do", "thing", "d", (), (FieldSpec("ok", "boolean"),))


class Flaky:
    """An agent that fails with each of `errors` in turn, then succeeds."""

    name = "thing"
    capabilities = (THING,)

    def __init__(self) -> None:
        self.errors: list[SagaError] = []
        self.runs = 0

    async def run(self, call: StepCall) -> AsyncIterator[StepEvent]:
        self.runs += 1
        if self.errors:
            raise self.errors.pop(0)
        yield StepResult({"ok": True})


CALL = StepCall(RunScope("exe_1", "p", "usr_a", "", "2026-12-03", ""), "s", "thing.do", {})


async def step(registry: CapabilityRegistry) -> None:
    agent, _ = registry.owner("thing.do")
    [result] = [event async for event in agent.run(CALL)]
    assert isinstance(result, StepResult)


def setup() -> tuple[CapabilityRegistry, Flaky, Clock]:
    clock = Clock()
    registry = CapabilityRegistry(AgentCircuits(agent_settings(2, 10.0), clock))
    flaky = Flaky()
    registry.register(flaky)
    return registry, flaky, clock


async def test_failed_steps_in_a_row_open_the_agents_circuit_until_a_probe_closes_it() -> None:
    registry, flaky, clock = setup()
    flaky.errors = [Unavailable("down"), Unavailable("down")]
    for _ in range(2):
        with pytest.raises(Unavailable):
            await step(registry)
    assert registry.circuits.states() == {"thing": CircuitState.OPEN}
    clock.advance(4)
    with pytest.raises(Unavailable) as caught:
        await step(registry)
    assert caught.value.reason == "AGENT_CIRCUIT_OPEN"
    assert caught.value.retry_after == pytest.approx(6)
    assert caught.value.metadata == {"agent": "thing", "capability": "thing.do"}
    assert flaky.runs == 2  # refused before the agent saw it
    clock.advance(6)
    assert registry.circuits.states() == {"thing": CircuitState.HALF_OPEN}
    await step(registry)  # the probe succeeds
    assert registry.circuits.states() == {"thing": CircuitState.CLOSED}


async def test_the_callers_mistakes_and_a_success_between_failures_do_not_open_it() -> None:
    registry, flaky, _ = setup()
    flaky.errors = [Unavailable("down"), InvalidArgument("bad"), InvalidArgument("bad")]
    for _ in range(3):
        with pytest.raises(SagaError):
            await step(registry)
    await step(registry)
    flaky.errors = [Unavailable("down")]
    with pytest.raises(Unavailable):
        await step(registry)
    assert registry.circuits.states() == {"thing": CircuitState.CLOSED}
