"""The `openai` engine: the request it sends, and the corners of OpenAI's wire format (SSE
without [DONE], chunks without choices, content parts, error objects inside a stream, the
wordings of context-length errors, Retry-After as an HTTP date)."""

from __future__ import annotations

import email.utils
import json
import logging
import time
from typing import Any

import pytest

from services.router.engines.base import (
    ChatMessage,
    EngineEvent,
    EngineRequest,
    ErrorKind,
    Finish,
    FinishReason,
    ProviderError,
    TextDelta,
)
from services.router.engines.openai import OpenAIEngine
from tests.fakes.providers import FakeProviders, Script
from tests.unit.router.conftest import parse_lines


def request(stream: bool = True, **fields: Any) -> EngineRequest:
    return EngineRequest(
        messages=(ChatMessage("user", "hello"), ChatMessage("assistant", "hi"),
                  ChatMessage("user", "tell me more")),
        system_prompt="be brief",
        max_tokens=64,
        stream=stream,
        **fields,
    )  # fmt: skip


async def collect(fake: FakeProviders, req: EngineRequest) -> list[EngineEvent]:
    return [e async for e in fake.engine("openai").stream(req)]


def data(chunk: Any) -> list[str]:
    return [f"data: {json.dumps(chunk)}", ""]


def delta(text: str, finish: str | None = None) -> list[str]:
    return data({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]})


async def parse(*items: str, stream: bool = True) -> list[EngineEvent]:
    engine = OpenAIEngine(FakeProviders().provider("openai"))
    return await parse_lines(engine, request(stream), *items)


async def test_a_stream_request_asks_for_usage_and_carries_the_key(fake: FakeProviders) -> None:
    await collect(fake, request(temperature=0.3, stop=("END",)))
    seen = fake.requests("openai")[-1]
    assert seen.headers["Authorization"] == f"Bearer {fake.api_key}"
    assert seen.body == {
        "model": "openai-model",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "tell me more"},
        ],
        "max_tokens": 64,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.3,
        "stop": ["END"],
    }


async def test_a_complete_request_asks_for_no_stream_and_sends_no_options_it_lacks(
    fake: FakeProviders,
) -> None:
    await collect(fake, request(stream=False))
    body = fake.requests("openai")[-1].body
    assert body["stream"] is False
    assert "stream_options" not in body
    assert "temperature" not in body
    assert "stop" not in body


async def test_a_stream_that_ends_after_its_finish_reason_without_done_is_complete() -> None:
    events = await parse(*delta("a "), *delta("b", "stop"))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["a ", "b"]
    assert isinstance(events[-1], Finish)
    assert events[-1].reason is FinishReason.STOP


async def test_a_stream_that_ends_before_its_finish_reason_broke_off() -> None:
    with pytest.raises(ProviderError) as caught:
        await parse(*delta("a "), *delta("b"))
    assert caught.value.kind is ErrorKind.UNAVAILABLE
    assert "ended before" in caught.value.message


async def test_comments_role_chunks_and_chunks_without_choices_are_skipped() -> None:
    events = await parse(
        ": keep-alive",
        "",
        *data({"choices": [{"index": 0, "delta": {"role": "assistant"}}], "usage": None}),
        *delta("x", "length"),
        *data({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 1}}),
        "data: [DONE]",
        "",
    )
    assert events == [TextDelta("x"), Finish(FinishReason.LENGTH, 9, 1)]


async def test_content_given_as_parts_is_joined() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}]
    events = await parse(
        *data({"choices": [{"delta": {"content": parts}, "finish_reason": "stop"}]})
    )
    assert events[0] == TextDelta("ab")


@pytest.mark.parametrize(
    ("error", "kind", "context_length"),
    [
        ({"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"},
         ErrorKind.RATE_LIMITED, False),
        ({"message": "too long", "type": "invalid_request_error",
          "code": "context_length_exceeded"}, ErrorKind.INVALID_INPUT, True),
        ({"message": "boom", "type": "server_error", "code": None}, ErrorKind.UNAVAILABLE, False),
    ],
)  # fmt: skip
async def test_an_error_object_inside_the_stream_keeps_its_kind(
    error: dict[str, Any], kind: ErrorKind, context_length: bool
) -> None:
    with pytest.raises(ProviderError) as caught:
        await parse(*delta("a "), *data({"error": error}))
    assert caught.value.kind is kind
    assert caught.value.context_length_exceeded is context_length
    assert caught.value.http_status == 0


@pytest.mark.parametrize(
    ("status", "body", "context_length"),
    [
        # vLLM: the message at the top level, no code.
        (400, {"object": "error", "type": "BadRequestError", "code": 400,
               "message": "This model's maximum context length is 4096 tokens."}, True),
        # LM Studio / llama.cpp style: a bare string.
        (400, {"error": "the request exceeds the available context size"}, False),
        (400, {"error": {"message": "bad temperature", "type": "invalid_request_error"}}, False),
    ],
)  # fmt: skip
async def test_context_length_errors_are_recognised_in_every_wording(
    status: int, body: dict[str, Any], context_length: bool
) -> None:
    engine = OpenAIEngine(FakeProviders().provider("openai"))
    error = engine.error_of(status, body, json.dumps(body), None)
    assert error.kind is ErrorKind.INVALID_INPUT
    assert error.context_length_exceeded is context_length


async def test_retry_after_as_an_http_date_is_honoured(fake: FakeProviders) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    fake.script("openai", Script(fail="rate_limited", retry_after=when))
    with pytest.raises(ProviderError) as caught:
        await collect(fake, request())
    assert caught.value.kind is ErrorKind.RATE_LIMITED
    assert caught.value.retry_after is not None
    assert 25 <= caught.value.retry_after <= 31
    fake.script("openai", Script(fail="rate_limited", retry_after=""))
    with pytest.raises(ProviderError) as caught:
        await collect(fake, request())
    assert caught.value.retry_after is None


async def test_an_answer_without_choices_is_malformed(
    fake: FakeProviders, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script("openai", Script(reply={"id": "x", "object": "chat.completion"}))
    with caplog.at_level(logging.WARNING), pytest.raises(ProviderError) as caught:
        await collect(fake, request(stream=False))
    assert caught.value.kind is ErrorKind.UNAVAILABLE
    assert "no choices" in caught.value.message
    assert "answer without choices" in caplog.text


async def test_an_answer_with_null_content_is_empty_not_an_error(
    fake: FakeProviders, caplog: pytest.LogCaptureFixture
) -> None:
    reply = {
        "choices": [{"message": {"role": "assistant", "content": None}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 0},
    }
    fake.script("openai", Script(reply=reply))
    with caplog.at_level(logging.WARNING):
        events = await collect(fake, request(stream=False))
    assert events == [Finish(FinishReason.STOP, 3, 0)]
    assert "empty content" in caplog.text


async def test_a_json_answer_to_a_stream_request_is_read_whole(fake: FakeProviders) -> None:
    reply = {
        "choices": [{"message": {"content": "all at once"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3},
    }
    fake.script("openai", Script(reply=reply))
    events = await collect(fake, request(stream=True))
    assert events == [TextDelta("all at once"), Finish(FinishReason.STOP, 3, 3)]


def test_an_azure_endpoint_gets_its_key_as_api_key_and_a_token_as_a_bearer() -> None:
    azure = "https://res.openai.azure.com/openai/v1"
    keyed = OpenAIEngine(FakeProviders().provider("openai", base_url=azure))
    assert keyed.headers("k") == {"api-key": "k"}
    entra = OpenAIEngine(FakeProviders().provider("openai", base_url=azure, credential="oauth_app"))
    assert entra.headers("t") == {"Authorization": "Bearer t"}
    assert OpenAIEngine(FakeProviders().provider("openai")).headers("k") == {
        "Authorization": "Bearer k"
    }
    assert OpenAIEngine(FakeProviders().provider("openai")).headers("") == {}
