"""The `ollama` engine: the native /api/chat request it sends (options, no credential by
default, a bearer key when one is configured), and the corners of its NDJSON stream."""

from __future__ import annotations

from typing import Any

import pytest

from services.router.engines.base import (
    ChatMessage,
    EngineRequest,
    ErrorKind,
    Finish,
    FinishReason,
    ProviderError,
    TextDelta,
)
from services.router.engines.ollama import OllamaEngine
from tests.fakes.providers import FakeCredentials, FakeProviders, Script


def request(stream: bool = True, **fields: Any) -> EngineRequest:
    return EngineRequest(
        **{
            "messages": (ChatMessage("user", "hello there"),),
            "system_prompt": "be brief",
            "max_tokens": 32,
            "stream": stream,
            **fields,
        }
    )


async def test_the_request_is_native_chat_with_options_and_no_credential(
    fake: FakeProviders,
) -> None:
    engine = fake.engine("ollama")
    _ = [e async for e in engine.stream(request(temperature=0.2, stop=("END",)))]
    seen = fake.requests("ollama")[-1]
    assert "Authorization" not in seen.headers
    assert seen.body == {
        "model": "ollama-model",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there"},
        ],
        "stream": True,
        "options": {"num_predict": 32, "temperature": 0.2, "stop": ["END"]},
    }
    _ = [e async for e in engine.stream(request(stream=False))]
    assert fake.requests("ollama")[-1].body["stream"] is False


async def test_an_ollama_behind_a_proxy_gets_its_bearer_key() -> None:
    async with FakeProviders(ollama_key="proxy-key-123") as fake:
        keyed = fake.engine("ollama", FakeCredentials("proxy-key-123"), credential="api_key")
        events = [e async for e in keyed.stream(request())]
        assert isinstance(events[-1], Finish)
        assert fake.requests("ollama")[-1].headers["Authorization"] == "Bearer proxy-key-123"
        unkeyed = fake.engine("ollama")
        with pytest.raises(ProviderError) as caught:
            _ = [e async for e in unkeyed.stream(request())]
        assert caught.value.kind is ErrorKind.UNAUTHENTICATED


async def test_counts_the_final_line_omits_are_estimated(fake: FakeProviders) -> None:
    fake.script("ollama", Script(tokens=3, usage=False))
    events = [e async for e in fake.engine("ollama").stream(request())]
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["w0 ", "w1 ", "w2 "]
    final = events[-1]
    assert isinstance(final, Finish)
    assert final.estimated
    assert final.output_tokens == 3


async def test_done_reason_length_is_a_length_finish(fake: FakeProviders) -> None:
    events = [e async for e in fake.engine("ollama").stream(request(max_tokens=2))]
    assert events[-1] == Finish(FinishReason.LENGTH, 4, 2)


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (404, 'model "llama9" not found, try pulling it first', ErrorKind.MISCONFIGURED),
        (400, "invalid options", ErrorKind.INVALID_INPUT),
        (500, "llama runner process has terminated", ErrorKind.UNAVAILABLE),
    ],
)
async def test_error_bodies_are_bare_strings(status: int, message: str, kind: ErrorKind) -> None:
    engine = OllamaEngine(FakeProviders().provider("ollama"))
    error = engine.error_of(status, {"error": message}, message, None)
    assert error.kind is kind
    assert message.split(",")[0] in error.message


async def test_an_answer_without_a_message_is_malformed(fake: FakeProviders) -> None:
    fake.script("ollama", Script(reply={"done": True}))
    with pytest.raises(ProviderError) as caught:
        _ = [e async for e in fake.engine("ollama").stream(request(stream=False))]
    assert caught.value.kind is ErrorKind.UNAVAILABLE
    assert "malformed" in caught.value.message
