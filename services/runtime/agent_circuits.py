"""A circuit breaker per agent: steps of an agent that keeps failing fail fast for a while.

The breaker is services/common/circuit.py's, the router's per provider, with only its
consecutive-failures rule: `runtime.agent_circuit_failures` failed steps in a row open it
for `runtime.agent_circuit_cooldown_seconds`; after that one step probes, and its verdict
closes or reopens it. (The ratio rule is switched off by needing every call in the window
to have failed, at least as many as the consecutive rule's: that already tripped.)

A failure counts when it says the agent, or what it depends on, is unwell: UNAVAILABLE,
DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, DATA_LOSS. The caller's mistakes (INVALID_ARGUMENT,
a spent cost limit, a model reply that did not fit …) and a step cancelled or cut off by its
timeout give no verdict. A step of an open agent fails UNAVAILABLE `AGENT_CIRCUIT_OPEN` with
RetryInfo, before the agent sees it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING

import grpc

from services.common.circuit import Circuit, CircuitSettings, CircuitState
from services.common.errors import Code, SagaError, Unavailable

if TYPE_CHECKING:
    from services.runtime.agents.step import StepCall, StepEvent
    from services.runtime.capabilities import Agent, Capability

UNWELL = frozenset(
    (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.INTERNAL, Code.UNKNOWN, Code.DATA_LOSS)
)


def agent_settings(failures: int = 5, cooldown_seconds: float = 30.0) -> CircuitSettings:
    """Settings that open after `failures` failed steps in a row (see the module docstring)."""
    return CircuitSettings(
        consecutive_failures=failures,
        failure_ratio=1.0,
        min_calls=failures,
        cooldown_seconds=cooldown_seconds,
    )


def _code(error: BaseException) -> Code | None:
    if isinstance(error, SagaError):
        return error.code
    if isinstance(error, grpc.aio.AioRpcError):
        return Code(error.code().value[0])
    return Code.INTERNAL if isinstance(error, Exception) else None


class GuardedAgent:
    """`agent` behind its circuit: the same name, capabilities and steps."""

    def __init__(self, agent: Agent, circuit: Circuit) -> None:
        self.agent = agent
        self.circuit = circuit

    @property
    def name(self) -> str:
        return self.agent.name

    @property
    def capabilities(self) -> tuple[Capability, ...]:
        return self.agent.capabilities

    async def run(self, call: StepCall) -> AsyncIterator[StepEvent]:
        """The agent's step, or AGENT_CIRCUIT_OPEN while its circuit is open."""
        permit = self.circuit.allow()
        if permit is None:
            retry_after = self.circuit.retry_after()
            raise Unavailable(
                f"agent {self.name!r} failed too often in a row; its steps are refused for "
                f"{retry_after:.1f} s more",
                reason="AGENT_CIRCUIT_OPEN",
                metadata={"agent": self.name, "capability": call.capability},
                retry_after=retry_after,
            )
        verdict: Callable[..., None] = self.circuit.release
        try:
            async for event in self.agent.run(call):
                yield event
            verdict = self.circuit.record_success
        except BaseException as error:
            if _code(error) in UNWELL:
                verdict = self.circuit.record_failure
            raise
        finally:
            verdict(permit)


class AgentCircuits:
    """The circuits of a process's agents, by agent name."""

    def __init__(
        self, settings: CircuitSettings | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings or agent_settings()
        self._clock = clock
        self._circuits: dict[str, Circuit] = {}

    def guard(self, agent: Agent) -> GuardedAgent:
        """`agent` behind its own circuit (one per agent name)."""
        circuit = self._circuits.setdefault(agent.name, Circuit(self._settings, self._clock))
        return GuardedAgent(agent, circuit)

    def states(self) -> Mapping[str, CircuitState]:
        """Each agent's circuit state now (an open one past its cooldown reads HALF_OPEN)."""
        return {name: c.state for name, c in self._circuits.items()}
