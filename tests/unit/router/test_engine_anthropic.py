"""The `anthropic` engine: the Messages request it sends (headers, top-level system), and the
corners of its event stream (ping, cache usage, stop reasons, error events by type, a stream
that ends without message_stop)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.router.engines.anthropic import AnthropicEngine
from services.router.engines.base import (
    ChatMessage,
    EngineEvent,
    EngineRequest,
    ErrorKind,
    Finish,
    FinishReason,
    ProviderError,
    Sampling,
    TextDelta,
)
from tests.fakes.providers import FakeProviders, Script
from tests.unit.router.conftest import parse_lines


def request(stream: bool = True, **fields: Any) -> EngineRequest:
    return EngineRequest(
        messages=(ChatMessage("system", "answer in French"), ChatMessage("user", "hello")),
        system_prompt="be brief",
        max_tokens=64,
        stream=stream,
        **fields,
    )


def event(kind: str, **fields: Any) -> list[str]:
    return [f"event: {kind}", f"data: {json.dumps({'type': kind, **fields})}", ""]


def start(**usage: int) -> list[str]:
    return event("message_start", message={"id": "m", "usage": usage})


def text(value: str) -> list[str]:
    return event("content_block_delta", index=0, delta={"type": "text_delta", "text": value})


def stop(reason: str, output: int) -> list[str]:
    return event("message_delta", delta={"stop_reason": reason}, usage={"output_tokens": output})


async def parse(*items: str) -> list[EngineEvent]:
    engine = AnthropicEngine(FakeProviders().provider("anthropic"))
    return await parse_lines(engine, request(), *items)


async def test_the_request_carries_key_version_and_a_top_level_system(
    fake: FakeProviders,
) -> None:
    engine = fake.engine("anthropic")
    _ = [e async for e in engine.stream(request(temperature=1.5, stop=("END",)))]
    seen = fake.requests("anthropic")[-1]
    assert seen.headers["x-api-key"] == fake.api_key
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in seen.headers
    assert seen.body == {
        "model": "anthropic-model",
        "max_tokens": 64,
        "system": "be brief\n\nanswer in French",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": True,
        "temperature": 1.0,  # Anthropic's range ends at 1
        "stop_sequences": ["END"],
    }


async def test_cache_reads_and_writes_count_as_input_each_kept_apart() -> None:
    events = await parse(
        *start(input_tokens=4, cache_read_input_tokens=10, cache_creation_input_tokens=3,
               output_tokens=1),
        *event("ping"),
        *event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        *text("bonjour"),
        *event("content_block_stop", index=0),
        *stop("end_turn", 7),
        *event("message_stop"),
    )  # fmt: skip
    assert events == [
        TextDelta("bonjour"),
        Finish(FinishReason.STOP, 17, 7, 10, cache_write_tokens=3),
    ]


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", FinishReason.STOP),
        ("stop_sequence", FinishReason.STOP),
        ("max_tokens", FinishReason.LENGTH),
        ("refusal", FinishReason.CONTENT_FILTER),
    ],
)
async def test_stop_reasons_map_to_finish_reasons(reason: str, finish: FinishReason) -> None:
    events = await parse(
        *start(input_tokens=1), *text("x"), *stop(reason, 1), *event("message_stop")
    )
    assert isinstance(events[-1], Finish)
    assert events[-1].reason is finish


async def test_a_stream_that_ends_after_its_stop_reason_is_complete_before_it_broke_off() -> None:
    complete = await parse(*start(input_tokens=1), *text("x"), *stop("end_turn", 1))
    assert complete[-1] == Finish(FinishReason.STOP, 1, 1)
    with pytest.raises(ProviderError) as caught:
        await parse(*start(input_tokens=1), *text("x"))
    assert caught.value.kind is ErrorKind.UNAVAILABLE


async def test_a_cut_stream_keeps_the_reported_input_and_estimates_the_output(
    fake: FakeProviders,
) -> None:
    fake.script("anthropic", Script(tokens=6, cut_after=2))
    with pytest.raises(ProviderError) as caught:
        _ = [e async for e in fake.engine("anthropic").stream(request())]
    usage = caught.value.usage
    assert usage is not None
    # message_start reported the input (6 words: system, French instruction, hello).
    assert (usage.input_tokens, usage.output_tokens, usage.estimated) == (6, 2, True)


@pytest.mark.parametrize(
    ("error_type", "message", "kind", "context_length"),
    [
        ("overloaded_error", "Overloaded", ErrorKind.UNAVAILABLE, False),
        ("api_error", "Internal error", ErrorKind.UNAVAILABLE, False),
        ("rate_limit_error", "slow down", ErrorKind.RATE_LIMITED, False),
        ("invalid_request_error", "prompt is too long: 9 > 8", ErrorKind.INVALID_INPUT, True),
        ("authentication_error", "bad key", ErrorKind.UNAUTHENTICATED, False),
    ],
)
async def test_an_error_event_keeps_its_type(
    error_type: str, message: str, kind: ErrorKind, context_length: bool
) -> None:
    error = {"type": error_type, "message": message}
    with pytest.raises(ProviderError) as caught:
        await parse(*start(input_tokens=1), *text("x"), *event("error", error=error))
    assert caught.value.kind is kind
    assert caught.value.context_length_exceeded is context_length


async def test_an_answer_without_content_is_malformed(fake: FakeProviders) -> None:
    fake.script("anthropic", Script(reply={"type": "message", "stop_reason": "end_turn"}))
    with pytest.raises(ProviderError) as caught:
        _ = [e async for e in fake.engine("anthropic").stream(request(stream=False))]
    assert caught.value.kind is ErrorKind.UNAVAILABLE
    reply = {"type": "message", "content": [], "stop_reason": "end_turn",
             "usage": {"input_tokens": 2, "output_tokens": 0}}  # fmt: skip
    fake.script("anthropic", Script(reply=reply))
    events = [e async for e in fake.engine("anthropic").stream(request(stream=False))]
    assert events == [Finish(FinishReason.STOP, 2, 0)]


def test_an_oauth_token_is_a_bearer_an_api_key_is_x_api_key() -> None:
    oauth = AnthropicEngine(FakeProviders().provider("anthropic", credential="oauth_app"))
    assert oauth.headers("t") == {"anthropic-version": "2023-06-01", "Authorization": "Bearer t"}
    keyed = AnthropicEngine(FakeProviders().provider("anthropic"))
    assert keyed.headers("k") == {"anthropic-version": "2023-06-01", "x-api-key": "k"}


async def test_top_p_and_the_end_user_are_sent_as_anthropic_names_them(
    fake: FakeProviders,
) -> None:
    engine = fake.engine("anthropic")
    sampling = Sampling(top_p=0.8, end_user="end-user-7")
    _ = [e async for e in engine.stream(request(sampling=sampling))]
    body = fake.requests("anthropic")[-1].body
    assert (body["top_p"], body["metadata"]) == (0.8, {"user_id": "end-user-7"})
    assert "seed" not in body
