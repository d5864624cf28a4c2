"""Content-policy refusals as OpenAI, Azure OpenAI and Anthropic phrase them (the fake's
bodies follow their wire formats: `content_policy_violation`; `content_filter` with
`innererror.code: ResponsibleAIPolicyViolation`; Anthropic's "Output blocked by content
filtering policy"), as an HTTP 400 and as an error event inside a stream: each is its own
reason, PROVIDER_CONTENT_FILTERED, with the provider's code in the ErrorInfo metadata, and
stops the call. Any other input error stays PROVIDER_REJECTED_INPUT."""

from __future__ import annotations

import pytest

from services.common.errors import Code
from services.router.engines.base import (
    ChatMessage,
    EngineRequest,
    ErrorKind,
    ProviderError,
    TextDelta,
)
from services.router.engines.openai import OpenAIEngine
from services.router.failures import Verdict, classify
from tests.fakes.providers import FakeProviders, Script


def request(stream: bool = True) -> EngineRequest:
    return EngineRequest((ChatMessage("user", "hello there"),), "", 50, stream=stream)


async def refused(
    fake: FakeProviders, fmt: str, script: Script, stream: bool = True
) -> tuple[ProviderError, int]:
    fake.script(fmt, script)
    seen: list[object] = []

    async def call() -> None:
        async for event in fake.engine(fmt).stream(request(stream)):
            seen.append(event)

    with pytest.raises(ProviderError) as caught:
        await call()
    return caught.value, sum(isinstance(e, TextDelta) for e in seen)


CASES = [
    ("openai", "content_policy", "content_policy_violation"),
    ("openai", "azure_content_filter", "content_filter"),
    ("anthropic", "content_policy", "invalid_request_error"),
]


@pytest.mark.parametrize(("fmt", "fail", "code"), CASES)
@pytest.mark.parametrize("stream", [True, False])
async def test_a_content_policy_refusal_has_its_own_reason_and_the_providers_code(
    fake: FakeProviders, fmt: str, fail: str, code: str, stream: bool
) -> None:
    error, texts = await refused(fake, fmt, Script(fail=fail), stream)
    assert texts == 0
    assert error.kind is ErrorKind.INVALID_INPUT
    assert error.content_filtered
    assert error.http_status == 400
    provider = fake.provider(fmt)
    failure = classify(error, provider)
    status = failure.error
    assert (status.code, status.reason) == (Code.INVALID_ARGUMENT, "PROVIDER_CONTENT_FILTERED")
    assert status.metadata == {"provider": provider.name, "providerCode": code}
    # Another provider's policy is no way around this one's: the call stops.
    assert (failure.retry, failure.fallback, failure.verdict) == (False, False, Verdict.SUCCESS)


@pytest.mark.parametrize(("fmt", "fail", "code"), CASES)
async def test_a_content_policy_error_inside_a_stream_is_one_too(
    fake: FakeProviders, fmt: str, fail: str, code: str
) -> None:
    error, texts = await refused(fake, fmt, Script(tokens=5, error_after=2, fail=fail))
    assert texts == 2
    assert error.content_filtered
    assert error.http_status == 0
    failure = classify(error, fake.provider(fmt))
    assert failure.error.reason == "PROVIDER_CONTENT_FILTERED"
    assert failure.error.metadata["providerCode"] == code


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "ollama"])
async def test_any_other_input_error_stays_a_rejected_input(fake: FakeProviders, fmt: str) -> None:
    error, _ = await refused(fake, fmt, Script(fail="bad_request"))
    assert not error.content_filtered
    failure = classify(error, fake.provider(fmt))
    assert failure.error.reason == "PROVIDER_REJECTED_INPUT"
    assert failure.error.metadata == {"provider": fake.provider(fmt).name}


def test_a_reasoning_models_flagged_prompt_is_a_content_policy_refusal() -> None:
    # OpenAI's reasoning models answer a flagged prompt with `invalid_prompt`.
    engine = OpenAIEngine(FakeProviders().provider("openai"))
    body = {
        "error": {
            "message": "Invalid prompt: your prompt was flagged as potentially violating our "
            "usage policy. Please try again with a different prompt.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_prompt",
        }
    }
    error = engine.error_of(400, body, "", None)
    assert error.content_filtered
    assert error.metadata == {"providerCode": "invalid_prompt"}
    body["error"]["message"] = "Invalid prompt: the messages array is empty."
    assert not engine.error_of(400, body, "", None).content_filtered
