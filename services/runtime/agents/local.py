"""Agents whose steps are computed in the runtime itself (no LLM, nothing streamed).

A `LocalAgent` is a table of capability → handler. It checks each step at the boundary: the
rendered arguments against the capability's `args` (INVALID_ARGUMENT STEP_ARGS_INVALID, one
field violation per bad argument, named `steps.<id>.args.<name>`) before the handler runs,
and the handler's output against the capability's `outputs` (INTERNAL STEP_OUTPUT_INVALID: a
bug of ours, never the caller's) before anything downstream sees it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from services.common.errors import FieldViolation, Internal, InvalidArgument
from services.runtime.agents.step import StepCall, StepEvent, StepResult
from services.runtime.capabilities import Capability, check_fields

Handler = Callable[[StepCall, Mapping[str, Any]], Awaitable[Mapping[str, Any]]]
"""Computes a step's output from its call and its checked arguments."""


def step_args_invalid(call: StepCall, problems: list[tuple[str, str]]) -> InvalidArgument:
    """INVALID_ARGUMENT STEP_ARGS_INVALID for `problems` [(argument path, problem)…]."""
    violations = [
        FieldViolation(f"steps.{call.step_id}.args.{name}"[:128], problem)
        for name, problem in problems
    ]
    return InvalidArgument(
        f"step {call.step_id} ({call.capability}): "
        + "; ".join(f"{name}: {problem}" for name, problem in problems[:5]),
        reason="STEP_ARGS_INVALID",
        metadata={"stepId": call.step_id, "capability": call.capability},
        field_violations=violations,
    )


class LocalAgent:
    """Runs its capabilities' handlers in-process, schemas checked on both sides."""

    def __init__(self, name: str, handlers: Mapping[Capability, Handler]) -> None:
        self.name = name
        self.capabilities = tuple(handlers)
        self._handlers = {c.name: (c, h) for c, h in handlers.items()}

    async def run(self, call: StepCall) -> AsyncIterator[StepEvent]:
        """Check the arguments, compute the output, check it, and yield it as the result."""
        capability, handler = self._handlers[call.capability]
        args, problems = check_fields(capability.args, call.args)
        if problems:
            raise step_args_invalid(call, problems)
        output = await handler(call, args)
        _, wrong = check_fields(capability.outputs, output)
        if wrong:
            raise Internal(
                f"step {call.step_id} ({call.capability}) produced an output that does not "
                f"match its schema: {wrong[0][0]}: {wrong[0][1]}",
                reason="STEP_OUTPUT_INVALID",
                metadata={"stepId": call.step_id, "capability": call.capability},
            )
        yield StepResult(output=output)
