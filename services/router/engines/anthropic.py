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

Tools: `tools` as `{name, description, input_schema}`, `tool_choice` `{"type": "auto" |
"any" | "none" | "tool", "name"}` with `disable_parallel_tool_use` when parallel calls are
off; an assistant message's calls as `tool_use` content blocks (`{id, name, input}`) after
its text, and a tool result as a user message holding a `tool_result` block
(`tool_use_id`, `content`). A stream's call is a `content_block_start` of type `tool_use`
(id, name), then `content_block_delta`s of type `input_json_delta` (`partial_json`), then
`content_block_stop`; stop reason `tool_use`. Saga numbers the calls 0, 1, … in the order
their blocks start (Anthropic's block index counts text blocks too). The Messages API has
no JSON mode: a JSON response format without tools is a forced tool — one tool named after
the schema (`input_schema` = the schema; any object for a JSON object) and `tool_choice`
naming it — whose input is the answer's text, streamed as text; with tools too, or for a
schema that is not an object schema (tool inputs are objects), the schema is asked for in
the system prompt (`json_instruction`) and the router's check holds the answer to it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

from services.router.engines.base import (
    ChatMessage,
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
from services.router.engines.tools import (
    ToolCallDelta,
    ToolChoiceMode,
    json_instruction,
)

API_VERSION = "2023-06-01"

FINISH_REASONS = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "tool_use": FinishReason.TOOL_CALLS,
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


def forced_tool(request: EngineRequest) -> dict[str, Any] | None:
    """The tool that carries a JSON answer (see the module docstring), or None when the
    request has no JSON response format, has tools of its own, or its schema is not an
    object schema."""
    form = request.response_format
    if not form.is_json or request.tools:
        return None
    schema = form.schema() or {"type": "object"}
    if schema.get("type", "object") != "object":
        return None
    return {
        "name": form.name,
        "description": "Give the answer as this tool's input.",
        "input_schema": schema,
    }


def _content(m: ChatMessage) -> Any:
    if m.role == "tool":
        return [{"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}]
    if not m.tool_calls:
        return m.content
    blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
    blocks += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": json.loads(c.arguments_json)}
        for c in m.tool_calls
    ]
    return blocks


def _tool_choice(request: EngineRequest) -> dict[str, Any]:
    choice = request.tool_choice
    kinds = {
        ToolChoiceMode.AUTO: "auto",
        ToolChoiceMode.NONE: "none",
        ToolChoiceMode.REQUIRED: "any",
        ToolChoiceMode.NAMED: "tool",
    }
    out: dict[str, Any] = {"type": kinds[choice.mode]}
    if choice.mode is ToolChoiceMode.NAMED:
        out["name"] = choice.name
    if request.parallel_tool_calls is False and choice.mode is not ToolChoiceMode.NONE:
        out["disable_parallel_tool_use"] = True
    return out


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
                {"role": "user" if m.role == "tool" else m.role, "content": _content(m)}
                for m in request.messages
                if m.role != "system"
            ],
            "stream": request.stream,
        }
        if request.tools:
            body["tools"] = [
                {
                    "name": t.name,
                    "description": t.description,
                    "input_schema": t.parameters(),
                }
                for t in request.tools
            ]
            body["tool_choice"] = _tool_choice(request)
        if (forced := forced_tool(request)) is not None:
            body["tools"] = [forced]
            body["tool_choice"] = {"type": "tool", "name": forced["name"]}
        elif request.response_format.is_json:
            system.append(json_instruction(request.response_format))
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
        blocks = _Blocks(progress.request)
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
                elif kind == "content_block_start":
                    started = blocks.start(event)
                    if started is not None:
                        yield progress.tool(started)
                elif kind == "content_block_delta":
                    delta = as_dict(event.get("delta"))
                    text = delta.get("text")
                    if delta.get("type") == "text_delta" and isinstance(text, str) and text:
                        yield progress.text(text)
                    elif delta.get("type") == "input_json_delta":
                        piece = blocks.input(event)
                        if isinstance(piece, str):
                            yield progress.text(piece)
                        elif piece is not None:
                            yield progress.tool(piece)
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
        yield progress.finish(blocks.finish_reason(stop or "end_turn"))

    def read_complete(self, payload: Any, progress: Progress) -> list[EngineEvent]:
        """One `message` object."""
        body = as_dict(payload)
        if body.get("type") == "error":
            raise self.error_of(0, body, "", None)
        content = body.get("content")
        if not isinstance(content, list):
            raise self.malformed("answer (no content)")
        blocks = _Blocks(progress.request)
        text = ""
        calls: list[EngineEvent] = []
        for index, block in enumerate(content):
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                text += block["text"]
            elif block.get("type") == "tool_use":
                started = blocks.start({"index": index, "content_block": block})
                arguments = json.dumps(block.get("input") if block.get("input") else {})
                if started is None:
                    text += arguments  # the forced tool's input is the JSON answer
                else:
                    calls += [
                        progress.tool(started),
                        progress.tool(ToolCallDelta(started.index, arguments=arguments)),
                    ]
        events: list[EngineEvent] = [progress.text(text)] if text else []
        events += calls
        report_usage(body.get("usage"), progress, output=True)
        progress.named(body.get("model"))
        reason = body.get("stop_reason")
        events.append(
            progress.finish(blocks.finish_reason(reason if isinstance(reason, str) else ""))
        )
        return events


class _Blocks:
    """The content blocks of one answer: which are tool calls (numbered 0, 1, … as they
    start) and which is the forced tool carrying a JSON answer."""

    def __init__(self, request: EngineRequest) -> None:
        forced = forced_tool(request)
        self._forced = forced["name"] if forced is not None else None
        self._answer: int | None = None  # the block index of the forced tool
        self._calls: dict[int, int] = {}  # block index -> Saga's call index

    def start(self, event: dict[str, Any]) -> ToolCallDelta | None:
        """The first delta of a tool call a `content_block_start` opens (None for other
        blocks and for the forced tool)."""
        block = as_dict(event.get("content_block"))
        index = as_int(event.get("index"))
        if block.get("type") != "tool_use" or index is None:
            return None
        name, call_id = block.get("name"), block.get("id")
        if self._forced is not None and name == self._forced:
            self._answer = index
            return None
        self._calls[index] = len(self._calls)
        return ToolCallDelta(
            self._calls[index],
            call_id if isinstance(call_id, str) else "",
            name if isinstance(name, str) else "",
        )

    def input(self, event: dict[str, Any]) -> str | ToolCallDelta | None:
        """An `input_json_delta`'s fragment: answer text for the forced tool, a tool-call
        delta for a call, None for anything else."""
        index = as_int(event.get("index"))
        fragment = as_dict(event.get("delta")).get("partial_json")
        if index is None or not isinstance(fragment, str) or not fragment:
            return None
        if index == self._answer:
            return fragment
        if index in self._calls:
            return ToolCallDelta(self._calls[index], arguments=fragment)
        return None

    def finish_reason(self, stop: str) -> FinishReason:
        """The finish reason of `stop`; the forced tool's `tool_use` is a plain stop."""
        if stop == "tool_use" and not self._calls:
            return FinishReason.STOP
        return FINISH_REASONS.get(stop, FinishReason.STOP)
