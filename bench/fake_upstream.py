"""A lean fake OpenAI-compatible upstream for the chain benchmark, run in its own process.

`POST /v1/chat/completions` (also `/chat/completions`) answers every request with the same
`--tokens`-token text: with `"stream": true` as server-sent events (`data: {chunk}` per
token, a finish chunk, a usage chunk when `stream_options.include_usage` asks for it, then
`data: [DONE]`), tokens spaced by `--interval-ms` (0 = written back to back); otherwise one
`chat.completion` JSON object. Every chunk is serialised once at start, so the fake spends
as little CPU per stream as it can — it runs in its own process so that whatever it does
spend is never counted as the chain's.

    python -m bench.fake_upstream --port 8099 [--tokens 50] [--interval-ms 0]

It prints `READY <port>` on stdout once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json

from aiohttp import web

MODEL = "bench-model"


def token_text(i: int) -> str:
    """The `i`th token of every answer (distinct, so a lost or reordered token shows)."""
    return f"t{i} "


def answer_text(tokens: int) -> str:
    """The whole answer the fake gives with `tokens` tokens."""
    return "".join(token_text(i) for i in range(tokens))


def _event(payload: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _chunk(delta: dict[str, str], finish: str | None) -> dict[str, object]:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


class Upstream:
    """The prepared answers and the request handler."""

    def __init__(self, tokens: int, interval_ms: float) -> None:
        self.interval = interval_ms / 1000
        usage = {"prompt_tokens": 8, "completion_tokens": tokens, "total_tokens": 8 + tokens}
        self.chunks = [
            _event(
                _chunk(
                    {"role": "assistant", "content": token_text(0)}
                    if i == 0
                    else {"content": token_text(i)},
                    None,
                )
            )
            for i in range(tokens)
        ]
        self.finish = _event(_chunk({}, "stop"))
        self.usage = _event({**_chunk({}, None), "choices": [], "usage": usage})
        self.done = b"data: [DONE]\n\n"
        self.complete = json.dumps(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": MODEL,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer_text(tokens)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        ).encode()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """One chat completion, streamed or whole as the request asks."""
        body = await request.json()
        if not body.get("stream"):
            return web.Response(body=self.complete, content_type="application/json")
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        for chunk in self.chunks:
            await response.write(chunk)
            if self.interval:
                await asyncio.sleep(self.interval)
        await response.write(self.finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write(self.usage)
        await response.write(self.done)
        await response.write_eof()
        return response


async def serve(port: int, tokens: int, interval_ms: float) -> None:
    """Listen on loopback `port` until cancelled."""
    upstream = Upstream(tokens, interval_ms)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", upstream.handle)
    app.router.add_post("/chat/completions", upstream.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    print(f"READY {port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--interval-ms", type=float, default=0.0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.tokens, args.interval_ms))


if __name__ == "__main__":
    main()
