"""Fake LLM providers: ONE real aiohttp server on 127.0.0.1 (an ephemeral port) that speaks
the wire formats of the engines, each on its own route:

| format | route | credential |
|---|---|---|
| openai | `POST /v1/chat/completions` | `Authorization: Bearer <api_key>` |
| copilot | `POST /copilot/chat/completions` | `Bearer <token>`, one of `copilot_tokens` |
| anthropic | `POST /v1/messages` | `x-api-key: <api_key>`, `anthropic-version` |
| ollama | `POST /api/chat` (NDJSON) | none, or `Bearer <ollama_key>` when set |

(copilot is OpenAI-shaped; its tokens stand for Entra ID access tokens.)

A wrong or missing credential answers 401 with the format's error body. What a request gets
is scripted per format: `script(format, *scripts)` queues `Script`s that the next requests
take in order; when the queue is empty the format's default applies. A script answers N
tokens (`w0 `, `w1 `, …) paced by a delay, or fails: 429 with Retry-After, 500, 401, 400
context-length, 529 overloaded, a content-policy refusal (OpenAI's, Azure's, Anthropic's
wording), 404 for a model the provider lacks; or hangs; or cuts the connection after N
tokens; or stalls after N tokens (the connection kept open, nothing more sent); or sends a
malformed chunk or an error event after N tokens; or omits usage; or answers a given JSON
body as it is; or is a model with a context window, refusing what exceeds it with the
format's real context-length error; or answers a given text (JSON, say) in small pieces; or
calls tools — after its text, each call's arguments in fragments of `FRAGMENT_CHARS` as the
format streams them (OpenAI's `delta.tool_calls`, Anthropic's `tool_use` blocks with
`input_json_delta`, Ollama's whole `message.tool_calls`) — and may cut the connection in the
middle of their arguments. A request to a path the fake does not serve gets
aiohttp's own 404 (a wrong `base_url`), and is not in `seen`. Streamed and complete
(`stream: false`) answers both
follow the script.

Everything is counted: each request (`seen`), the tokens each produced on the wire, and the
usage each reported (in Saga's terms: input including cached, output, cached), so a test can
compare what Saga billed with what the provider counted. Input tokens are the words of the
system prompt and messages.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from services.common.config import ProviderConfig
from services.router.engines import engine_for
from services.router.engines.base import Caller, CredentialLookup, Engine

FORMATS = ("openai", "copilot", "anthropic", "ollama")

FAILURE_STATUS = {
    "rate_limited": 429,
    "server_error": 500,
    "unauthorized": 401,
    "forbidden": 403,
    "context_length": 400,
    "bad_request": 400,
    "overloaded": 529,
    "timeout": 504,
    "request_timeout": 408,
    "too_large": 413,
    "content_policy": 400,
    "azure_content_filter": 400,
    "model_not_found": 404,
}


def token(i: int) -> str:
    """The text of token `i` of every answer."""
    return f"w{i} "


def answer_text(count: int) -> str:
    """The whole text of an answer of `count` tokens."""
    return "".join(token(i) for i in range(count))


EMBED_DIMENSIONS = 4
"""Length of the fake's vectors when a request asks for none."""


def embedding(text: str, size: int) -> list[float]:
    """The fake's vector of `text`: its word count, then its length, then 0.5s."""
    return [float(len(text.split())), float(len(text)), *[0.5] * (size - 2)][:size]


FRAGMENT_CHARS = 6
"""Characters per streamed piece of a scripted text or of a tool call's arguments."""


def fragments(text: str) -> list[str]:
    """`text` in the pieces the fake streams it in."""
    return [text[i : i + FRAGMENT_CHARS] for i in range(0, len(text), FRAGMENT_CHARS)]


@dataclass(frozen=True)
class FakeCall:
    """A tool call a script makes: the tool's name and its arguments' JSON text."""

    name: str
    arguments: str = "{}"


@dataclass(frozen=True)
class Script:
    """What the fake does for one request."""

    tokens: int = 5
    interval: float = 0.0
    """Seconds between two tokens."""
    first_token_delay: float = 0.0
    fail: str = ""
    """Answer an HTTP error instead: one of FAILURE_STATUS's keys."""
    retry_after: str = "2"
    """The Retry-After header of a 429 or 529 ("" = none)."""
    hang: bool = False
    """Accept the request and never answer (until the fake stops)."""
    cut_after: int | None = None
    """Stream this many tokens, then close the connection mid-stream."""
    stall_after: int | None = None
    """Stream this many tokens, then send nothing more, the connection kept open (until the
    fake stops)."""
    malformed_after: int | None = None
    """Stream this many tokens, then a chunk that does not parse."""
    error_after: int | None = None
    """Stream this many tokens, then the format's error event (`fail`, default overloaded)."""
    usage: bool = True
    """Report usage (False: omit it everywhere)."""
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    """anthropic: input tokens the answer reports written to the prompt cache
    (`cache_creation_input_tokens`, with `cache_creation.ephemeral_5m_input_tokens`)."""
    response_model: str = ""
    """The model the answer names ("" = the model requested), as providers name a dated
    snapshot of an alias."""
    reply: Any = None
    """A JSON body to answer as it is, with status 200 (odd answers, for defensive parsing)."""
    hold_until_open: int = 0
    """Hold the request until this many held requests are open at once (counting this one),
    then answer as scripted: requests that are answered at all were concurrent, which proves
    concurrency without timing. One held longer than 10 s answers 503."""
    text: str | None = None
    """Answer this text (in pieces of FRAGMENT_CHARS, each a token) instead of `tokens`
    words."""
    tool_calls: tuple[FakeCall, ...] = ()
    """Call these tools after the text (set `tokens=0` for calls alone)."""
    tool_cut_after: int | None = None
    """Stream this many fragments of the calls' arguments (all calls together), then close
    the connection mid-call (openai, anthropic)."""
    context_window: int = 0
    """Be a model with this many tokens of context (0: no limit): a request whose input words
    (plus its max tokens, when it sets them) exceed it gets HTTP 400 with the format's own
    context-length error naming the window and the request's counts, as the providers word
    it; a request that fits is answered as scripted."""


@dataclass
class Seen:
    """One request the fake received, and what it answered."""

    format: str
    authorized: bool
    body: dict[str, Any]
    headers: dict[str, str]
    status: int = 200
    streamed: bool = False
    tokens: int = 0
    """Tokens of text sent on the wire."""
    usage: tuple[int, int, int] | None = None
    """(input including cached, output, cached) as reported, or None."""
    completed: bool = False
    """The answer ended normally (not cut, hung, malformed or failed)."""
    disconnected: bool = False
    """The caller closed the connection while the answer streamed."""


def _words(body: dict[str, Any], fmt: str) -> int:
    words = len(str(body.get("system") or "").split()) if fmt == "anthropic" else 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            words += len(content.split())
    return words


def _max_tokens(body: dict[str, Any], fmt: str) -> int | None:
    if fmt == "ollama":
        value = (body.get("options") or {}).get("num_predict")
    else:
        value = body.get("max_tokens") or body.get("max_completion_tokens")
    return value if isinstance(value, int) and value > 0 else None


def _context_error(fmt: str, window: int, prompt: int, completion: int) -> dict[str, Any]:
    """The context-length error body of `fmt` for a request of `prompt` input tokens and
    `completion` max tokens over a `window`, worded as the provider words it."""
    if fmt == "anthropic":
        if prompt > window:
            message = f"prompt is too long: {prompt} tokens > {window} maximum"
        else:
            message = (
                f"input length and `max_tokens` exceed context limit: {prompt} + {completion}"
                f" > {window}, decrease input length or `max_tokens` and try again"
            )
        return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    message = f"This model's maximum context length is {window} tokens. However, " + (
        f"your messages resulted in {prompt} tokens. Please reduce the length of the messages."
        if prompt > window
        else f"you requested {prompt + completion} tokens ({prompt} in the messages, "
        f"{completion} in the completion). Please reduce the length of the messages or "
        "completion."
    )
    if fmt == "ollama":
        return {"error": message}
    error = {
        "message": message,
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
    return {"error": error}


class FakeProviders:
    """The fake server (see the module docstring). Use `async with FakeProviders() as f`."""

    def __init__(
        self,
        api_key: str = "sk-fake-0123456789abcdef",
        *,
        ollama_key: str = "",
        copilot_tokens: set[str] | None = None,
    ) -> None:
        self.api_key = api_key
        self.ollama_key = ollama_key
        self.copilot_tokens: set[str] = set(copilot_tokens or ())
        self.defaults: dict[str, Script] = {f: Script() for f in FORMATS}
        self.seen: list[Seen] = []
        self._queues: dict[str, deque[Script]] = {f: deque() for f in FORMATS}
        self._release = asyncio.Event()
        self._held = 0
        self._batch = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._engines: list[Engine] = []
        self.port = 0

    async def __aenter__(self) -> FakeProviders:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen on 127.0.0.1, on a port the OS picks."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._route("openai"))
        app.router.add_post("/copilot/chat/completions", self._route("copilot"))
        app.router.add_post("/v1/messages", self._route("anthropic"))
        app.router.add_post("/api/chat", self._route("ollama"))
        app.router.add_post("/v1/embeddings", self._embeddings("openai"))
        app.router.add_post("/api/embed", self._embeddings("ollama"))
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Close the engines built here, release hung requests and stop listening."""
        await self.close_engines()
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        return f"http://127.0.0.1:{self.port}"

    def base_url(self, fmt: str) -> str:
        """The `base_url` a provider of format `fmt` is configured with."""
        return {
            "openai": f"{self.url}/v1",
            "copilot": f"{self.url}/copilot",
            "anthropic": self.url,
            "ollama": self.url,
        }[fmt]

    def provider(self, fmt: str, **overrides: Any) -> ProviderConfig:
        """A provider of kind `fmt` pointing at this fake (ollama without a credential)."""
        fields: dict[str, Any] = {
            "name": f"fake-{fmt}",
            "kind": fmt,
            "model": f"{fmt}-model",
            "base_url": self.base_url(fmt),
            "credential": {"ollama": "none", "copilot": "oauth_user"}.get(fmt, "api_key"),
        }
        return ProviderConfig(**(fields | overrides))

    def engine(self, fmt: str, lookup: CredentialLookup | None = None, **overrides: Any) -> Engine:
        """An engine of `fmt` against this fake (closed by `close_engines`); `lookup`
        defaults to one giving the right secret (the API key; a copilot token);
        `overrides` change the provider's configuration."""
        if lookup is None:
            default = next(iter(sorted(self.copilot_tokens)), "") if fmt == "copilot" else ""
            lookup = FakeCredentials(default or self.api_key)
        self._engines.append(engine_for(self.provider(fmt, **overrides), lookup))
        return self._engines[-1]

    async def close_engines(self) -> None:
        """Close the engines `engine` built."""
        for built in self._engines:
            await built.close()
        self._engines.clear()

    def script(self, fmt: str, *scripts: Script) -> None:
        """Queue what the next requests of format `fmt` get, in order."""
        self._queues[fmt].extend(scripts)

    def requests(self, fmt: str | None = None) -> list[Seen]:
        """The requests received (of one format)."""
        return [s for s in self.seen if fmt is None or s.format == fmt]

    def tokens_produced(self, fmt: str | None = None) -> int:
        """Tokens of text sent on the wire, in all."""
        return sum(s.tokens for s in self.requests(fmt))

    def reset(self) -> None:
        """Forget requests, queued scripts and default changes."""
        self.seen.clear()
        for fmt in FORMATS:
            self._queues[fmt].clear()
            self.defaults[fmt] = Script()

    # --- serving ---------------------------------------------------------------------

    async def _hold(self, count: int) -> bool:
        """Wait until `count` held requests are open at once (they are then released
        together, and the next ones wait for a batch of their own); False after 10 s."""
        batch = self._batch
        self._held += 1
        if self._held >= count:
            self._held = 0
            self._batch = asyncio.Event()
            batch.set()
        try:
            await asyncio.wait_for(batch.wait(), 10)
        except TimeoutError:
            if batch is self._batch:
                self._held -= 1
            return False
        return True

    def _embeddings(self, fmt: str) -> Callable[[web.Request], Any]:
        """The embeddings endpoint of `fmt` (openai: `data[]` by index and `usage`; ollama:
        `embeddings` and `prompt_eval_count`): `EMBED_DIMENSIONS` numbers per input (or the
        asked `dimensions`), each input's from its words; usage = the inputs' words. The
        format's queue scripts it too: `fail` answers that HTTP error."""

        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.json()
            seen = Seen(fmt, self._authorized(fmt, request), body, dict(request.headers))
            self.seen.append(seen)
            queue = self._queues[fmt]
            script = queue.popleft() if queue else self.defaults[fmt]
            if not seen.authorized:
                return self._error(seen, 401, "unauthorized", request.headers)
            if script.fail:
                return self._error(
                    seen, FAILURE_STATUS[script.fail], script.fail, request.headers, script
                )
            inputs = body.get("input") or []
            size = body.get("dimensions") or EMBED_DIMENSIONS
            vectors = [embedding(str(text), size) for text in inputs]
            words = sum(len(str(text).split()) for text in inputs)
            seen.usage, seen.completed = (words, 0, 0), True
            if fmt == "ollama":
                return web.json_response(
                    {"model": body.get("model"), "embeddings": vectors, "prompt_eval_count": words}
                )
            return web.json_response(
                {
                    "object": "list",
                    "model": body.get("model"),
                    "data": [
                        {"object": "embedding", "index": i, "embedding": v}
                        for i, v in reversed(list(enumerate(vectors)))  # order by index, not place
                    ],
                    "usage": {"prompt_tokens": words, "total_tokens": words},
                }
            )

        return handle

    def _route(self, fmt: str) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._handle(fmt, request)

        return handle

    def _authorized(self, fmt: str, request: web.Request) -> bool:
        bearer = request.headers.get("Authorization", "")
        if fmt == "openai":
            return bearer == f"Bearer {self.api_key}"
        if fmt == "copilot":
            return bearer.startswith("Bearer ") and bearer[7:] in self.copilot_tokens
        if fmt == "anthropic":
            # An API key as `x-api-key` (what the engine sends) or as a bearer (what the
            # official SDK sends since its 2.x releases).
            return request.headers.get("x-api-key") == self.api_key or (
                bearer == f"Bearer {self.api_key}"
            )
        return not self.ollama_key or bearer == f"Bearer {self.ollama_key}"

    async def _handle(self, fmt: str, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        seen = Seen(
            fmt,
            self._authorized(fmt, request),
            body if isinstance(body, dict) else {},
            dict(request.headers),
        )
        self.seen.append(seen)
        queue = self._queues[fmt]
        script = queue.popleft() if queue else self.defaults[fmt]
        if not seen.authorized:
            return self._error(seen, 401, "unauthorized", request.headers)
        if fmt == "anthropic" and "anthropic-version" not in request.headers:
            return self._error(seen, 400, "bad_request", request.headers)
        if script.hold_until_open and not await self._hold(script.hold_until_open):
            seen.status = 503
            return web.Response(status=503)
        if script.hang:
            await self._release.wait()
            seen.status = 503
            return web.Response(status=503)
        if script.reply is not None:
            seen.completed = True
            return web.json_response(script.reply)
        if script.fail and script.error_after is None:
            await self._sleep(script.first_token_delay)
            return self._error(
                seen, FAILURE_STATUS[script.fail], script.fail, request.headers, script
            )
        words = _words(seen.body, fmt)
        limit = _max_tokens(seen.body, fmt)
        if script.context_window and words + (limit or 0) > script.context_window:
            seen.status = 400
            body = _context_error(fmt, script.context_window, words, limit or 0)
            return web.json_response(body, status=400)
        natural = len(fragments(script.text)) if script.text is not None else script.tokens
        count = min(natural, limit) if limit else natural
        length = count < natural
        streamed = seen.body.get("stream", fmt == "ollama") is not False
        seen.streamed = streamed
        if not streamed:
            await self._sleep(script.first_token_delay + script.interval * max(0, count - 1))
            seen.tokens = count
            return self._complete(fmt, seen, script, words, count, length)
        try:
            return await self._stream(fmt, request, seen, script, words, count, length)
        except (asyncio.CancelledError, ConnectionResetError):
            # aiohttp cancels the handler (or a write fails) when the client goes away.
            seen.disconnected = True
            raise

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    # --- errors ------------------------------------------------------------------------

    def _error_body(self, fmt: str, kind: str, presented: str) -> Any:
        messages = {
            "rate_limited": "Rate limit reached for requests",
            "server_error": "The server had an error while processing your request.",
            "unauthorized": f"Incorrect API key provided: {presented}",
            "forbidden": "You are not allowed to use this model.",
            "context_length": "This model's maximum context length is 8192 tokens. However, "
            "your messages resulted in 9000 tokens.",
            "bad_request": "Invalid request.",
            "overloaded": "Overloaded",
            "timeout": "Gateway timeout",
            "request_timeout": "Request timeout",
            "too_large": "Request entity too large",
            # OpenAI's safety system (its images and moderated chat answer this wording).
            "content_policy": "Your request was rejected as a result of our safety system. "
            "Your prompt may contain text that is not allowed by our safety system.",
            # Azure OpenAI's content filter on the prompt.
            "azure_content_filter": "The response was filtered due to the prompt triggering "
            "Azure OpenAI's content management policy. Please modify your prompt and retry.",
            "model_not_found": "The model `gpt-nope` does not exist or you do not have access "
            "to it.",
        }
        message = messages[kind]
        if fmt == "anthropic":
            types = {
                "rate_limited": "rate_limit_error",
                "server_error": "api_error",
                "unauthorized": "authentication_error",
                "forbidden": "permission_error",
                "context_length": "invalid_request_error",
                "bad_request": "invalid_request_error",
                "overloaded": "overloaded_error",
                "timeout": "timeout_error",
                "request_timeout": "timeout_error",
                "too_large": "request_too_large",
                "content_policy": "invalid_request_error",
                "azure_content_filter": "invalid_request_error",
                "model_not_found": "not_found_error",
            }
            if kind == "context_length":
                message = "prompt is too long: 210000 tokens > 200000 maximum"
            if kind in ("content_policy", "azure_content_filter"):
                message = "Output blocked by content filtering policy"
            if kind == "model_not_found":
                message = "model: claude-nope"
            return {"type": "error", "error": {"type": types[kind], "message": message}}
        if fmt == "ollama":
            return {"error": message}
        codes = {
            "rate_limited": ("requests", "rate_limit_exceeded"),
            "server_error": ("server_error", None),
            "unauthorized": ("invalid_request_error", "invalid_api_key"),
            "forbidden": ("invalid_request_error", "model_not_allowed"),
            "context_length": ("invalid_request_error", "context_length_exceeded"),
            "bad_request": ("invalid_request_error", None),
            "overloaded": ("server_error", "overloaded"),
            "timeout": ("server_error", "timeout"),
            "request_timeout": ("server_error", "timeout"),
            "too_large": ("invalid_request_error", None),
            "content_policy": ("invalid_request_error", "content_policy_violation"),
            "model_not_found": ("invalid_request_error", "model_not_found"),
        }
        if kind == "azure_content_filter":
            # Azure's shape: no type, the prompt as param, the per-category verdicts inside.
            return {
                "error": {
                    "message": message,
                    "type": None,
                    "param": "prompt",
                    "code": "content_filter",
                    "status": 400,
                    "innererror": {
                        "code": "ResponsibleAIPolicyViolation",
                        "content_filter_result": {
                            "hate": {"filtered": False, "severity": "safe"},
                            "self_harm": {"filtered": False, "severity": "safe"},
                            "sexual": {"filtered": False, "severity": "safe"},
                            "violence": {"filtered": True, "severity": "medium"},
                        },
                    },
                }
            }
        kind_type, code = codes[kind]
        return {"error": {"message": message, "type": kind_type, "param": None, "code": code}}

    def _error(
        self,
        seen: Seen,
        status: int,
        kind: str,
        headers: Any,
        script: Script | None = None,
    ) -> web.Response:
        seen.status = status
        presented = headers.get("x-api-key") or headers.get("Authorization", "")[7:]
        response_headers = {}
        if script is not None and status in (429, 529) and script.retry_after:
            response_headers["Retry-After"] = script.retry_after
        return web.json_response(
            self._error_body(seen.format, kind, presented), status=status, headers=response_headers
        )

    # --- complete answers --------------------------------------------------------------

    def _usage(self, script: Script, words: int, count: int) -> tuple[int, int, int] | None:
        count += sum(len(fragments(c.arguments)) for c in script.tool_calls)
        return (words, count, min(script.cached_tokens, words)) if script.usage else None

    def _complete(
        self, fmt: str, seen: Seen, script: Script, words: int, count: int, length: bool
    ) -> web.Response:
        text = "".join(_piece(script, i) for i in range(count))
        usage = self._usage(script, words, count)
        seen.usage = usage
        seen.completed = True
        model = script.response_model or seen.body.get("model", "")
        calls = script.tool_calls
        if fmt == "anthropic":
            content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
            content += [
                {
                    "type": "tool_use",
                    "id": f"toolu_fake_{k}",
                    "name": c.name,
                    "input": json.loads(c.arguments),
                }
                for k, c in enumerate(calls)
            ]
            stop = "tool_use" if calls else "max_tokens" if length else "end_turn"
            body: dict[str, Any] = {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content or [{"type": "text", "text": ""}],
                "stop_reason": stop,
            }
            if usage:
                body["usage"] = self._anthropic_usage(usage, _written(script, usage))
            return web.json_response(body)
        if fmt == "ollama":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if calls:
                message["tool_calls"] = _ollama_calls(calls)
            body = {
                "model": model,
                "created_at": "2025-01-01T00:00:00Z",
                "message": message,
                "done": True,
                "done_reason": "length" if length else "stop",
            }
            if usage:
                body |= {"prompt_eval_count": usage[0], "eval_count": usage[1]}
            return web.json_response(body)
        answer: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            answer["tool_calls"] = [
                {
                    "id": f"call_fake_{k}",
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for k, c in enumerate(calls)
            ]
        body = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": answer,
                    "finish_reason": "tool_calls" if calls else "length" if length else "stop",
                }
            ],
        }
        if usage:
            body["usage"] = self._openai_usage(usage)
        return web.json_response(body)

    @staticmethod
    def _openai_usage(usage: tuple[int, int, int]) -> dict[str, Any]:
        return {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": usage[0] + usage[1],
            "prompt_tokens_details": {"cached_tokens": usage[2]},
        }

    @staticmethod
    def _anthropic_usage(usage: tuple[int, int, int], written: int = 0) -> dict[str, Any]:
        # Anthropic's input_tokens exclude cache reads and writes.
        return {
            "input_tokens": usage[0] - usage[2] - written,
            "cache_read_input_tokens": usage[2],
            "cache_creation_input_tokens": written,
            "cache_creation": {
                "ephemeral_5m_input_tokens": written,
                "ephemeral_1h_input_tokens": 0,
            },
            "output_tokens": usage[1],
        }

    # --- streams -----------------------------------------------------------------------

    async def _stream(
        self,
        fmt: str,
        request: web.Request,
        seen: Seen,
        script: Script,
        words: int,
        count: int,
        length: bool,
    ) -> web.StreamResponse:
        content_type = "application/x-ndjson" if fmt == "ollama" else "text/event-stream"
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        frames = _Frames(fmt, script.response_model or seen.body.get("model", ""))
        usage = self._usage(script, words, count)
        frames.written = _written(script, usage)
        await response.write(frames.start(usage))
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(count):
            if i == script.cut_after:
                return await self._cut(request, response)
            if i == script.stall_after:
                await self._release.wait()
                return await self._cut(request, response)
            if i == script.malformed_after:
                await response.write(frames.malformed())
                return await self._cut(request, response)
            if i == script.error_after:
                failure = self._error_body(fmt, script.fail or "overloaded", "")
                await response.write(frames.error(failure))
                await response.write_eof()
                return response
            due = started + script.first_token_delay + i * script.interval
            await self._sleep(due - loop.time())
            await response.write(frames.token(_piece(script, i)))
            seen.tokens += 1
        if count == script.cut_after:
            return await self._cut(request, response)
        if count == script.malformed_after:
            await response.write(frames.malformed())
            return await self._cut(request, response)
        sent = 0  # argument fragments, against tool_cut_after
        for k, call in enumerate(script.tool_calls):
            await response.write(frames.tool_start(k, call))
            for piece in fragments(call.arguments) if fmt != "ollama" else []:
                if sent == script.tool_cut_after:
                    return await self._cut(request, response)
                await response.write(frames.tool_arguments(k, piece))
                seen.tokens += 1
                sent += 1
        if script.tool_calls and sent == script.tool_cut_after:
            return await self._cut(request, response)
        seen.usage = usage
        seen.completed = True
        frames.called = bool(script.tool_calls)
        await response.write(frames.end(usage, length, include_usage=_include_usage(seen.body)))
        await response.write_eof()
        return response

    async def _cut(self, request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        """Close the connection mid-stream (the data already written is flushed first)."""
        transport = request.transport
        if transport is not None:
            transport.close()
        return response


def _piece(script: Script, i: int) -> str:
    """Token `i` of a scripted answer's text."""
    return fragments(script.text)[i] if script.text is not None else token(i)


def _ollama_calls(calls: tuple[FakeCall, ...]) -> list[dict[str, Any]]:
    return [{"function": {"name": c.name, "arguments": json.loads(c.arguments)}} for c in calls]


def _written(script: Script, usage: tuple[int, int, int] | None) -> int:
    """The cache writes an answer reports: never more than the input left after reads."""
    return 0 if usage is None else min(script.cache_write_tokens, usage[0] - usage[2])


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


class _Frames:
    """The bytes of one streamed answer in one format."""

    def __init__(self, fmt: str, model: str) -> None:
        self.fmt = fmt
        self.model = model
        self.written = 0  # anthropic: cache writes among the input tokens
        self.called = False  # the answer made tool calls (its finish reason says so)
        self._open = 0  # anthropic: the index of the block not stopped yet

    def tool_start(self, k: int, call: FakeCall) -> bytes:
        """The opening of tool call `k` (ollama: the whole call)."""
        if self.fmt == "anthropic":
            out = self._sse(
                {"type": "content_block_stop", "index": self._open}, "content_block_stop"
            )
            self._open = k + 1
            return out + self._sse(
                {
                    "type": "content_block_start",
                    "index": k + 1,
                    "content_block": {
                        "type": "tool_use",
                        "id": f"toolu_fake_{k}",
                        "name": call.name,
                        "input": {},
                    },
                },
                "content_block_start",
            )
        if self.fmt == "ollama":
            line = {
                "model": self.model,
                "created_at": "2025-01-01T00:00:00Z",
                "message": {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": _ollama_calls((call,)),
                },
                "done": False,
            }
            return (json.dumps(line) + "\n").encode()
        return self._openai_chunk(
            {
                "tool_calls": [
                    {
                        "index": k,
                        "id": f"call_fake_{k}",
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ]
            }
        )

    def tool_arguments(self, k: int, piece: str) -> bytes:
        """A fragment of tool call `k`'s arguments."""
        if self.fmt == "anthropic":
            return self._sse(
                {
                    "type": "content_block_delta",
                    "index": k + 1,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                },
                "content_block_delta",
            )
        return self._openai_chunk({"tool_calls": [{"index": k, "function": {"arguments": piece}}]})

    def _sse(self, data: Any, event: str = "") -> bytes:
        head = f"event: {event}\n" if event else ""
        return f"{head}data: {json.dumps(data)}\n\n".encode()

    def _openai_chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._sse(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    def start(self, usage: tuple[int, int, int] | None) -> bytes:
        if self.fmt == "anthropic":
            message: dict[str, Any] = {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": self.model,
                "stop_reason": None,
            }
            if usage:
                message["usage"] = {
                    **FakeProviders._anthropic_usage(usage, self.written),
                    "output_tokens": 1,
                }
            return (
                self._sse({"type": "message_start", "message": message}, "message_start")
                + self._sse(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                    "content_block_start",
                )
                + self._sse({"type": "ping"}, "ping")
            )
        if self.fmt == "ollama":
            return b""
        return self._openai_chunk({"role": "assistant", "content": ""})

    def token(self, text: str) -> bytes:
        if self.fmt == "anthropic":
            return self._sse(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                },
                "content_block_delta",
            )
        if self.fmt == "ollama":
            line = {
                "model": self.model,
                "created_at": "2025-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": text},
                "done": False,
            }
            return (json.dumps(line) + "\n").encode()
        return self._openai_chunk({"content": text})

    def malformed(self) -> bytes:
        if self.fmt == "anthropic":
            return b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta\n\n'
        if self.fmt == "ollama":
            return b'{"message": {"content": "w\n'
        return b'data: {"choices": [{"delta": {"content": "w\n\n'

    def error(self, body: Any) -> bytes:
        if self.fmt == "anthropic":
            return self._sse(body, "error")
        if self.fmt == "ollama":
            return (json.dumps(body) + "\n").encode()
        return self._sse(body)

    def end(
        self, usage: tuple[int, int, int] | None, length: bool, *, include_usage: bool
    ) -> bytes:
        if self.fmt == "anthropic":
            stop = "tool_use" if self.called else "max_tokens" if length else "end_turn"
            delta: dict[str, Any] = {"type": "message_delta", "delta": {"stop_reason": stop}}
            if usage:
                delta["usage"] = {"output_tokens": usage[1]}
            return (
                self._sse({"type": "content_block_stop", "index": self._open}, "content_block_stop")
                + self._sse(delta, "message_delta")
                + self._sse({"type": "message_stop"}, "message_stop")
            )
        if self.fmt == "ollama":
            line: dict[str, Any] = {
                "model": self.model,
                "created_at": "2025-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": ""},
                "done": True,
                "done_reason": "length" if length else "stop",
            }
            if usage:
                line |= {"prompt_eval_count": usage[0], "eval_count": usage[1]}
            return (json.dumps(line) + "\n").encode()
        out = self._openai_chunk(
            {}, "tool_calls" if self.called else "length" if length else "stop"
        )
        if usage and include_usage:
            out += self._sse(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": self.model,
                    "choices": [],
                    "usage": FakeProviders._openai_usage(usage),
                }
            )
        return out + b"data: [DONE]\n\n"


class FakeCredentials:
    """A credential lookup for engine tests (what `ProviderCredentials.lookup` gives the
    router): hands out `secrets[0]`; told a secret is stale, moves on to the next one when
    there is one (a rotated key); raises `error` when set. Records every call."""

    def __init__(self, *secrets: str, error: Exception | None = None) -> None:
        self.secrets = list(secrets)
        self.error = error
        self.calls: list[tuple[Caller, str]] = []
        self._index = 0

    async def __call__(self, caller: Caller, *, stale: str = "") -> str:
        """The current secret (see the class docstring)."""
        self.calls.append((caller, stale))
        if self.error is not None:
            raise self.error
        if stale and stale == self.secrets[self._index] and self._index + 1 < len(self.secrets):
            self._index += 1
        return self.secrets[self._index]
