"""The `llm` agent's capabilities over real processes (auth, optimizer, router with the `sim`
provider, runtime): a user pattern classifies and summarises in `complete` mode, so no token
reaches the caller and the outputs arrive with Completed; a classify whose replies are never
one of its labels fails the run FAILED_PRECONDITION LLM_REPLY_INVALID naming the step. The
sim answers one word of its vocabulary, so labels that are the whole vocabulary always fit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from saga.runtime.v1 import runtime_pb2, runtime_pb2_grpc
from services.common.status import describe
from services.router.engines.sim import VOCABULARY
from tests.harness import Stack, stack_for
from tests.integration.test_runtime_run_pattern import context_for, new_execution_id

CONFIG = """
[[providers]]
name = "sim-one"
kind = "sim"
model = "sim-small"
input_micro_usd_per_mtok = 150000
output_micro_usd_per_mtok = 600000

[providers.sim]
tokens = 1
token_interval_ms = 1
"""
TRIAGE = """
id: triage
description: Classify a text and summarise it.
inputs:
  text: {type: string, required: true}
  labels: {type: array, required: true}
steps:
  - id: kind
    capability: llm.classify
    args: {text: "{{inputs.text}}", labels: "{{inputs.labels}}"}
  - id: gist
    capability: llm.summarize
    args: {text: "{{inputs.text}}", max_words: 5, mode: complete}
outputs:
  kind: "{{state.kind.label}}"
  gist: "{{state.gist.summary}}"
"""


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    data = tmp_path_factory.mktemp("llmcaps")
    patterns = data / "patterns"
    patterns.mkdir()
    (patterns / "triage.yaml").write_text(TRIAGE)
    async with stack_for(
        data,
        ["auth", "optimizer", "router", "runtime"],
        config=CONFIG,
        SAGA_RUNTIME__PATTERNS_DIR=str(patterns),
    ) as s:
        yield s


async def triage(stack: Stack, labels: list[str]) -> list[runtime_pb2.RunPatternResponse]:
    execution_id = new_execution_id()
    inputs = struct_pb2.Struct()
    inputs.update({"text": "The river ran past the stone.", "labels": labels})
    request = runtime_pb2.RunPatternRequest(
        pattern_id="triage", inputs=inputs, execution_id=execution_id
    )
    async with stack.channel_as("gateway", "runtime") as ch:
        call = runtime_pb2_grpc.RuntimeServiceStub(ch).RunPattern(
            request, metadata=context_for(stack, execution_id), timeout=30
        )
        return [event async for event in call]


async def test_classify_and_summarize_in_complete_mode_send_no_tokens(stack: Stack) -> None:
    events = await triage(stack, list(VOCABULARY))
    kinds = [e.WhichOneof("event") for e in events]
    assert "token" not in kinds
    assert kinds[-1] == "completed"
    outputs: dict[str, Any] = json_format.MessageToDict(events[-1].completed.outputs)
    assert outputs["kind"] in VOCABULARY
    assert outputs["gist"].strip() in VOCABULARY
    assert events[-1].completed.usage.output_tokens == 2


async def test_a_classify_that_never_fits_fails_the_run_with_llm_reply_invalid(
    stack: Stack,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await triage(stack, ["not-a-sim-word"])
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = describe(error.value)
    assert (details.reason, details.domain) == ("LLM_REPLY_INVALID", "runtime.saga")
    assert details.metadata["stepId"] == "kind"
    assert "is not one of the labels: not-a-sim-word" in details.metadata["problem"]
