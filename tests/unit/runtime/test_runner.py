"""The DAG runner: independent steps run concurrently (bounded per run), each step's events
stay in order, `when` and skipped dependencies skip steps, and per-step timeout, retry,
on_error and `as` do what docs/patterns.md says. The agents here are small Agent
implementations (the protocol every agent implements), so no socket is needed."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import yaml

from services.common.errors import InvalidArgument, SagaError, Unavailable
from services.runtime.agents.step import Relayed, RunScope, StepCall, StepEvent, StepResult
from services.runtime.capabilities import Capability, CapabilityRegistry, FieldSpec
from services.runtime.patterns import Pattern, parse_pattern
from services.runtime.runner import (
    RunEvent,
    RunFinished,
    Runner,
    StepBegan,
    StepFinished,
    StepSkipped,
)

ECHO = Capability(
    name="test.echo",
    agent="test",
    description="Echo the text, after the behaviour the test scripts for the step.",
    args=(FieldSpec("text", "string"), FieldSpec("n", "number")),
    outputs=(FieldSpec("text", "string"), FieldSpec("n", "number")),
    retry_safe=True,
)
SCOPE = RunScope(
    execution_id="exe_" + "0" * 32,
    pattern_id="p",
    user_id="usr",
    session_id="",
    asof="2026-12-01",
    context_token="",
)

Behaviour = Callable[[StepCall, int], Any]


class ScriptedAgent:
    """Runs `test.echo`; `behaviour[step_id](call, attempt)` may await, raise, or return a
    list of texts to relay before the result."""

    name = "test"
    capabilities = (ECHO,)

    def __init__(self, **behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.attempts: dict[str, int] = {}
        self.open = 0
        self.most_open = 0

    async def run(self, call: StepCall) -> AsyncIterator[StepEvent]:
        attempt = self.attempts[call.step_id] = self.attempts.get(call.step_id, 0) + 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            relay: Any = None
            if (act := self.behaviour.get(call.step_id)) is not None:
                relay = act(call, attempt)
                if asyncio.iscoroutine(relay):
                    relay = await relay
            for text in relay or ():
                yield Relayed(call.step_id, 3, text.encode())
            yield StepResult(output={"text": call.args.get("text") or call.step_id, "n": 1})
        finally:
            self.open -= 1


def pattern(text: str) -> Pattern:
    registry = CapabilityRegistry()
    registry.register(ScriptedAgent())
    return parse_pattern(text.encode(), "p.yaml", "user/p.yaml", registry.capabilities())


def document(steps: list[dict[str, Any]], outputs: dict[str, str] | None = None) -> str:
    for step in steps:
        step.setdefault("capability", "test.echo")
    return yaml.safe_dump(
        {
            "id": "p",
            "description": "A test pattern.",
            "inputs": {"flag": {"type": "boolean"}},
            "steps": steps,
            "outputs": outputs or {},
        }
    )


async def run(
    agent: ScriptedAgent,
    text: str,
    max_parallel: int = 4,
    scope: RunScope = SCOPE,
    **inputs: Any,
) -> tuple[list[RunEvent], list[float]]:
    registry = CapabilityRegistry()
    registry.register(agent)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    runner = Runner(registry, max_parallel, sleep=sleep, draw=lambda: 1.0)
    events = [
        e
        async for e in runner.run(
            pattern(text), inputs, scope, {"asof": scope.asof}, trace_id="t" * 32
        )
    ]
    return events, waits


def kinds(events: list[RunEvent]) -> list[tuple[str, str]]:
    return [(type(e).__name__, getattr(e, "step_id", "")) for e in events]


def barrier(count: int) -> tuple[Behaviour, asyncio.Event]:
    """A behaviour that holds each step until `count` of them are open at once."""
    arrived = 0
    everyone = asyncio.Event()

    async def hold(call: StepCall, attempt: int) -> None:
        nonlocal arrived
        arrived += 1
        if arrived >= count:
            everyone.set()
        await asyncio.wait_for(everyone.wait(), 5)

    return hold, everyone


async def test_independent_steps_run_concurrently_and_the_join_waits_for_both() -> None:
    hold, _ = barrier(2)
    agent = ScriptedAgent(left=hold, right=hold)
    events, _ = await run(
        agent,
        document(
            [
                {"id": "left", "args": {"text": "L"}},
                {"id": "right", "args": {"text": "R"}},
                {"id": "join", "args": {"text": "{{state.left.text}}+{{state.right.text}}"}},
            ],
            {"joined": "{{state.join.text}}"},
        ),
    )
    # Each of left and right only finishes once both are open: they ran at the same time.
    assert agent.most_open == 2
    assert kinds(events)[:2] == [("StepBegan", "left"), ("StepBegan", "right")]
    assert kinds(events)[-3:] == [
        ("StepBegan", "join"),
        ("StepFinished", "join"),
        ("RunFinished", ""),
    ]
    finished = events[-1]
    assert isinstance(finished, RunFinished)
    assert finished.outputs == {"joined": "L+R"}


async def test_parallelism_is_bounded_per_run() -> None:
    agent = ScriptedAgent()
    steps = [{"id": f"s{i}"} for i in range(6)]
    await run(agent, document(steps), max_parallel=1)
    assert agent.most_open == 1
    hold, _ = barrier(3)
    agent = ScriptedAgent(**{f"s{i}": hold for i in range(3)})
    await run(agent, document(steps[:3]), max_parallel=3)
    assert agent.most_open == 3


async def test_a_run_with_a_cost_limit_runs_one_step_at_a_time_so_the_limit_holds() -> None:
    # Each step is told what the finished steps spent; two at once could each spend the rest.
    async def busy(call: StepCall, attempt: int) -> None:
        for _ in range(5):  # give the others every chance to start meanwhile
            await asyncio.sleep(0)

    steps = [{"id": f"s{i}"} for i in range(4)]
    agent = ScriptedAgent(**{f"s{i}": busy for i in range(4)})
    await run(agent, document(steps), scope=dataclasses.replace(SCOPE, max_cost_micro_usd=10))
    assert agent.most_open == 1
    # Control: without a limit they overlap.
    hold, _ = barrier(4)
    agent = ScriptedAgent(**{f"s{i}": hold for i in range(4)})
    await run(agent, document(steps))
    assert agent.most_open == 4


async def test_each_steps_events_stay_in_order_while_steps_interleave() -> None:
    hold, _ = barrier(2)

    async def chatty(call: StepCall, attempt: int) -> list[str]:
        await hold(call, attempt)
        return [f"{call.step_id}{i}" for i in range(5)]

    events, _ = await run(ScriptedAgent(a=chatty, b=chatty), document([{"id": "a"}, {"id": "b"}]))
    for step in ("a", "b"):
        mine = [e for e in events if getattr(e, "step_id", None) == step]
        assert isinstance(mine[0], StepBegan)
        assert [e.payload for e in mine[1:-1] if isinstance(e, Relayed)] == [
            f"{step}{i}".encode() for i in range(5)
        ]
        assert isinstance(mine[-1], StepFinished)


async def test_when_skips_a_step_and_steps_depending_only_on_skipped_steps_skip_too() -> None:
    agent = ScriptedAgent()
    events, _ = await run(
        agent,
        document(
            [
                {"id": "first"},
                {"id": "maybe", "when": "inputs.flag and state.first.n == 1"},
                {"id": "after", "depends_on": ["maybe"]},
                {
                    "id": "mixed",
                    "args": {"text": "[{{state.maybe.text}}]"},
                    "depends_on": ["first"],
                },
            ],
            {"maybe": "{{state.maybe.text}}", "mixed": "{{state.mixed.text}}"},
        ),
        flag=False,
    )
    skipped = {e.step_id: e.reason for e in events if isinstance(e, StepSkipped)}
    assert skipped == {
        "maybe": "when 'inputs.flag and state.first.n == 1' is false",
        "after": "every step it depends on was skipped: maybe",
    }
    assert set(agent.attempts) == {"first", "mixed"}
    finished = events[-1]
    assert isinstance(finished, RunFinished)
    # A skipped step's output is absent: None alone, empty inside text.
    assert finished.outputs == {"maybe": None, "mixed": "[]"}
    # Positive control: with the flag the step runs, and so does the one after it.
    events, _ = await run(
        ScriptedAgent(),
        document([{"id": "first"}, {"id": "maybe", "when": "inputs.flag"}]),
        flag=True,
    )
    assert not [e for e in events if isinstance(e, StepSkipped)]


async def test_a_when_that_cannot_be_evaluated_fails_the_run_naming_the_step() -> None:
    with pytest.raises(SagaError) as caught:
        await run(ScriptedAgent(), document([{"id": "a", "when": "inputs.flag > 3"}]), flag=True)
    assert caught.value.reason == "STEP_CONDITION_FAILED"
    assert caught.value.metadata["stepId"] == "a"
    assert "cannot order a boolean and a number" in caught.value.message


async def test_as_stores_the_output_under_its_name() -> None:
    events, _ = await run(
        ScriptedAgent(),
        document(
            [
                {"id": "a", "as": "facts", "args": {"text": "F"}},
                {"id": "b", "args": {"text": "{{state.facts.text}}!"}},
            ],
            {"out": "{{state.b.text}}"},
        ),
    )
    assert isinstance(events[-1], RunFinished)
    assert events[-1].outputs == {"out": "F!"}


async def test_a_failing_step_ends_the_run_with_step_and_trace_ids_and_cancels_the_others() -> None:
    cancelled = asyncio.Event()

    async def forever(call: StepCall, attempt: int) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def broken(call: StepCall, attempt: int) -> None:
        await asyncio.sleep(0)
        raise InvalidArgument("bad prompt", reason="PROMPT_EMPTY")

    with pytest.raises(SagaError) as caught:
        await run(
            ScriptedAgent(slow=forever, bad=broken), document([{"id": "slow"}, {"id": "bad"}])
        )
    assert (caught.value.reason, caught.value.metadata) == (
        "PROMPT_EMPTY",
        {"stepId": "bad", "traceId": "t" * 32},
    )
    assert cancelled.is_set()


async def test_retry_tries_again_after_a_transient_failure_with_backoff() -> None:
    def flaky(call: StepCall, attempt: int) -> None:
        if attempt < 3:
            raise Unavailable("try later", reason="PROVIDER_UNAVAILABLE")

    agent = ScriptedAgent(a=flaky)
    events, waits = await run(
        agent,
        document([{"id": "a", "retry": {"attempts": 3, "initial_backoff": 0.5, "max_backoff": 4}}]),
    )
    assert agent.attempts["a"] == 3
    assert waits == [0.5, 1.0]  # draw 1.0: the ceiling of each wait
    assert kinds(events) == [("StepBegan", "a"), ("StepFinished", "a"), ("RunFinished", "")]
    # Exhausted: the last failure ends the run.
    agent = ScriptedAgent(a=flaky)
    with pytest.raises(SagaError, match="try later"):
        await run(agent, document([{"id": "a", "retry": 2}]))
    assert agent.attempts["a"] == 2


async def test_retry_never_repeats_a_step_that_already_streamed_or_a_permanent_failure() -> None:
    class Streamed(ScriptedAgent):
        async def run(self, call: StepCall) -> AsyncIterator[StepEvent]:
            self.attempts[call.step_id] = self.attempts.get(call.step_id, 0) + 1
            yield Relayed(call.step_id, 3, b"partial")
            raise Unavailable("stream cut", reason="PROVIDER_UNAVAILABLE")

    agent = Streamed()
    with pytest.raises(SagaError, match="stream cut"):
        await run(agent, document([{"id": "a", "retry": 3}]))
    assert agent.attempts["a"] == 1

    def invalid(call: StepCall, attempt: int) -> None:
        raise InvalidArgument("no", reason="PROMPT_EMPTY")

    agent = ScriptedAgent(a=invalid)
    with pytest.raises(SagaError, match="no"):
        await run(agent, document([{"id": "a", "retry": 3}]))
    assert agent.attempts["a"] == 1


async def test_a_step_longer_than_its_timeout_fails_with_step_timeout() -> None:
    async def hang(call: StepCall, attempt: int) -> None:
        await asyncio.Event().wait()

    with pytest.raises(SagaError) as caught:
        await run(ScriptedAgent(a=hang), document([{"id": "a", "timeout": 0.01}]))
    assert (caught.value.code.name, caught.value.reason) == ("DEADLINE_EXCEEDED", "STEP_TIMEOUT")
    assert caught.value.metadata["stepId"] == "a"


async def test_on_error_continue_gives_the_default_and_reports_the_failure() -> None:
    def broken(call: StepCall, attempt: int) -> None:
        raise Unavailable("down", reason="PROVIDER_UNAVAILABLE")

    events, _ = await run(
        ScriptedAgent(a=broken),
        document(
            [
                {"id": "a", "on_error": "continue", "default": {"text": "n/a"}},
                {"id": "b", "args": {"text": "got {{state.a.text}}"}},
            ],
            {"out": "{{state.b.text}}"},
        ),
    )
    [recovered] = [e for e in events if isinstance(e, StepFinished) and e.step_id == "a"]
    assert recovered.result.output == {"text": "n/a"}
    assert recovered.recovered is not None
    assert recovered.recovered.reason == "PROVIDER_UNAVAILABLE"
    assert isinstance(events[-1], RunFinished)
    assert events[-1].outputs == {"out": "got n/a"}
