"""What every HTTP engine does, against the fake providers over real HTTP on loopback, for
each wire format: streamed and complete answers with the provider's usage, every error kind,
broken and malformed streams, and the connect / first-token / idle / total timeouts."""

from __future__ import annotations

import asyncio
import math

import pytest

from services.router.engines.base import (
    Caller,
    ChatMessage,
    Engine,
    EngineEvent,
    EngineRequest,
    ErrorKind,
    Finish,
    FinishReason,
    ProviderError,
    TextDelta,
)
from tests.fakes.providers import FakeCredentials, FakeProviders, Script, answer_text
from tests.harness import free_ports

FORMATS = ("openai", "anthropic", "ollama", "copilot")
TOKEN = "entra-access-token-for-usr_1"  # noqa: S105 - a fake token
PROMPT = "tell me about the saga of the river"  # 8 words
SYSTEM = "be brief"  # 2 words


@pytest.fixture(autouse=True)
def tokens(fake: FakeProviders) -> None:
    fake.copilot_tokens = {TOKEN}


def request(stream: bool = True, max_tokens: int = 100) -> EngineRequest:
    return EngineRequest(
        messages=(ChatMessage("user", PROMPT),),
        system_prompt=SYSTEM,
        max_tokens=max_tokens,
        stream=stream,
        caller=Caller("usr_1", "ctx-token"),
    )


async def run(
    eng: Engine, req: EngineRequest, seen: list[EngineEvent] | None = None
) -> list[EngineEvent]:
    events = [] if seen is None else seen
    async for event in eng.stream(req):
        events.append(event)
    return events


async def failure(eng: Engine, req: EngineRequest) -> tuple[ProviderError, list[EngineEvent]]:
    seen: list[EngineEvent] = []
    with pytest.raises(ProviderError) as caught:
        await run(eng, req, seen)
    return caught.value, seen


def texts(events: list[EngineEvent]) -> list[str]:
    return [e.text for e in events if isinstance(e, TextDelta)]


def last(events: list[EngineEvent]) -> Finish:
    assert isinstance(events[-1], Finish)
    return events[-1]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_stream_yields_each_token_then_the_providers_usage(
    fake: FakeProviders, fmt: str
) -> None:
    eng = fake.engine(fmt)
    events = await run(eng, request())
    assert texts(events) == ["w0 ", "w1 ", "w2 ", "w3 ", "w4 "]
    assert last(events) == Finish(FinishReason.STOP, input_tokens=10, output_tokens=5)
    assert fake.requests(fmt)[-1].streamed


@pytest.mark.parametrize("fmt", FORMATS)
async def test_complete_mode_asks_for_one_answer_and_yields_it_whole(
    fake: FakeProviders, fmt: str
) -> None:
    eng = fake.engine(fmt)
    events = await run(eng, request(stream=False))
    assert texts(events) == [answer_text(5)]
    assert last(events) == Finish(FinishReason.STOP, input_tokens=10, output_tokens=5)
    assert not fake.requests(fmt)[-1].streamed


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("stream", [True, False])
async def test_max_tokens_caps_the_answer_with_finish_reason_length(
    fake: FakeProviders, fmt: str, stream: bool
) -> None:
    eng = fake.engine(fmt)
    capped = await run(eng, request(stream, max_tokens=3))
    assert "".join(texts(capped)) == answer_text(3)
    assert last(capped).reason is FinishReason.LENGTH
    uncapped = await run(eng, request(stream, max_tokens=5))
    assert last(uncapped).reason is FinishReason.STOP


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "copilot"])
@pytest.mark.parametrize("stream", [True, False])
async def test_cached_input_tokens_are_reported_as_part_of_the_input(
    fake: FakeProviders, fmt: str, stream: bool
) -> None:
    eng = fake.engine(fmt)
    fake.script(fmt, Script(cached_tokens=6), Script())
    cached = last(await run(eng, request(stream)))
    plain = last(await run(eng, request(stream)))
    assert (cached.input_tokens, cached.cached_tokens, cached.estimated) == (10, 6, False)
    assert (plain.input_tokens, plain.cached_tokens) == (10, 0)


@pytest.mark.parametrize("stream", [True, False])
async def test_anthropic_cache_writes_are_reported_apart_within_the_input(
    fake: FakeProviders, stream: bool
) -> None:
    eng = fake.engine("anthropic")
    fake.script("anthropic", Script(cached_tokens=2, cache_write_tokens=5))
    finish = last(await run(eng, request(stream)))
    # input_tokens 3 + cache_read_input_tokens 2 + cache_creation_input_tokens 5 on the wire.
    assert (finish.input_tokens, finish.cached_tokens, finish.cache_write_tokens) == (10, 2, 5)


async def test_an_anthropic_stream_cut_midway_keeps_the_cache_writes_it_reported(
    fake: FakeProviders,
) -> None:
    eng = fake.engine("anthropic")
    fake.script("anthropic", Script(tokens=6, cache_write_tokens=5, cut_after=2))
    error, _ = await failure(eng, request())
    assert error.usage is not None
    # message_start reported the input and its cache writes; the output is estimated.
    assert (error.usage.input_tokens, error.usage.cache_write_tokens) == (10, 5)
    assert error.usage.estimated


@pytest.mark.parametrize("fmt", FORMATS)
async def test_deltas_are_passed_on_as_they_arrive(fake: FakeProviders, fmt: str) -> None:
    eng = fake.engine(fmt)
    fake.script(fmt, Script(tokens=4, interval=0.1))
    loop = asyncio.get_running_loop()
    arrivals = []
    async for event in eng.stream(request()):
        if isinstance(event, TextDelta):
            arrivals.append(loop.time())
    # Sent 100 ms apart: spread over >= 300 ms at the source, >= 200 ms here unless buffered.
    assert len(arrivals) == 4
    assert arrivals[-1] - arrivals[0] >= 0.2


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("stream", [True, False])
async def test_usage_the_provider_omits_is_estimated_and_flagged(
    fake: FakeProviders, fmt: str, stream: bool
) -> None:
    eng = fake.engine(fmt)
    fake.script(fmt, Script(tokens=6, usage=False), Script(tokens=6))
    estimated = last(await run(eng, request(stream)))
    reported = last(await run(eng, request(stream)))
    assert estimated.estimated
    assert estimated.input_tokens > 0
    # A stream counts a token per chunk (exact here); a complete answer ~4 characters each.
    assert estimated.output_tokens == (6 if stream else math.ceil(len(answer_text(6)) / 4))
    assert not reported.estimated
    assert (reported.input_tokens, reported.output_tokens) == (10, 6)


ERRORS = [
    ("rate_limited", ErrorKind.RATE_LIMITED, 2.0, False),
    ("server_error", ErrorKind.UNAVAILABLE, None, False),
    ("overloaded", ErrorKind.UNAVAILABLE, 2.0, False),
    ("unauthorized", ErrorKind.UNAUTHENTICATED, None, False),
    ("forbidden", ErrorKind.UNAUTHENTICATED, None, False),
    ("context_length", ErrorKind.INVALID_INPUT, None, True),
    ("bad_request", ErrorKind.INVALID_INPUT, None, False),
    ("timeout", ErrorKind.TIMEOUT, None, False),
    ("request_timeout", ErrorKind.TIMEOUT, None, False),
    ("too_large", ErrorKind.INVALID_INPUT, None, False),
    ("model_not_found", ErrorKind.MISCONFIGURED, None, False),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("fail", "kind", "retry_after", "context_length"), ERRORS)
@pytest.mark.parametrize("stream", [True, False])
async def test_each_http_error_maps_to_its_kind(
    fake: FakeProviders,
    fmt: str,
    fail: str,
    kind: ErrorKind,
    retry_after: float | None,
    context_length: bool,
    stream: bool,
) -> None:
    eng = fake.engine(fmt)
    fake.script(fmt, Script(fail=fail))
    error, seen = await failure(eng, request(stream))
    assert seen == []
    assert error.kind is kind
    assert error.retry_after == retry_after
    assert error.context_length_exceeded is context_length
    assert error.http_status == {"rate_limited": 429, "overloaded": 529}.get(
        fail, error.http_status
    )
    assert error.usage is None  # nothing was generated
    assert (TOKEN if fmt == "copilot" else fake.api_key) not in error.message
    # Control: the same engine answers once the provider does.
    assert texts(await run(eng, request(stream)))


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_stream_cut_after_text_fails_with_the_text_it_sent_estimated(
    fake: FakeProviders, fmt: str
) -> None:
    eng = fake.engine(fmt)
    fake.script(fmt, Script(tokens=6, cut_after=3))
    error, seen = await failure(eng, request())
    assert texts(seen) == ["w0 ", "w1 ", "w2 "]
    assert error.kind is ErrorKind.UNAVAILABLE
    assert error.usage is not None
    assert error.usage.estimated
    # Output billed for the cut attempt is what the provider counted on the wire.
    assert error.usage.output_tokens == fake.requests(fmt)[-1].tokens == 3
    assert not fake.requests(fmt)[-1].completed
    # Control: an uncut stream of the same length completes.
    assert len(texts(await run(eng, request()))) == 5


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_malformed_chunk_is_a_transient_failure_not_a_crash(
    fake: FakeProviders, fmt: str
) -> None:
    eng = fake.engine(fmt)
    fake.script(fmt, Script(tokens=6, malformed_after=2))
    error, seen = await failure(eng, request())
    assert texts(seen) == ["w0 ", "w1 "]
    assert error.kind is ErrorKind.UNAVAILABLE
    assert "malformed" in error.message
    assert error.usage is not None
    assert error.usage.output_tokens == 2
    assert texts(await run(eng, request()))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("fail", "kind"),
    [("overloaded", ErrorKind.UNAVAILABLE), ("rate_limited", ErrorKind.RATE_LIMITED)],
)
async def test_an_error_event_inside_the_stream_fails_after_the_text(
    fake: FakeProviders, fmt: str, fail: str, kind: ErrorKind
) -> None:
    eng = fake.engine(fmt)
    fake.script(fmt, Script(tokens=6, error_after=2, fail=fail))
    error, seen = await failure(eng, request())
    assert texts(seen) == ["w0 ", "w1 "]
    # Ollama's error line has no type: any error inside its stream is transient.
    assert error.kind is (ErrorKind.UNAVAILABLE if fmt == "ollama" else kind)
    assert error.http_status == 0
    assert error.usage is not None
    assert error.usage.output_tokens == 2


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("stream", [True, False])
async def test_a_hanging_provider_times_out(fake: FakeProviders, fmt: str, stream: bool) -> None:
    eng = fake.engine(fmt, first_token_timeout_ms=300, total_timeout_ms=600)
    fake.script(fmt, Script(hang=True))
    error, seen = await failure(eng, request(stream))
    assert seen == []
    assert error.kind is ErrorKind.TIMEOUT
    # A stream waits for its first token; a complete answer has only the total timeout.
    assert ("first token" in error.message) is stream
    assert texts(await run(eng, request(stream)))


@pytest.mark.parametrize("fmt", FORMATS)
async def test_the_first_token_timeout_does_not_cut_a_stream_that_started(
    fake: FakeProviders, fmt: str
) -> None:
    eng = fake.engine(fmt, first_token_timeout_ms=300)
    fake.script(fmt, Script(tokens=4, interval=0.15))
    assert len(texts(await run(eng, request()))) == 4
    fake.script(fmt, Script(tokens=4, first_token_delay=0.6))
    error, _ = await failure(eng, request())
    assert error.kind is ErrorKind.TIMEOUT


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_stream_that_stalls_after_its_first_tokens_fails_at_the_idle_timeout(
    fake: FakeProviders, fmt: str
) -> None:
    eng = fake.engine(fmt, idle_timeout_ms=500, total_timeout_ms=60_000)
    fake.script(fmt, Script(tokens=6, stall_after=2))
    error, seen = await failure(eng, request())
    assert texts(seen) == ["w0 ", "w1 "]
    assert error.kind is ErrorKind.TIMEOUT
    assert "stalled" in error.message
    assert error.usage is not None
    assert error.usage.output_tokens == 2
    # A stream whose chunks keep coming within the idle timeout is not cut by it.
    fake.script(fmt, Script(tokens=4, interval=0.1))
    assert len(texts(await run(eng, request()))) == 4


@pytest.mark.parametrize("fmt", FORMATS)
async def test_the_total_timeout_ends_a_slow_stream_with_its_partial_usage(
    fake: FakeProviders, fmt: str
) -> None:
    eng = fake.engine(fmt, total_timeout_ms=500)
    fake.script(fmt, Script(tokens=20, interval=0.1))
    error, seen = await failure(eng, request())
    assert error.kind is ErrorKind.TIMEOUT
    assert 0 < len(texts(seen)) < 20
    assert error.usage is not None
    assert error.usage.output_tokens == len(texts(seen))


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_provider_that_is_not_listening_is_unavailable(
    fake: FakeProviders, fmt: str
) -> None:
    (port,) = free_ports(1)
    url = fake.base_url(fmt).replace(str(fake.port), str(port))
    eng = fake.engine(fmt, base_url=url)
    error, _ = await failure(eng, request())
    assert error.kind is ErrorKind.UNAVAILABLE
    assert texts(await run(fake.engine(fmt), request()))


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "copilot"])
async def test_a_wrong_key_is_refused_and_never_shown(fake: FakeProviders, fmt: str) -> None:
    wrong = "sk-wrong-key-that-must-never-be-shown"
    eng = fake.engine(fmt, FakeCredentials(wrong))
    error, _ = await failure(eng, request())
    assert error.kind is ErrorKind.UNAUTHENTICATED
    assert error.http_status == 401
    assert wrong not in error.message
    assert wrong not in str(error)
    assert not fake.requests(fmt)[-1].authorized


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("fmt", FORMATS)
async def test_the_finish_names_the_model_that_answered(
    fake: FakeProviders, fmt: str, stream: bool
) -> None:
    fake.script(fmt, Script(response_model=f"{fmt}-model-2025-01-01"))
    events = await run(fake.engine(fmt), request(stream=stream))
    assert last(events).model == f"{fmt}-model-2025-01-01"
    # Unnamed by the provider: the request's model as the fake echoes it.
    events = await run(fake.engine(fmt), request(stream=stream))
    assert last(events).model == f"{fmt}-model"
