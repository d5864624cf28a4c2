"""The sim engine: deterministic words, pacing, usage, max_tokens and failure injection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.common.config import ProviderConfig, SimConfig
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
from services.router.engines.sim import VOCABULARY, SimEngine


def provider(**sim: Any) -> ProviderConfig:
    return ProviderConfig(
        name="sim-test",
        kind="sim",
        model="m",
        sim=SimConfig(**{"token_interval_ms": 0.0, **sim}),
    )


def request(text: str = "tell me a story", max_tokens: int = 1024) -> EngineRequest:
    return EngineRequest(
        messages=(ChatMessage("user", text),), system_prompt="be brief", max_tokens=max_tokens
    )


async def collect(engine: SimEngine, req: EngineRequest) -> list[EngineEvent]:
    return [event async for event in engine.stream(req)]


async def collect_until_failure(
    engine: SimEngine, req: EngineRequest, seen: list[EngineEvent]
) -> None:
    async for event in engine.stream(req):
        seen.append(event)


def text_of(events: list[EngineEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


async def test_same_prompt_same_words_other_prompt_other_words() -> None:
    engine = SimEngine(provider(tokens=12))
    first = text_of(await collect(engine, request("what is a saga")))
    again = text_of(await collect(engine, request("what is a saga")))
    other = text_of(await collect(engine, request("what is a ledger")))
    assert first == again
    assert first != other
    words = first.split(" ")
    assert words[-1] == ""  # every token is a word and a space
    assert len(words) - 1 == 12
    assert all(w in VOCABULARY for w in words[:-1])


async def test_usage_counts_prompt_words_and_tokens_sent() -> None:
    events = await collect(SimEngine(provider(tokens=5)), request("one two three"))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == 5
    assert events[-1] == Finish(FinishReason.STOP, input_tokens=5, output_tokens=5)


async def test_max_tokens_caps_the_answer() -> None:
    events = await collect(SimEngine(provider(tokens=10)), request(max_tokens=3))
    assert len([e for e in events if isinstance(e, TextDelta)]) == 3
    final = events[-1]
    assert isinstance(final, Finish)
    assert (final.reason, final.output_tokens) == (FinishReason.LENGTH, 3)


async def test_tokens_arrive_at_the_configured_pace() -> None:
    engine = SimEngine(provider(tokens=5, first_token_ms=60, token_interval_ms=30))
    loop = asyncio.get_running_loop()
    start = loop.time()
    arrivals = [loop.time() - start async for e in engine.stream(request()) if e]
    # Five deltas then Finish: the first after ~60 ms, then one every ~30 ms.
    assert arrivals[0] >= 0.055
    assert arrivals[4] - arrivals[0] >= 0.115


@pytest.mark.parametrize(
    ("fail", "kind", "retry_after"),
    [
        ("unavailable", ErrorKind.UNAVAILABLE, None),
        ("rate_limited", ErrorKind.RATE_LIMITED, 1.0),
        ("unauthenticated", ErrorKind.UNAUTHENTICATED, None),
        ("invalid_argument", ErrorKind.INVALID_INPUT, None),
        ("context_length", ErrorKind.INVALID_INPUT, None),
    ],
)
async def test_injected_failure_after_some_tokens(
    fail: str, kind: ErrorKind, retry_after: float | None
) -> None:
    engine = SimEngine(provider(tokens=6, fail=fail, fail_after_tokens=2))
    seen: list[EngineEvent] = []
    with pytest.raises(ProviderError) as err:
        await collect_until_failure(engine, request(), seen)
    assert err.value.kind is kind
    assert err.value.retry_after == retry_after
    assert len(seen) == 2
    assert all(isinstance(e, TextDelta) for e in seen)


async def test_injected_failure_at_once_sends_nothing() -> None:
    engine = SimEngine(provider(tokens=6, fail="unavailable"))
    seen: list[EngineEvent] = []
    with pytest.raises(ProviderError):
        await collect_until_failure(engine, request(), seen)
    assert seen == []
    # Positive control: the same engine without `fail` answers.
    assert text_of(await collect(SimEngine(provider(tokens=6)), request()))


async def test_context_length_says_a_larger_window_may_take_it() -> None:
    engine = SimEngine(provider(fail="context_length"))
    with pytest.raises(ProviderError) as err:
        await collect(engine, request())
    assert err.value.context_length_exceeded
    # Positive control: other input failures do not say so.
    with pytest.raises(ProviderError) as other:
        await collect(SimEngine(provider(fail="invalid_argument")), request())
    assert not other.value.context_length_exceeded


async def test_fail_calls_fails_only_the_first_calls() -> None:
    engine = SimEngine(provider(tokens=3, fail="unavailable", fail_calls=2))
    for _ in range(2):
        with pytest.raises(ProviderError):
            await collect(engine, request())
    assert len(text_of(await collect(engine, request())).split()) == 3
    assert len(text_of(await collect(engine, request())).split()) == 3
