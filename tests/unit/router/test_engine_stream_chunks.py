"""The HTTP engines read a stream as it arrives, a chunk at a time, and split its lines
themselves: however the provider's bytes are cut into writes — the whole answer at once,
byte by byte, CRLF line endings in 7-byte pieces, 64-byte pieces that split UTF-8
characters — an OpenAI stream built from the `openai` SDK's own `ChatCompletionChunk` type
yields the same text and usage; a line longer than the bound is refused, never buffered
without end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from openai.types.chat import ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import Choice, ChoiceDelta
from openai.types.completion_usage import CompletionUsage

from services.router.engines import http
from services.router.engines.base import ErrorKind, Finish, ProviderError, TextDelta
from tests.fakes.providers import FakeProviders
from tests.unit.router.test_engine_wire import request

WORDS = ["Sagas ", "run ", "on ", "rivers ", "— ", "ünïcödé ", "and ", "€ ", "signs"]


def chunk(index: int, content: str | None, finish: str | None = None) -> ChatCompletionChunk:
    return ChatCompletionChunk(
        id="chatcmpl-1",
        object="chat.completion.chunk",
        created=1,
        model="gpt-test",
        choices=[
            Choice(index=0, delta=ChoiceDelta(content=content), finish_reason=finish)  # type: ignore[arg-type]
        ],
        usage=None
        if finish is None
        else CompletionUsage(
            prompt_tokens=11, completion_tokens=len(WORDS), total_tokens=11 + len(WORDS)
        ),
    )


def answer(newline: bytes = b"\n") -> bytes:
    """The whole SSE body, as the OpenAI API frames it."""
    events = [chunk(i, w) for i, w in enumerate(WORDS)] + [chunk(len(WORDS), None, "stop")]
    body = b"".join(
        b"data: " + e.model_dump_json(exclude_unset=True).encode() + newline + newline
        for e in events
    )
    return body + b"data: [DONE]" + newline + newline


Cut = Callable[[bytes], list[bytes]]


def pieces(size: int) -> Cut:
    return lambda body: [body[i : i + size] for i in range(0, len(body), size)]


@asynccontextmanager
async def serve(body: bytes, cut: Cut) -> AsyncIterator[str]:
    async def completions(req: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(req)
        for piece in cut(body):
            await response.write(piece)
            await asyncio.sleep(0)  # each piece its own write on the wire
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("newline", "cut"),
    [
        (b"\n", lambda body: [body]),
        (b"\n", pieces(1)),
        (b"\r\n", pieces(7)),
        (b"\n", pieces(64)),
    ],
    ids=["one-write", "bytewise", "crlf-7", "64"],
)
async def test_a_stream_reads_the_same_however_its_bytes_are_cut(
    fake: FakeProviders, newline: bytes, cut: Cut
) -> None:
    async with serve(answer(newline), cut) as url:
        engine = fake.engine("openai", base_url=url)
        events = [e async for e in engine.stream(request())]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "".join(WORDS)
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert (finish.input_tokens, finish.output_tokens) == (11, len(WORDS))


async def test_a_line_longer_than_the_bound_is_refused(fake: FakeProviders) -> None:
    text = b"x" * (http.MAX_LINE_BYTES + 1)
    body = b'data: {"choices": [{"delta": {"content": "' + text + b'"}}]}\n\n'
    async with serve(body, pieces(1 << 16)) as url:
        engine = fake.engine("openai", base_url=url)
        with pytest.raises(ProviderError) as failed:
            async for _ in engine.stream(request()):
                pass
    assert failed.value.kind is ErrorKind.UNAVAILABLE
    assert f"longer than {http.MAX_LINE_BYTES} bytes" in failed.value.message
