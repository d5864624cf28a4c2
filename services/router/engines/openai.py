"""`openai`: any OpenAI-compatible chat completions endpoint (OpenAI, Azure OpenAI, vLLM,
Ollama's /v1, LM Studio).

`POST {base_url}/chat/completions` with `Authorization: Bearer <key>` (`api-key: <key>` for
an Azure OpenAI v1 endpoint, `https://<resource>.openai.azure.com/openai/v1`). `base_url`
includes the API's version path: `https://api.openai.com/v1`, `http://host:8000/v1` (vLLM),
`http://localhost:11434/v1` (Ollama). A trailing slash is dropped; a base_url with no path
at all gets `/v1` (`/openai/v1` on an Azure host); any other path is kept as written (Azure's
`/openai/deployments/<name>`, with its `?api-version=` query kept after the endpoint). The
output limit goes in `max_tokens`, or in `max_completion_tokens` when the provider's
`max_tokens_field` says so (OpenAI's reasoning models refuse `max_tokens`). Streaming asks for
`stream: true` and `stream_options.include_usage`, and reads server-sent events: `data:
{chunk}` with `choices[0].delta.content` and `choices[0].finish_reason`, then a last chunk
with `usage` and no choices, then `data: [DONE]`. COMPLETE mode reads one JSON answer
(`choices[0].message.content`, `usage`). Usage: `prompt_tokens`, `completion_tokens`,
`prompt_tokens_details.cached_tokens` (cached tokens are part of the prompt tokens). Errors:
`{"error": {"message", "type", "code"}}` with the HTTP status; `code:
context_length_exceeded` (or a message saying so, as vLLM words it) is the context-length
case; `code: content_policy_violation` (OpenAI), `content_filter` with `innererror.code:
ResponsibleAIPolicyViolation` (Azure) are content-policy refusals (`http_errors`); an
`error` object inside the stream is a failure too.

Tools: `tools` as `{"type": "function", "function": {name, description, parameters,
strict}}`, `tool_choice` `auto` / `none` / `required` / `{"type": "function", "function":
{"name"}}`, `parallel_tool_calls`; an assistant message's calls as `tool_calls` (`{id, type:
function, function: {name, arguments}}`, content null when it has no text) and a tool
result as `{"role": "tool", "tool_call_id", "content"}`. A stream's calls come in
`choices[0].delta.tool_calls[]` (`index`; `id` and `function.name` on a call's first piece,
then `function.arguments` fragments), finish reason `tool_calls`; a complete answer's in
`choices[0].message.tool_calls`. `response_format` is sent as OpenAI's `{"type":
"json_object"}` or `{"type": "json_schema", "json_schema": {name, schema, strict}}`.

Parsing is defensive (this engine also serves `copilot`): a chunk without choices is skipped;
an answer without choices or message is malformed (transient); missing or empty content is
logged and answers an empty text, not an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any

from services.common.tokens import estimate_tokens
from services.router.engines.base import (
    Caller,
    ChatMessage,
    Embedded,
    EngineEvent,
    EngineRequest,
    FinishReason,
    ProviderError,
    ProviderUnavailable,
)
from services.router.engines.embeddings import checked_vectors
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
    ResponseFormat,
    ResponseFormatType,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
)

log = logging.getLogger("saga.router.engines")

FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
}

_AZURE_HOST = ".openai.azure.com"

_TYPE_STATUS = {
    "invalid_request_error": 400,
    "context_length_exceeded": 400,
    "content_policy_violation": 400,
    "content_filter": 400,
    "not_found_error": 404,
    "model_not_found": 404,
    "authentication_error": 401,
    "invalid_api_key": 401,
    "permission_error": 403,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "timeout": 408,
}
"""The HTTP status an error's `type` or `code` stands for, for errors inside a stream."""


def content_text(content: Any) -> str:
    """A message's content: a string, or a list of parts whose `text` fields are joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def function_tools(request: EngineRequest) -> list[dict[str, Any]]:
    """The request's tools as OpenAI's (and Ollama's) function tools."""
    tools = []
    for tool in request.tools:
        function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters()}
        if tool.description:
            function["description"] = tool.description
        if tool.strict:
            function["strict"] = True
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(choice: ToolChoice) -> Any:
    if choice.mode is ToolChoiceMode.NAMED:
        return {"type": "function", "function": {"name": choice.name}}
    return {
        ToolChoiceMode.AUTO: "auto",
        ToolChoiceMode.NONE: "none",
        ToolChoiceMode.REQUIRED: "required",
    }[choice.mode]


def _message(m: ChatMessage) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    message: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        message["content"] = m.content or None
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments_json},
            }
            for c in m.tool_calls
        ]
    return message


def _response_format(form: ResponseFormat) -> dict[str, Any] | None:
    if form.type is ResponseFormatType.JSON_OBJECT:
        return {"type": "json_object"}
    if form.type is ResponseFormatType.JSON_SCHEMA:
        schema: dict[str, Any] = {"name": form.name, "schema": form.schema()}
        if form.strict:
            schema["strict"] = True
        return {"type": "json_schema", "json_schema": schema}
    return None


def tool_deltas(delta: dict[str, Any]) -> list[ToolCallDelta]:
    """The tool-call pieces of a stream chunk's `delta` (malformed entries skipped)."""
    pieces = []
    calls = delta.get("tool_calls")
    for entry in calls if isinstance(calls, list) else []:
        call = as_dict(entry)
        index = as_int(call.get("index"))
        function = as_dict(call.get("function"))
        name, arguments, call_id = function.get("name"), function.get("arguments"), call.get("id")
        if index is None:
            continue
        pieces.append(
            ToolCallDelta(
                index,
                call_id if isinstance(call_id, str) else "",
                name if isinstance(name, str) else "",
                arguments if isinstance(arguments, str) else "",
            )
        )
    return pieces


def report_usage(usage: Any, progress: Progress) -> None:
    """Record an OpenAI `usage` object, if the value is one."""
    if not isinstance(usage, dict):
        return
    cached = as_int(as_dict(usage.get("prompt_tokens_details")).get("cached_tokens"))
    progress.report(
        as_int(usage.get("prompt_tokens")), as_int(usage.get("completion_tokens")), cached or 0
    )


class OpenAIEngine(HttpEngine):
    """Chat completions over HTTP (see the module docstring)."""

    def url(self) -> str:
        """`{base_url}/chat/completions` (see the module docstring for `base_url`)."""
        azure = _AZURE_HOST in self.provider.base_url
        return endpoint(
            self.provider.base_url, "/chat/completions", empty="/openai/v1" if azure else "/v1"
        )

    def headers(self, secret: str) -> dict[str, str]:
        """The credential, when the provider has one: a bearer; Azure OpenAI's API keys go
        in `api-key` (its Entra ID tokens are bearers too)."""
        if not secret:
            return {}
        if self.provider.credential == "api_key" and _AZURE_HOST in self.provider.base_url:
            return {"api-key": secret}
        return {"Authorization": f"Bearer {secret}"}

    def body(self, request: EngineRequest) -> dict[str, Any]:
        """The chat completion request."""
        messages = []
        if request.system_prompt:
            messages.append({"role": "system", "content": request.system_prompt})
        messages += [_message(m) for m in request.messages]
        body: dict[str, Any] = {
            "model": self.provider.model,
            "messages": messages,
            self.provider.max_tokens_field: request.max_tokens,
            "stream": request.stream,
        }
        if request.stream:
            body["stream_options"] = {"include_usage": True}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop"] = list(request.stop)
        body.update(request.sampling.numbers())
        if request.sampling.end_user:
            body["user"] = request.sampling.end_user
        if request.tools:
            body["tools"] = function_tools(request)
            body["tool_choice"] = _tool_choice(request.tool_choice)
            if request.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = request.parallel_tool_calls
        if (form := _response_format(request.response_format)) is not None:
            body["response_format"] = form
        return body

    async def embed(self, texts: Sequence[str], dimensions: int, caller: Caller) -> Embedded:
        """`POST {base_url}/embeddings` (`input`, `encoding_format: float`, `dimensions`):
        `data[].embedding` by `data[].index`, `usage.prompt_tokens`."""
        body: dict[str, Any] = {
            "model": self.provider.model,
            "input": list(texts),
            "encoding_format": "float",
        }
        if dimensions:
            body["dimensions"] = dimensions
        azure = _AZURE_HOST in self.provider.base_url
        url = endpoint(
            self.provider.base_url, "/embeddings", empty="/openai/v1" if azure else "/v1"
        )
        answer = as_dict(await self.post_json(url, body, caller))
        if answer.get("error") is not None:
            raise self.error_of(0, answer, "", None)
        data = answer.get("data")
        if not isinstance(data, list):
            raise self.malformed("embeddings answer (no data)")
        ordered = sorted((as_dict(d) for d in data), key=lambda d: as_int(d.get("index")) or 0)
        vectors = checked_vectors(
            [d.get("embedding") for d in ordered], len(texts), dimensions, self.provider.name
        )
        tokens = as_int(as_dict(answer.get("usage")).get("prompt_tokens"))
        if tokens is None:
            return Embedded(vectors, sum(estimate_tokens(t) for t in texts), estimated=True)
        return Embedded(vectors, tokens)

    def error_of(
        self, status: int, payload: Any, text: str, retry_after: float | None
    ) -> ProviderError:
        """`{"error": {"message", "type", "code"}}` (or a bare string, as some servers send)."""
        body = as_dict(payload)
        error = body.get("error")
        details = as_dict(error)
        message = details.get("message") if details else error
        if not isinstance(message, str):
            detail = body.get("message") or body.get("detail")
            message = detail if isinstance(detail, str) else text
        code = str(details.get("code") or "")
        inner = str(as_dict(details.get("innererror")).get("code") or "")
        kind = str(details.get("type") or "")
        in_stream = status == 0
        if in_stream:
            status = _TYPE_STATUS.get(code) or _TYPE_STATUS.get(kind) or 500
        return error_for_status(
            self.provider.name,
            status,
            shown(message),
            retry_after=retry_after,
            context_length=is_context_length(code, message),
            content_filtered=is_content_filtered((code, inner), message),
            provider_code=shown(code or inner or kind),
            in_stream=in_stream,
        )

    def _chunk(self, data: str) -> dict[str, Any]:
        try:
            chunk = json.loads(data)
        except ValueError:
            raise self.malformed("stream chunk") from None
        if not isinstance(chunk, dict):
            raise self.malformed("stream chunk")
        if chunk.get("error") is not None:
            raise self.error_of(0, chunk, data, None)
        return chunk

    async def read_stream(
        self, lines: AsyncIterator[str], progress: Progress
    ) -> AsyncGenerator[EngineEvent, None]:
        """SSE chunks until `[DONE]` (a stream that just ends after its finish reason is
        accepted; one that ends before it broke off)."""
        finish: str | None = None
        async with aclosing(sse_events(lines)) as events:
            async for event in events:
                if event.data.strip() == "[DONE]":
                    break
                chunk = self._chunk(event.data)
                if not progress.model:
                    progress.named(chunk.get("model"))
                report_usage(chunk.get("usage"), progress)
                choices = chunk.get("choices")
                choice = as_dict(choices[0]) if isinstance(choices, list) and choices else {}
                delta = as_dict(choice.get("delta"))
                text = content_text(delta.get("content"))
                if text:
                    yield progress.text(text)
                for piece in tool_deltas(delta):
                    yield progress.tool(piece)
                reason = choice.get("finish_reason")
                if isinstance(reason, str) and reason:
                    finish = reason
            else:
                if finish is None:
                    raise ProviderUnavailable(
                        f"{self.provider.name}: the stream ended before the answer did"
                    )
        yield progress.finish(FINISH_REASONS.get(finish or "stop", FinishReason.STOP))

    def read_complete(self, payload: Any, progress: Progress) -> list[EngineEvent]:
        """One `chat.completion` object."""
        body = as_dict(payload)
        if body.get("error") is not None:
            raise self.error_of(0, body, "", None)
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            log.warning("answer without choices", extra={"provider": self.provider.name})
            raise self.malformed("answer (no choices)")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            log.warning("answer without a message", extra={"provider": self.provider.name})
            raise self.malformed("answer (no message)")
        text = content_text(message.get("content"))
        events: list[EngineEvent] = []
        calls = [progress.tool(p) for p in tool_deltas({"tool_calls": _indexed(message)})]
        if text:
            events.append(progress.text(text))
        elif not calls:
            log.warning("answer with empty content", extra={"provider": self.provider.name})
        events += calls
        report_usage(body.get("usage"), progress)
        progress.named(body.get("model"))
        reason = choices[0].get("finish_reason")
        events.append(
            progress.finish(
                FINISH_REASONS.get(reason if isinstance(reason, str) else "", FinishReason.STOP)
            )
        )
        return events


def _indexed(message: dict[str, Any]) -> list[Any]:
    """A complete message's tool calls with the `index` a stream would give them."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return []
    return [{**as_dict(call), "index": i} for i, call in enumerate(calls)]
