"""What the HTTP engines share: Retry-After parsing, the status → error-kind matrix, safe
error messages, the SSE parser, engine construction, and session ownership."""

from __future__ import annotations

import email.utils

import aiohttp
import pytest

from services.common.config import ProviderConfig
from services.common.tokens import estimate_tokens
from services.router.engines import engine_for
from services.router.engines.anthropic import AnthropicEngine
from services.router.engines.base import (
    ChatMessage,
    EngineRequest,
    ErrorKind,
    Finish,
    ProviderError,
)
from services.router.engines.copilot import CopilotEngine
from services.router.engines.http_errors import error_for_status, parse_retry_after, shown
from services.router.engines.ollama import OllamaEngine
from services.router.engines.openai import OpenAIEngine
from services.router.engines.sim import SimEngine
from services.router.engines.sse import SseEvent, SseParser
from tests.fakes.providers import FakeCredentials, FakeProviders

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"Retry-After": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"Retry-After": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": "86400000"}, 3600.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "nan"}, None),
        ({}, None),
    ],
)
def test_retry_after_is_seconds_or_a_date_clamped(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert parse_retry_after(headers, now=NOW) == seconds


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, ErrorKind.INVALID_INPUT),
        (401, ErrorKind.UNAUTHENTICATED),
        (403, ErrorKind.UNAUTHENTICATED),
        (404, ErrorKind.MISCONFIGURED),
        (405, ErrorKind.MISCONFIGURED),
        (408, ErrorKind.TIMEOUT),
        (409, ErrorKind.UNAVAILABLE),
        (413, ErrorKind.INVALID_INPUT),
        (422, ErrorKind.INVALID_INPUT),
        (429, ErrorKind.RATE_LIMITED),
        (500, ErrorKind.UNAVAILABLE),
        (502, ErrorKind.UNAVAILABLE),
        (503, ErrorKind.UNAVAILABLE),
        (504, ErrorKind.TIMEOUT),
        (529, ErrorKind.UNAVAILABLE),
    ],
)
def test_each_status_maps_to_one_kind(status: int, kind: ErrorKind) -> None:
    error = error_for_status("p1", status, "m", retry_after=3.0)
    assert error.kind is kind
    assert error.http_status == status
    assert error.message == f"p1: HTTP {status}: m"
    assert not error.context_length_exceeded


def test_only_an_input_error_can_be_a_context_length_error() -> None:
    assert error_for_status("p1", 400, "m", context_length=True).context_length_exceeded
    assert error_for_status("p1", 413, "m", context_length=True).context_length_exceeded
    assert not error_for_status("p1", 500, "m", context_length=True).context_length_exceeded


def test_messages_shown_lose_secrets_newlines_and_length() -> None:
    secret = "k3y-very-secret-value"  # noqa: S105 - a fake key
    message = shown(f"bad key {secret}\n sk-abcdef123456 and Bearer abc.def-ghi " + "x" * 500)
    assert "sk-abcdef123456" not in message
    assert "abc.def-ghi" not in message
    assert "\n" not in message
    assert len(message) <= 301
    assert secret not in shown(f"bad key {secret}", secret)
    assert shown("plain words") == "plain words"


def test_sse_events_dispatch_on_blank_lines() -> None:
    parser = SseParser()
    fed = [
        parser.feed(line)
        for line in [": comment", "event: delta", "data: a", "data:b", "id: 7", "", "data: c"]
    ]
    assert fed == [None, None, None, None, None, SseEvent("delta", "a\nb"), None]
    assert parser.flush() == SseEvent("message", "c")
    assert parser.flush() is None
    assert parser.feed("") is None  # a blank line with nothing pending dispatches nothing


def test_estimates_are_about_four_characters_a_token() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("openai", OpenAIEngine),
        ("anthropic", AnthropicEngine),
        ("ollama", OllamaEngine),
        ("copilot", CopilotEngine),
        ("sim", SimEngine),
    ],
)
def test_each_kind_gets_its_engine(kind: str, cls: type) -> None:
    provider = ProviderConfig(name="p", kind=kind, model="m", base_url="http://127.0.0.1:1")
    assert isinstance(engine_for(provider, FakeCredentials("k")), cls)


def request() -> EngineRequest:
    return EngineRequest(messages=(ChatMessage("user", "hi"),), system_prompt="", max_tokens=8)


async def test_a_keyed_provider_without_a_credential_source_fails_before_calling(
    fake: FakeProviders,
) -> None:
    unwired = engine_for(fake.provider("openai"))
    with pytest.raises(ProviderError) as caught:
        _ = [e async for e in unwired.stream(request())]
    assert caught.value.kind is ErrorKind.UNAUTHENTICATED
    assert fake.requests() == []
    wired = engine_for(fake.provider("openai"), FakeCredentials(fake.api_key))
    events = [e async for e in wired.stream(request())]
    assert isinstance(events[-1], Finish)
    await wired.close()
    await unwired.close()


async def test_a_session_passed_in_stays_open_an_owned_one_is_reopened(
    fake: FakeProviders,
) -> None:
    async with aiohttp.ClientSession() as shared:
        borrowed = OpenAIEngine(fake.provider("openai"), FakeCredentials(fake.api_key), shared)
        _ = [e async for e in borrowed.stream(request())]
        await borrowed.close()
        assert not shared.closed
        _ = [e async for e in borrowed.stream(request())]
    owned = OpenAIEngine(fake.provider("openai"), FakeCredentials(fake.api_key))
    _ = [e async for e in owned.stream(request())]
    await owned.close()
    await owned.close()  # idempotent
    # A call after close opens a new pool (close happens at shutdown; nothing breaks).
    events = [e async for e in owned.stream(request())]
    assert isinstance(events[-1], Finish)
    await owned.close()
