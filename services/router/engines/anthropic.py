"""`anthropic`: the Messages API.

`POST {base_url}/v1/messages` with `x-api-key` and `anthropic-version: 2023-06-01`; the
engine adds `/v1` itself, so `base_url` is the bare host (`https://api.anthropic.com`): a
trailing slash and a trailing `/v1` are dropped. The output limit goes in `max_tokens`; the
system prompt (and any system-role message) goes in the top-level `system` field. A stream
is server-sent events whose data carry their `type`: `message_start` (the message, with
`usage.input_tokens`, `cache_read_input_tokens`, `cache_creation_input_tokens`),
`content_block_start`, `content_block_delta` (`delta.type` `text_delta`: `delta.text`),
`content_block_stop`, `message_delta` (`delta.stop_reason`, cumulative
`usage.output_tokens`), `message_stop`, `ping` (keep-alive), and `error` (`{"type": "error",
"error": {"type": "overloaded_error", "message"}}`) — an error event may come after text.
COMPLETE mode reads one `message` object (`content[].text`, `stop_reason`, `usage`).

Usage: Anthropic's `input_tokens` exclude cache reads and writes; Saga's input tokens
include them (cache reads and writes are part of the input, each billed at its own price), so
input = input + cache reads + cache writes, cached = cache reads, cache writes =
`cache_creation_input_tokens` — the total over both cache lifetimes: the 1-hour writes that
`cache_creation.ephemeral_1h_input_tokens` counts (2x input at Anthropic, against 1.25x for
the default 5 minutes) are priced at the one configured write price, as Saga never asks for
the 1-hour lifetime. HTTP errors carry the same error
object; 529 is `overloaded_error`; a content-policy block is an `invalid_request_error`
worded "Output blocked by content filtering policy" (`http_errors`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

from services.router.engines.base import (
    EngineEvent,
    EngineRequest,
    FinishReason,
    ProviderError,
    ProviderUnavailable,
)
from services.router.engines.http import HttpEngine, as_dict, as_int, endpoint
from services.router.engines.http_errors import (
    error_for_status,
    is_content_filtered,
    is_context_length,
    shown,
)
from services.router.engines.progress import Progress
from services.router.engines.sse import sse_events

API_VERSION = "2023-06-01"

FINISH_REASONS = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "tool_use": FinishReason.STOP,
    "pause_turn": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "refusal": FinishReason.CONTENT_FILTER,
}

ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
"""The HTTP status each error type comes with (what an error event inside a stream means)."""


def report_usage(usage: Any, progress: Progress, *, output: bool) -> None:
    """Record an Anthropic `usage` object; its output count only when `output` (the count
    in `message_start` is a placeholder until `message_delta` gives the real one)."""
    usage = as_dict(usage)
    base = as_int(usage.get("input_tokens"))
    read = as_int(usage.get("cache_read_input_tokens")) or 0
    written = as_int(usage.get("cache_creation_input_tokens")) or 0
    progress.report(
        None if base is None else base + read + written,
        as_int(usage.get("output_tokens")) if output else None,
        read,
        written,
    )


class AnthropicEngine(HttpEngine):
    """The Messages API over HTTP (see the module docstring)."""

    def url(self) -> str:
        """`{base_url}/v1/messages`, a `/v1` already in base_url dropped."""
        return endpoint(self.provider.base_url, "/v1/messages", strip=("/v1",))

    def headers(self, secret: str) -> dict[str, str]:
        """The version header and the credential: an API key as `x-api-key`, an OAuth
        access token as a bearer."""
        headers = {"anthropic-version": API_VERSION}
        if secret and self.provider.credential.startswith("oauth"):
            headers["Authorization"] = f"Bearer {secret}"
        elif secret:
            headers["x-api-key"] = secret
        return headers

    def body(self, request: EngineRequest) -> dict[str, Any]:
        """The Messages request; system-role messages join the system prompt."""
        system = [request.system_prompt] if request.system_prompt else []
        system += [m.content for m in request.messages if m.role == "system"]
        body: dict[str, Any] = {
            "model": self.provider.model,
            "max_tokens": request.max_tokens,
            "messages": [
                {"role": m.role, "content": m.content}
                for m in request.messages
                if m.role != "system"
            ],
            "stream": request.stream,
        }
        if system:
            body["system"] = "\n\n".join(system)
        if request.temperature is not None:
            # Anthropic's range is 0..1; Saga's (OpenAI's) is 0..2.
            body["temperature"] = min(request.temperature, 1.0)
        if request.stop:
            body["stop_sequences"] = list(request.stop)
        # Seed and penalties it has not: the router never sends them here (ENGINE_FIELDS).
        if request.sampling.top_p is not None:
            body["top_p"] = request.sampling.top_p
        if request.sampling.end_user:
            body["metadata"] = {"user_id": request.sampling.end_user}
        return body

    def error_of(
        self, status: int, payload: Any, text: str, retry_after: float | None
    ) -> ProviderError:
        """`{"type": "error", "error": {"type", "message"}}`."""
        error = as_dict(as_dict(payload).get("error"))
        kind = str(error.get("type") or "")
        message = error.get("message")
        if not isinstance(message, str):
            message = text
        in_stream = status == 0
        if in_stream:
            status = ERROR_STATUS.get(kind, 500)
        return error_for_status(
            self.provider.name,
            status,
            shown(message),
            retry_after=retry_after,
            context_length=is_context_length(kind, message),
            content_filtered=is_content_filtered((kind,), message),
            provider_code=shown(kind),
            in_stream=in_stream,
        )

    def _event(self, data: str) -> dict[str, Any]:
        try:
            event = json.loads(data)
        except ValueError:
            raise self.malformed("stream event") from None
        if not isinstance(event, dict):
            raise self.malformed("stream event")
        return event

    async def read_stream(
        self, lines: AsyncIterator[str], progress: Progress
    ) -> AsyncGenerator[EngineEvent, None]:
        """Events until `message_stop` (a stream that ends after its stop reason without
        it is accepted; one that ends before it broke off)."""
        stop: str | None = None
        async with aclosing(sse_events(lines)) as events:
            async for sse in events:
                if not sse.data:
                    continue
                event = self._event(sse.data)
                kind = event.get("type") or sse.type
                if kind == "message_stop":
                    break
                if kind == "error":
                    raise self.error_of(0, event, sse.data, None)
                if kind == "message_start":
                    message = as_dict(event.get("message"))
                    progress.named(message.get("model"))
                    report_usage(message.get("usage"), progress, output=False)
                elif kind == "content_block_delta":
                    delta = as_dict(event.get("delta"))
                    text = delta.get("text")
                    if delta.get("type") == "text_delta" and isinstance(text, str) and text:
                        yield progress.text(text)
                elif kind == "message_delta":
                    report_usage(event.get("usage"), progress, output=True)
                    reason = as_dict(event.get("delta")).get("stop_reason")
                    if isinstance(reason, str) and reason:
                        stop = reason
            else:
                if stop is None:
                    raise ProviderUnavailable(
                        f"{self.provider.name}: the stream ended before the answer did"
                    )
        yield progress.finish(FINISH_REASONS.get(stop or "end_turn", FinishReason.STOP))

    def read_complete(self, payload: Any, progress: Progress) -> list[EngineEvent]:
        """One `message` object."""
        body = as_dict(payload)
        if body.get("type") == "error":
            raise self.error_of(0, body, "", None)
        content = body.get("content")
        if not isinstance(content, list):
            raise self.malformed("answer (no content)")
        text = "".join(
            block["text"]
            for block in content
            if isinstance(block, dict)
            and block.get("type") == "text"
            and isinstance(block.get("text"), str)
        )
        events: list[EngineEvent] = [progress.text(text)] if text else []
        report_usage(body.get("usage"), progress, output=True)
        progress.named(body.get("model"))
        reason = body.get("stop_reason")
        events.append(
            progress.finish(
                FINISH_REASONS.get(reason if isinstance(reason, str) else "", FinishReason.STOP)
            )
        )
        return events
