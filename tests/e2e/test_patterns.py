"""Patterns through the gateway, with all six services as real processes and the LLM played
by a fake HTTP provider: the shipped `debate` sample runs its two independent branches at
the same time (the fake holds each branch's request until both are open, so the run only
completes if they were concurrent) and joins them; a step whose `when` is false is reported
skipped, and so is the step that depends only on it; ListPatterns and GetPattern answer
callers with scope `execute`, with each pattern's inputs schema and the refused files; a bad
pattern file does not stop the runtime."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from saga.gateway.v1 import (
    execution_pb2,
    execution_pb2_grpc,
    patterns_pb2,
    patterns_pb2_grpc,
)
from services.common.status import describe
from tests.e2e.test_cli import ok, saga_cli
from tests.e2e.test_execute import bearer, create_key
from tests.e2e.test_resilience_gateway import fakes, provider_toml
from tests.fakes.providers import FakeProviders, Script, answer_text
from tests.harness import Stack, stack_for

TOKENS = 3
BRANCH = """
id: branch
description: Answer, and explain only when asked to.
inputs:
  prompt: {type: string, required: true}
  explain: {type: boolean}
steps:
  - id: answer
    capability: llm.complete
    args: {prompt: "{{inputs.prompt}}"}
  - id: explanation
    capability: llm.complete
    when: inputs.explain == true
    args: {prompt: "Explain: {{state.answer.text}}"}
  - id: polish
    capability: llm.complete
    args: {prompt: "Polish: {{state.explanation.text}}"}
outputs:
  answer: "{{state.answer.text}}"
  explanation: "{{state.explanation.text}}"
"""
BAD = BRANCH.replace("id: branch", "id: bad").replace("inputs.explain == true", "inputs.explain ==")


@pytest.fixture(scope="module")
async def setup(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Stack, FakeProviders]]:
    path = tmp_path_factory.mktemp("patterns")
    patterns = path / "user-patterns"
    patterns.mkdir()
    (patterns / "branch.yaml").write_text(BRANCH)
    (patterns / "bad.yaml").write_text(BAD)
    async with fakes(1) as (fake,):
        fake.defaults["ollama"] = Script(tokens=TOKENS)
        config = provider_toml("fake", fake, "ollama", credential="none", max_retries=0)
        async with stack_for(
            path, config=config, SAGA_RUNTIME__PATTERNS_DIR=str(patterns)
        ) as stack:
            yield stack, fake


async def execute(stack: Stack, pattern: str, **inputs: Any) -> list[execution_pb2.ExecuteResponse]:
    values = struct_pb2.Struct()
    values.update(inputs)
    async with stack.gateway_channel() as ch:
        return [
            event
            async for event in execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
                execution_pb2.ExecuteRequest(pattern_id=pattern, inputs=values),
                metadata=bearer(stack.admin_key()),
                timeout=60,
            )
        ]


def step_of(event: execution_pb2.ExecuteResponse) -> str:
    kind = event.WhichOneof("event")
    return getattr(getattr(event, kind), "step_id", "") if kind else ""


async def test_independent_steps_run_concurrently_and_join(
    setup: tuple[Stack, FakeProviders],
) -> None:
    stack, fake = setup
    fake.seen.clear()
    # Each branch's request is held until two are open at once; the join's is answered as is.
    fake.script(
        "ollama", Script(tokens=TOKENS, hold_until_open=2), Script(tokens=TOKENS, hold_until_open=2)
    )
    events = await execute(stack, "debate", question="Tabs or spaces?")
    assert events[-1].WhichOneof("event") == "completed", events[-1]
    assert [s.status for s in fake.requests()] == [200, 200, 200]
    prompts = [s.body["messages"][-1]["content"] for s in fake.requests()]
    assert sorted(p.split(":")[0] for p in prompts[:2]) == [
        "Make the strongest short case AGAINST",
        "Make the strongest short case FOR",
    ]
    # The join read both branches' outputs.
    assert prompts[2].count(answer_text(TOKENS).strip()) == 2
    # Both branches started before either finished; each step's own events stay in order.
    kinds = [(e.WhichOneof("event"), step_of(e)) for e in events]
    started = [s for k, s in kinds if k == "step_started"]
    assert started[:2] == ["case_for", "case_against"] or started[:2] == [
        "case_against",
        "case_for",
    ]
    first_done = next(i for i, (k, _) in enumerate(kinds) if k == "step_completed")
    assert {s for k, s in kinds[:first_done] if k == "step_started"} == {"case_for", "case_against"}
    for step in ("case_for", "case_against", "verdict"):
        mine = [k for k, s in kinds if s == step]
        assert (mine[0], mine[-1]) == ("step_started", "step_completed"), mine
        assert set(mine[1:-1]) <= {"token"}
    outputs = json_format.MessageToDict(events[-1].completed.outputs)
    assert outputs["verdict"] == answer_text(TOKENS)


async def test_a_false_when_skips_the_step_and_the_step_that_depends_only_on_it(
    setup: tuple[Stack, FakeProviders],
) -> None:
    stack, fake = setup
    fake.seen.clear()
    events = await execute(stack, "branch", prompt="2+2?", explain=False)
    skipped = {
        e.step_skipped.step_id: e.step_skipped.reason for e in events if e.HasField("step_skipped")
    }
    assert skipped == {
        "explanation": "when 'inputs.explain == true' is false",
        "polish": "every step it depends on was skipped: explanation",
    }
    assert len(fake.requests()) == 1
    outputs = json_format.MessageToDict(events[-1].completed.outputs)
    assert outputs == {"answer": answer_text(TOKENS), "explanation": None}
    # Control: asked to explain, all three steps run.
    events = await execute(stack, "branch", prompt="2+2?", explain=True)
    assert not [e for e in events if e.HasField("step_skipped")]
    assert len(fake.requests()) == 4


async def test_patterns_are_listed_with_their_inputs_and_the_refused_files(
    setup: tuple[Stack, FakeProviders],
) -> None:
    stack, _ = setup
    key, _ = await create_key(stack, ["execute"])
    async with stack.gateway_channel() as ch:
        stub = patterns_pb2_grpc.PatternServiceStub(ch)
        listed = await stub.ListPatterns(
            patterns_pb2.ListPatternsRequest(), metadata=bearer(key), timeout=10
        )
        got = await stub.GetPattern(
            patterns_pb2.GetPatternRequest(pattern_id="debate"), metadata=bearer(key), timeout=10
        )
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetPattern(
                patterns_pb2.GetPatternRequest(pattern_id="nope"), metadata=bearer(key), timeout=10
            )
        usage_only, _ = await create_key(stack, ["usage:read"])
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.ListPatterns(
                patterns_pb2.ListPatternsRequest(), metadata=bearer(usage_only), timeout=10
            )
    ids = [p.pattern_id for p in listed.patterns]
    assert {"chat", "debate", "branch"} <= set(ids)
    assert "bad" not in ids
    assert [(p.source, p.field) for p in listed.problems] == [
        ("user/bad.yaml", "steps.explanation.when")
    ]
    assert "expected a value" in listed.problems[0].message
    schema = json_format.MessageToDict(got.pattern.input_schema)
    assert schema["required"] == ["question"]
    assert schema["properties"]["question"]["type"] == "string"
    verdict = {s.step_id: s for s in got.pattern.steps}["verdict"]
    assert list(verdict.depends_on) == ["case_for", "case_against"]
    assert describe(missing.value).reason == "PATTERN_NOT_FOUND"
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_cli_lists_and_shows_patterns(setup: tuple[Stack, FakeProviders]) -> None:
    stack, _ = setup
    listed = await asyncio.to_thread(saga_cli, stack, "patterns", "list")
    out = ok(listed)
    assert re.search(r"^debate\s+question\s+no\s+Argue both sides", out, re.M), out
    assert re.search(r"^branch\s+prompt, explain\?\s+no", out, re.M), out
    assert "user/bad.yaml: steps.explanation.when: expected a value" in listed.stderr
    shown = ok(await asyncio.to_thread(saga_cli, stack, "patterns", "show", "debate"))
    assert re.search(r"^question\s+string\s+yes", shown, re.M), shown
    assert re.search(r"^verdict\s+llm\.complete\s+case_for, case_against\s+-\s+-", shown, re.M)
    assert re.search(r"^case_for\s+llm\.complete\s+-\s+-\s+timeout 120 s, 2 tries", shown, re.M)
    as_json = json.loads(
        ok(await asyncio.to_thread(saga_cli, stack, "patterns", "show", "branch", "--json"))
    )
    assert as_json["pattern"]["steps"][1]["when"] == "inputs.explain == true"
    missing = await asyncio.to_thread(saga_cli, stack, "patterns", "show", "nope")
    assert missing.returncode == 1
    assert "NOT_FOUND PATTERN_NOT_FOUND (runtime.saga)" in missing.stderr


async def test_an_upstream_failure_keeps_its_reason_and_names_the_step_and_trace(
    setup: tuple[Stack, FakeProviders],
) -> None:
    stack, fake = setup
    fake.script("ollama", Script(fail="bad_request"))
    events: list[execution_pb2.ExecuteResponse] = []

    async def run() -> None:
        async for event in execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
            execution_pb2.ExecuteRequest(pattern_id="branch", inputs=values),
            metadata=bearer(stack.admin_key()),
            timeout=60,
        ):
            events.append(event)

    values = struct_pb2.Struct()
    values.update({"prompt": "hi"})
    async with stack.gateway_channel() as ch:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await run()
    described = describe(caught.value)
    assert described.domain == "router.saga", described
    assert described.metadata["stepId"] == "answer"
    assert described.metadata["traceId"] == events[0].accepted.trace_id
