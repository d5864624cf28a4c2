"""The `llm` agent's capabilities against a router played by a real gRPC server in this
process that answers chosen texts: summarize, classify (one of the labels; a misfit sent back
once, then LLM_REPLY_INVALID), extract (a JSON object checked against the step's schema,
likewise) and the per-step response mode."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
import yaml

from saga.execution.v1 import common_pb2, reason_events_pb2
from saga.router.v1 import router_pb2, router_pb2_grpc
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.server import Registration
from services.runtime.agents.llm import CAPABILITIES, LlmAgent, parse_label, parse_object
from services.runtime.agents.step import Relayed, RunScope, StepCall, StepEvent, StepResult
from services.runtime.capabilities import json_schema
from services.runtime.patterns import PatternError, parse_pattern
from tests.inprocess import serve


class ScriptedRouter(router_pb2_grpc.RouterServiceServicer):
    """Answers each Reason with the next of `replies`, streamed word by word or whole as the
    request's response mode says; keeps the requests."""

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.requests: list[router_pb2.ReasonRequest] = []

    async def Reason(  # type: ignore[override]
        self, request: router_pb2.ReasonRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.ReasonResponse]:
        self.requests.append(request)
        reply = self.replies.pop(0)
        complete = request.response_mode == common_pb2.RESPONSE_MODE_COMPLETE
        if not complete:
            for word in reply.split(" "):
                yield router_pb2.ReasonResponse(delta=reason_events_pb2.Delta(text=word + " "))
        yield router_pb2.ReasonResponse(
            final=reason_events_pb2.Final(
                text=reply if complete else "", provider="p", model="m", cost_micro_usd=7
            )
        )


@asynccontextmanager
async def agent_with(router: ScriptedRouter) -> AsyncIterator[LlmAgent]:
    async with serve("router", Registration.of(router), caller="runtime") as channel:
        yield LlmAgent(channel)


def call(capability: str, **args: Any) -> StepCall:
    run = RunScope("exe_1", "p", "usr_a", "", "2026-12-03", context_token="")
    return StepCall(run, "s", capability, args)


async def run_step(router: ScriptedRouter, capability: str, **args: Any) -> list[StepEvent]:
    async with agent_with(router) as agent:
        return [event async for event in agent.run(call(capability, **args))]


def result_of(events: list[StepEvent]) -> StepResult:
    assert isinstance(events[-1], StepResult)
    return events[-1]


LABELS = ["positive", "negative", "neutral"]
SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


async def test_summarize_asks_for_the_word_limit_and_streams_its_summary() -> None:
    router = ScriptedRouter("short and sweet")
    events = await run_step(router, "llm.summarize", text="a long text", max_words=12)
    assert result_of(events).output == {"summary": "short and sweet "}
    assert sum(isinstance(e, Relayed) for e in events) == 3
    [request] = router.requests
    assert request.response_mode == common_pb2.RESPONSE_MODE_STREAMING
    assert "at most 12 words" in request.messages[0].content
    assert "a long text" in request.messages[0].content


async def test_mode_complete_relays_no_tokens() -> None:
    router = ScriptedRouter("all at once")
    events = await run_step(router, "llm.complete", prompt="hi", mode="complete")
    assert events == [result_of(events)]
    assert result_of(events).output == {"text": "all at once", "finish_reason": "stop"}
    assert router.requests[0].response_mode == common_pb2.RESPONSE_MODE_COMPLETE


async def test_classify_answers_one_of_the_labels() -> None:
    router = ScriptedRouter(' "Negative". ')
    result = result_of(await run_step(router, "llm.classify", text="awful", labels=LABELS))
    assert result.output == {"label": "negative"}
    assert router.requests[0].response_mode == common_pb2.RESPONSE_MODE_COMPLETE
    assert "- neutral" in router.requests[0].messages[0].content


async def test_a_classify_misfit_is_sent_back_once_with_the_error() -> None:
    router = ScriptedRouter("bad", "negative")
    result = result_of(await run_step(router, "llm.classify", text="awful", labels=LABELS))
    assert result.output == {"label": "negative"}
    assert result.cost_micro_usd == 14  # both calls
    retry = router.requests[1].messages
    assert [m.role for m in retry] == [
        router_pb2.ROLE_USER,
        router_pb2.ROLE_ASSISTANT,
        router_pb2.ROLE_USER,
    ]
    assert "'bad' is not one of the labels: positive, negative, neutral" in retry[2].content


async def test_a_second_classify_misfit_fails_the_step_with_llm_reply_invalid() -> None:
    router = ScriptedRouter("bad", "worse")
    with pytest.raises(FailedPrecondition) as caught:
        await run_step(router, "llm.classify", text="awful", labels=LABELS)
    assert caught.value.reason == "LLM_REPLY_INVALID"
    assert caught.value.metadata["capability"] == "llm.classify"
    assert "'worse' is not one of the labels" in caught.value.metadata["problem"]
    assert len(router.requests) == 2


async def test_extract_answers_an_object_that_matches_the_schema() -> None:
    router = ScriptedRouter('```json\n{"name": "Ada", "age": 36}\n```')
    result = result_of(await run_step(router, "llm.extract", text="Ada, 36", schema=SCHEMA))
    assert result.output == {"data": {"name": "Ada", "age": 36}}
    assert '"required": ["name", "age"]' in router.requests[0].messages[0].content


async def test_an_extract_reply_that_does_not_parse_or_validate_is_retried_then_fails() -> None:
    router = ScriptedRouter("not json", '{"name": "Ada"}')
    with pytest.raises(FailedPrecondition) as caught:
        await run_step(router, "llm.extract", text="Ada, 36", schema=SCHEMA)
    assert caught.value.reason == "LLM_REPLY_INVALID"
    assert "$.age: required" in caught.value.metadata["problem"]
    assert "the answer is not JSON" in router.requests[1].messages[2].content
    # Control: a good second reply is the step's output.
    router = ScriptedRouter("not json", '{"name": "Ada", "age": 36}')
    result = result_of(await run_step(router, "llm.extract", text="Ada, 36", schema=SCHEMA))
    assert result.output == {"data": {"name": "Ada", "age": 36}}


async def test_bad_args_are_refused_naming_the_field_before_any_call() -> None:
    router = ScriptedRouter()
    for capability, args, field in [
        ("llm.classify", {"text": "t", "labels": []}, "labels"),
        ("llm.classify", {"text": "t", "labels": ["a", "A "]}, "labels"),
        ("llm.extract", {"text": "t", "schema": {"type": "object", "oneOf": []}}, "schema"),
        ("llm.extract", {"text": "t", "schema": {"type": "array"}}, "schema"),
        ("llm.complete", {"prompt": "t", "mode": "fast"}, "mode"),
        ("llm.summarize", {"text": "t", "max_words": 0}, "max_words"),
    ]:
        with pytest.raises(InvalidArgument) as caught:
            await run_step(router, capability, **args)
        assert caught.value.reason == "STEP_ARGS_INVALID"
        assert caught.value.field_violations[0].field == f"steps.s.args.{field}"
    assert router.requests == []


def test_replies_are_parsed_leniently_but_exactly() -> None:
    assert parse_label("**Positive**", LABELS) == "positive"
    assert parse_object('{"name": "x", "age": 1.0}', SCHEMA) == {"name": "x", "age": 1.0}


def pattern_with(capability: str, **args: Any) -> bytes:
    step = {"id": "s", "capability": capability, "args": {"text": "{{inputs.text}}", **args}}
    return yaml.safe_dump(
        {
            "id": "p",
            "description": "d",
            "inputs": {"text": {"type": "string", "required": True}},
            "steps": [step],
            "outputs": {"out": "{{state.s}}"},
        }
    ).encode()


@pytest.mark.parametrize(
    ("capability", "args", "message"),
    [
        ("llm.summarize", {"mode": "fast"}, "mode: 'fast' is not one of streaming, complete"),
        ("llm.classify", {"labels": []}, "labels: at least one label"),
        ("llm.extract", {"schema": {"type": "object", "anyOf": []}}, "'anyOf' is not supported"),
    ],
)
def test_the_pattern_loader_checks_literal_args_against_the_capability(
    capability: str, args: dict[str, Any], message: str
) -> None:
    with pytest.raises(PatternError) as error:
        parse_pattern(pattern_with(capability, **args), "p.yaml", "user/p.yaml", CAPABILITIES)
    assert error.value.field == f"steps.s.args.{next(iter(args))}"
    assert message in error.value.message
    # Control: good literals load.
    good = {"mode": "complete", "labels": ["a", "b"], "schema": SCHEMA}
    ok = {name: good[name] for name in args}
    parse_pattern(pattern_with(capability, **ok), "p.yaml", "user/p.yaml", CAPABILITIES)


def test_the_capabilities_schemas_name_the_modes_and_required_args() -> None:
    schema = json_schema(CAPABILITIES["llm.classify"].args)
    assert schema["properties"]["mode"]["enum"] == ["streaming", "complete"]
    assert schema["required"] == ["text", "labels"]
    assert json_schema(CAPABILITIES["llm.extract"].outputs)["required"] == ["data"]


class EmbeddingRouter(router_pb2_grpc.RouterServiceServicer):
    """Answers Embed with vectors [i, len(text)]; keeps the requests."""

    def __init__(self) -> None:
        self.requests: list[router_pb2.EmbedRequest] = []

    async def Embed(  # type: ignore[override]
        self, request: router_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.EmbedResponse:
        self.requests.append(request)
        return router_pb2.EmbedResponse(
            embeddings=[
                router_pb2.Embedding(index=i, values=[i, len(t)])
                for i, t in enumerate(request.inputs)
            ],
            provider="emb",
            model="emb-model",
            cost_micro_usd=3,
        )


async def test_embed_calls_the_routers_embed_with_the_runs_accounting() -> None:
    router = EmbeddingRouter()
    async with serve("router", Registration.of(router), caller="runtime") as channel:
        agent = LlmAgent(channel)
        events = [e async for e in agent.run(call("llm.embed", texts=["ab", "cde"], dimensions=2))]
    result = result_of(events)
    assert result.output == {"vectors": [[0.0, 2.0], [1.0, 3.0]], "model": "emb-model"}
    assert (result.provider, result.cost_micro_usd) == ("emb", 3)
    [sent] = router.requests
    assert (list(sent.inputs), sent.dimensions) == (["ab", "cde"], 2)
    assert (sent.accounting.execution_id, sent.accounting.step_id) == ("exe_1", "s")


async def test_embed_texts_must_be_strings() -> None:
    router = EmbeddingRouter()
    with pytest.raises(InvalidArgument) as caught:
        await run_step(router, "llm.embed", texts=["ok", 3])  # type: ignore[arg-type]
    assert caught.value.reason == "STEP_ARGS_INVALID"
    assert not router.requests
