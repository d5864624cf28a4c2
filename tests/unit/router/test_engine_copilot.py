"""The `copilot` engine against a fake Copilot endpoint: the caller's Entra ID token as a
bearer, a refused token dropped and fetched again once, auth's refusal relayed intact, and
defensive parsing of choices / message / content (the seeds' case list)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest

from services.common.errors import FailedPrecondition, Unavailable
from services.router.engines.base import (
    Caller,
    ChatMessage,
    EngineEvent,
    EngineRequest,
    ErrorKind,
    Finish,
    FinishReason,
    ProviderCredentialFailed,
    ProviderError,
    TextDelta,
)
from services.router.engines.tools import ToolCall, ToolCallAssembler, ToolCallDelta, ToolSpec
from tests.fakes.providers import FakeCall, FakeCredentials, FakeProviders, Script, answer_text

OLD = "entra-token-old"
NEW = "entra-token-new"
CALLER = Caller("usr_1", "ctx-of-usr_1")


@pytest.fixture(autouse=True)
def tokens(fake: FakeProviders) -> None:
    fake.copilot_tokens = {OLD}


def request(stream: bool = False) -> EngineRequest:
    return EngineRequest(
        messages=(ChatMessage("user", "summarise the ledger"),),
        system_prompt="you are a helpful assistant",
        max_tokens=50,
        stream=stream,
        caller=CALLER,
    )


async def collect(
    fake: FakeProviders, credentials: FakeCredentials, stream: bool
) -> list[EngineEvent]:
    engine = fake.engine("copilot", credentials)
    return [e async for e in engine.stream(request(stream))]


@pytest.mark.parametrize("stream", [True, False])
async def test_the_callers_token_is_sent_as_a_bearer(fake: FakeProviders, stream: bool) -> None:
    credentials = FakeCredentials(OLD)
    events = await collect(fake, credentials, stream)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == answer_text(5)
    # System prompt first, as the seeds' engine sent it.
    seen = fake.requests("copilot")[-1]
    assert seen.headers["Authorization"] == f"Bearer {OLD}"
    assert seen.body["messages"][0] == {"role": "system", "content": "you are a helpful assistant"}
    # The lookup was asked for this caller's token (auth needs the user and the context).
    assert credentials.calls == [(CALLER, "")]


@pytest.mark.parametrize("stream", [True, False])
async def test_a_refused_token_is_dropped_and_fetched_again_once(
    fake: FakeProviders, stream: bool
) -> None:
    fake.copilot_tokens = {NEW}  # OLD was revoked before it expired
    credentials = FakeCredentials(OLD, NEW)
    events = await collect(fake, credentials, stream)
    assert isinstance(events[-1], Finish)
    assert [s.authorized for s in fake.requests("copilot")] == [False, True]
    assert credentials.calls == [(CALLER, ""), (CALLER, OLD)]


async def test_a_token_refused_twice_is_an_authentication_failure(fake: FakeProviders) -> None:
    fake.copilot_tokens = set()
    credentials = FakeCredentials(OLD, NEW)
    with pytest.raises(ProviderError) as caught:
        await collect(fake, credentials, stream=False)
    assert caught.value.kind is ErrorKind.UNAUTHENTICATED
    assert not isinstance(caught.value, ProviderCredentialFailed)
    assert len(fake.requests("copilot")) == 2  # one re-fetch, never a loop
    assert OLD not in caught.value.message
    assert NEW not in caught.value.message


async def test_the_same_token_again_is_not_sent_again(fake: FakeProviders) -> None:
    fake.copilot_tokens = set()
    with pytest.raises(ProviderError):
        await collect(fake, FakeCredentials(OLD), stream=False)
    assert len(fake.requests("copilot")) == 1


@pytest.mark.parametrize(
    "upstream",
    [
        FailedPrecondition("refresh token rejected", reason="REAUTH_REQUIRED", domain="auth.saga"),
        Unavailable("auth unreachable", reason="UPSTREAM_UNAVAILABLE", domain="router.saga"),
    ],
)
async def test_no_token_from_auth_is_a_credential_failure_with_auths_error_intact(
    fake: FakeProviders, upstream: Exception
) -> None:
    with pytest.raises(ProviderCredentialFailed) as caught:
        await collect(fake, FakeCredentials(OLD, error=upstream), stream=False)
    assert caught.value.upstream is upstream
    assert caught.value.kind is ErrorKind.UNAUTHENTICATED
    assert type(caught.value) is ProviderCredentialFailed
    assert fake.requests("copilot") == []  # the provider was never called
    # Control: with a token, the same engine configuration answers.
    assert isinstance((await collect(fake, FakeCredentials(OLD), stream=False))[-1], Finish)


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ({"id": "x"}, "no choices"),
        ({"choices": []}, "no choices"),
        ({"choices": ["not an object"]}, "no choices"),
        ({"choices": [{"finish_reason": "stop"}]}, "no message"),
    ],
)
async def test_an_answer_missing_its_structure_is_malformed_and_logged(
    fake: FakeProviders, caplog: pytest.LogCaptureFixture, reply: Any, problem: str
) -> None:
    fake.script("copilot", Script(reply=reply))
    with caplog.at_level(logging.WARNING), pytest.raises(ProviderError) as caught:
        await collect(fake, FakeCredentials(OLD), stream=False)
    assert caught.value.kind is ErrorKind.UNAVAILABLE
    assert problem in caught.value.message
    assert "answer without" in caplog.text


@pytest.mark.parametrize("content", [None, "", [], "absent"])
async def test_missing_or_empty_content_is_logged_not_fatal(
    fake: FakeProviders, caplog: pytest.LogCaptureFixture, content: Any
) -> None:
    message: dict[str, Any] = {"role": "assistant"}
    if content != "absent":
        message["content"] = content
    reply = {
        "choices": [{"message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 8, "completion_tokens": 0, "total_tokens": 8},
    }
    fake.script("copilot", Script(reply=reply))
    with caplog.at_level(logging.WARNING):
        events = await collect(fake, FakeCredentials(OLD), stream=False)
    assert events == [Finish(FinishReason.STOP, 8, 0)]
    assert "empty content" in caplog.text


async def test_the_usage_copilot_reports_is_kept(fake: FakeProviders) -> None:
    reply = {
        "choices": [{"message": {"content": "ok"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
    }
    fake.script("copilot", Script(reply=reply))
    events = await collect(fake, FakeCredentials(OLD), stream=False)
    assert events == [TextDelta("ok"), Finish(FinishReason.LENGTH, 12, 1)]


@pytest.mark.parametrize("stream", [True, False])
async def test_tool_calls_are_read_like_openai_ones(fake: FakeProviders, stream: bool) -> None:
    tool = ToolSpec("get_weather", "", '{"type": "object", "properties": {"city": {}}}')
    fake.script(
        "copilot", Script(tokens=0, tool_calls=(FakeCall("get_weather", '{"city": "Oslo"}'),))
    )
    engine = fake.engine("copilot", FakeCredentials(OLD))
    req = replace(request(stream), tools=(tool,))
    events = [e async for e in engine.stream(req)]
    assembler = ToolCallAssembler()
    for event in events:
        if isinstance(event, ToolCallDelta):
            assembler.add(event)
    assert assembler.calls("x") == (ToolCall("call_fake_0", "get_weather", '{"city": "Oslo"}'),)
    assert isinstance(events[-1], Finish)
    assert events[-1].reason is FinishReason.TOOL_CALLS
    assert fake.requests("copilot")[-1].body["tools"][0]["function"]["name"] == "get_weather"
