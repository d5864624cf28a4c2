"""Runs a pattern's steps as a DAG and reports what happens.

A step starts once every step it depends on has finished (its `depends_on` and the steps
whose output its templates read); steps that do not depend on each other run concurrently,
at most `max_parallel` at once per run (one at a time when the run has a cost limit, which is
checked against what finished steps spent). Before a step starts: when every step it depends on
was skipped it is skipped too, and when its `when` does not hold it is skipped. A step's
args are rendered from `inputs`, `state` (the outputs so far, by step id or `as` name),
`ctx` and `session` (session_root.py); its capability's owner runs it.

Events: per step, `StepBegan`, the agent's relayed events untouched, then `StepFinished`
(or a lone `StepSkipped`), in that order; events of concurrent steps interleave. After the
last step, the pattern's outputs are rendered into `RunFinished`.

Per-step policy: `timeout` bounds each attempt (DEADLINE_EXCEEDED `STEP_TIMEOUT`); `retry`
tries again after UNAVAILABLE, DEADLINE_EXCEEDED or ABORTED, waiting the step's Backoff,
unless the attempt already relayed events (an LLM step that streamed text: the caller saw
it) or the run's deadline would pass first; `on_error: continue` turns the failure into the
step's `default` output (reported in `StepFinished.recovered`). Any other failure ends the
run: the other steps are cancelled and the error propagates with `stepId` and `traceId` in
its metadata (an upstream status keeps its code, reason and domain).

A run that moved to another replica (durable runs) passes the steps its log recorded as
finished or skipped (`reuse`): when such a step is ready it is not run again — its recorded
output joins the state and its usage and cost the run's totals, and no event is reported
for it (its events are in the log already).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2

from services.common.errors import Code, DeadlineExceeded, FailedPrecondition, Internal, SagaError
from services.common.status import RemoteError
from services.common.usage import Usage
from services.runtime.agents.step import Relayed, RunScope, StepCall, StepResult
from services.runtime.capabilities import CapabilityRegistry
from services.runtime.expressions import ExpressionError
from services.runtime.patterns import Pattern, Step
from services.runtime.templates import render_value

DOMAIN = "runtime.saga"
log = logging.getLogger("saga.runtime.runner")
RETRYABLE = frozenset((Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.ABORTED))


@dataclass(frozen=True)
class StepBegan:
    """A step started."""

    step_id: str
    agent: str
    capability: str


@dataclass(frozen=True)
class StepFinished:
    """A step completed with `result` after `duration_ms`; `recovered` is the error a step
    with `on_error: continue` failed with (its result is then the step's default)."""

    step_id: str
    agent: str
    capability: str
    duration_ms: int
    result: StepResult
    recovered: SagaError | None = None


@dataclass(frozen=True)
class StepSkipped:
    """A step that did not run, and why."""

    step_id: str
    agent: str
    capability: str
    reason: str


@dataclass(frozen=True)
class RunFinished:
    """Every step completed or was skipped: the pattern's outputs and the run's totals."""

    outputs: Mapping[str, Any]
    usage: Usage
    cost_micro_usd: int


RunEvent = StepBegan | Relayed | StepFinished | StepSkipped | RunFinished
Recorded = StepFinished | StepSkipped
"""How a step ended, as a moved run's log recorded it."""


@dataclass(frozen=True)
class _Ended:
    """A step task's last word to the scheduler."""

    step: Step
    finished: StepFinished | None = None
    error: SagaError | None = None


def as_saga_error(error: BaseException) -> SagaError:
    """`error` as a SagaError: an upstream status is kept whole (code, reason, domain)."""
    if isinstance(error, SagaError):
        return error
    if isinstance(error, grpc.aio.AioRpcError):
        return RemoteError.from_rpc_error(error, DOMAIN)
    log.error("step failed unexpectedly", exc_info=error)
    return Internal(f"step failed: {type(error).__name__}")


def with_step(error: SagaError, step_id: str, trace_id: str) -> SagaError:
    """`error` with `stepId` and `traceId` in its ErrorInfo metadata (kept if already set)."""
    extra = {"stepId": step_id, "traceId": trace_id} if trace_id else {"stepId": step_id}
    for key, value in extra.items():
        error.metadata.setdefault(key, value)
    if isinstance(error, RemoteError):
        for detail in error.status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                for key, value in extra.items():
                    if key not in info.metadata:
                        info.metadata[key] = value
                detail.Pack(info)
    return error


class Runner:
    """Runs patterns with the agents of `registry`, at most `max_parallel` steps of a run at
    once; `sleep` and `draw` are the retry waits' clock and randomness (tests choose them)."""

    def __init__(
        self,
        registry: CapabilityRegistry,
        max_parallel: int = 4,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self._registry = registry
        self._max_parallel = max_parallel
        self._sleep = sleep
        self._draw = draw

    async def run(
        self,
        pattern: Pattern,
        inputs: Mapping[str, Any],
        scope: RunScope,
        ctx: Mapping[str, str] | None = None,
        trace_id: str = "",
        session: Mapping[str, Any] | None = None,
        reuse: Mapping[str, Recorded] | None = None,
    ) -> AsyncGenerator[RunEvent, None]:
        """Run `pattern` for `scope` (see the module docstring); `session` is the `session`
        root (none: the run is in no session); `reuse` the recorded ends of the steps a
        moved run does not run again, by step id."""
        run = _Run(self, pattern, inputs, scope, ctx or {}, trace_id, session or {})
        run.reuse = dict(reuse or {})
        async for event in run.events():
            yield event


class _Run:
    """The state of one run: which steps finished, skipped or run, and their outputs."""

    def __init__(
        self,
        runner: Runner,
        pattern: Pattern,
        inputs: Mapping[str, Any],
        scope: RunScope,
        ctx: Mapping[str, str],
        trace_id: str,
        session: Mapping[str, Any],
    ) -> None:
        self.runner = runner
        self.pattern = pattern
        self.scope = scope
        self.trace_id = trace_id
        self.state: dict[str, Any] = {}
        self.values = {"inputs": inputs, "state": self.state, "ctx": dict(ctx), "session": session}
        self.outcome: dict[str, str] = {}  # step id -> "ran" | "skipped"
        self.queue: asyncio.Queue[StepBegan | Relayed | _Ended] = asyncio.Queue()
        # A cost limit is checked against what finished steps spent (StepCall.spent_micro_usd):
        # two steps at once could each spend all that is left, so a limited run goes one step
        # at a time and the limit holds.
        limited = scope.max_cost_micro_usd > 0
        self.slots = asyncio.Semaphore(1 if limited else runner._max_parallel)
        self.usage = Usage()
        self.cost = 0
        self.reuse: dict[str, Recorded] = {}

    def owner(self, step: Step) -> tuple[str, str]:
        agent, capability = self.runner._registry.owner(step.capability)
        return agent.name, capability.name

    def skip_reason(self, step: Step) -> str | None:
        """Why `step` does not run (its dependencies have all ended), or None."""
        if step.depends_on and all(self.outcome[d] == "skipped" for d in step.depends_on):
            return "every step it depends on was skipped: " + ", ".join(step.depends_on)
        if step.when is not None:
            try:
                holds = step.when.holds(self.values)
            except ExpressionError as error:
                raise with_step(
                    FailedPrecondition(
                        f"step {step.id}: when {step.when.source!r}: {error}",
                        reason="STEP_CONDITION_FAILED",
                    ),
                    step.id,
                    self.trace_id,
                ) from None
            if not holds:
                return f"when {step.when.source!r} is false"
        return None

    async def events(self) -> AsyncIterator[RunEvent]:
        pending = list(self.pattern.steps)
        running: dict[str, asyncio.Task[None]] = {}
        try:
            while pending or running:
                progressed = True
                while progressed:  # a skip can make further steps ready at once
                    progressed = False
                    for step in list(pending):
                        if not all(d in self.outcome for d in step.depends_on):
                            continue
                        pending.remove(step)
                        if step.id in self.reuse:
                            self.reused(step, self.reuse[step.id])
                            progressed = True
                            continue
                        reason = self.skip_reason(step)
                        if reason is not None:
                            self.outcome[step.id] = "skipped"
                            yield StepSkipped(step.id, *self.owner(step), reason)
                            progressed = True
                        else:
                            running[step.id] = asyncio.create_task(self.step(step))
                if not running:
                    continue
                item = await self.queue.get()
                if not isinstance(item, _Ended):
                    yield item
                    continue
                await running.pop(item.step.id)
                if item.error is not None:
                    raise item.error
                assert item.finished is not None
                result = item.finished.result
                self.state[item.step.key] = dict(result.output)
                self.outcome[item.step.id] = "ran"
                self.usage += result.usage
                self.cost += result.cost_micro_usd
                yield item.finished
        finally:
            for task in running.values():
                task.cancel()
            if running:
                await asyncio.gather(*running.values(), return_exceptions=True)
        outputs = {name: t.render(self.values) for name, t in self.pattern.outputs.items()}
        yield RunFinished(outputs, self.usage, self.cost)

    def reused(self, step: Step, recorded: Recorded) -> None:
        """`step` ended before the run moved, as `recorded`: its output and spend count."""
        if isinstance(recorded, StepSkipped):
            self.outcome[step.id] = "skipped"
            return
        self.state[step.key] = dict(recorded.result.output)
        self.outcome[step.id] = "ran"
        self.usage += recorded.result.usage
        self.cost += recorded.result.cost_micro_usd

    async def step(self, step: Step) -> None:
        """Run one step (a task); everything it reports goes through the queue."""
        try:
            async with self.slots:
                await self.queue.put(StepBegan(step.id, *self.owner(step)))
                finished = await self.attempts(step)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # reported to the scheduler, which ends the run
            await self.queue.put(
                _Ended(step, error=with_step(as_saga_error(error), step.id, self.trace_id))
            )
            return
        await self.queue.put(_Ended(step, finished=finished))

    async def attempts(self, step: Step) -> StepFinished:
        agent, capability = self.runner._registry.owner(step.capability)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            call = StepCall(
                run=self.scope,
                step_id=step.id,
                capability=step.capability,
                args=render_value(step.args, self.values),
                spent_micro_usd=self.cost,
            )
            relayed = False
            deadline = asyncio.timeout(step.timeout)
            try:
                result: StepResult | None = None
                async with deadline:
                    async for event in agent.run(call):
                        if isinstance(event, Relayed):
                            relayed = True
                            await self.queue.put(event)
                        else:
                            result = event
                if result is None:
                    raise Internal(f"step {step.id} ended without a result")
                recovered = None
                break
            except TimeoutError:
                if not deadline.expired():
                    raise  # not the step's timeout: the agent's own failure
                error: SagaError = DeadlineExceeded(
                    f"step {step.id} took longer than its timeout of {step.timeout:g} s",
                    reason="STEP_TIMEOUT",
                    metadata={"timeoutSeconds": f"{step.timeout:g}"},
                )
            except (SagaError, grpc.aio.AioRpcError) as failure:
                error = as_saga_error(failure)
            if not relayed and await self.wait_to_retry(step, attempt, error):
                continue
            if step.on_error != "continue":
                raise error
            result = StepResult(output=dict(step.default or {}))
            recovered = with_step(error, step.id, self.trace_id)
            break
        return StepFinished(
            step.id,
            agent.name,
            capability.name,
            int((time.monotonic() - started) * 1000),
            result,
            recovered,
        )

    async def wait_to_retry(self, step: Step, attempt: int, error: SagaError) -> bool:
        """Whether to try `step` again after `error` (having waited its backoff)."""
        policy = step.retry
        if policy is None or policy.exhausted(attempt) or error.code not in RETRYABLE:
            return False
        delay = policy.delay(attempt, error.retry_after, self.runner._draw)
        left = self.scope.time_left()
        if left is not None and delay >= left:
            return False
        await self.runner._sleep(delay)
        return True
