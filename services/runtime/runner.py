"""Runs a pattern's steps and reports what happens, in order.

For now the steps run one after another, in file order (the DAG runner — `depends_on`,
concurrent branches, `when`, retries — replaces this loop without changing its events). For
each step: its args are rendered from the inputs, its capability's owner runs it, and the
runner reports `StepBegan`, the agent's relayed events untouched, and `StepFinished`; after
the last step, the pattern's outputs are rendered from the step outputs into `RunFinished`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from services.common.errors import Internal
from services.common.usage import Usage
from services.runtime.agents.step import Relayed, RunScope, StepCall, StepResult
from services.runtime.capabilities import CapabilityRegistry
from services.runtime.patterns import Pattern
from services.runtime.templates import render_value


@dataclass(frozen=True)
class StepBegan:
    """A step started."""

    step_id: str
    agent: str
    capability: str


@dataclass(frozen=True)
class StepFinished:
    """A step completed with `result` after `duration_ms`."""

    step_id: str
    agent: str
    capability: str
    duration_ms: int
    result: StepResult


@dataclass(frozen=True)
class RunFinished:
    """Every step completed: the pattern's outputs and the run's totals."""

    outputs: Mapping[str, Any]
    usage: Usage
    cost_micro_usd: int


RunEvent = StepBegan | Relayed | StepFinished | RunFinished


class Runner:
    """Runs patterns with the agents of `registry`."""

    def __init__(self, registry: CapabilityRegistry) -> None:
        self._registry = registry

    async def run(
        self, pattern: Pattern, inputs: Mapping[str, Any], scope: RunScope
    ) -> AsyncIterator[RunEvent]:
        """Run `pattern` for `scope`; errors (agents', upstream) propagate unchanged."""
        results: dict[str, Mapping[str, Any]] = {}
        usage = Usage()
        cost = 0
        render_scope = {"inputs": inputs}
        for step in pattern.steps:
            agent, capability = self._registry.owner(step.capability)
            call = StepCall(
                run=scope,
                step_id=step.id,
                capability=step.capability,
                args=render_value(step.args, render_scope),
                spent_micro_usd=cost,
            )
            yield StepBegan(step.id, agent.name, capability.name)
            started = time.monotonic()
            result: StepResult | None = None
            async for event in agent.run(call):
                if isinstance(event, Relayed):
                    yield event
                else:
                    result = event
            if result is None:
                raise Internal(f"step {step.id} ended without a result")
            yield StepFinished(
                step.id,
                agent.name,
                capability.name,
                int((time.monotonic() - started) * 1000),
                result,
            )
            results[step.id] = result.output
            usage += result.usage
            cost += result.cost_micro_usd
        outputs = {name: t.render({"steps": results}) for name, t in pattern.outputs.items()}
        yield RunFinished(outputs, usage, cost)
