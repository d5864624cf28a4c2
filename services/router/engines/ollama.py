"""`ollama`: Ollama's native chat API.

`POST {base_url}/api/chat` (`base_url` is the bare host, `http://localhost:11434`: a
trailing slash and a trailing `/api` or `/v1` — the OpenAI-compatible path, which the
`openai` engine speaks — are dropped; no credential by default; a bearer key when configured, for an
Ollama behind a proxy). Options go in `options` (`num_predict`, `temperature`, `stop`,
`top_p`, `seed`, the penalties).
A stream is newline-delimited JSON: objects with `message.content` and `done: false`, then
one with `done: true`, `done_reason` and the counts `prompt_eval_count` (input tokens) and
`eval_count` (output tokens). COMPLETE mode (`stream: false`) answers that last object
alone, with the whole `message.content`. Errors are `{"error": "message"}`, as the HTTP body
or as a line of the stream.

Tools: `tools` as OpenAI's function tools; an assistant message's calls as
`message.tool_calls` (`{function: {name, arguments}}`, arguments an object) and a tool
result as `{"role": "tool", "content", "tool_name"}`. The model's calls come whole, in a
line's `message.tool_calls` (Ollama gives no ids: the router mints them); each is passed on
as one delta with its id, name and all its arguments. Ollama has no tool choice: none sends
no tools, a named tool sends only that one, and required is left to the router's check (an
answer without a call is asked for once more). A JSON response format goes in `format`
(`"json"`, or the schema).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
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
from services.router.engines.http_errors import error_for_status, is_context_length, shown
from services.router.engines.openai import function_tools
from services.router.engines.progress import Progress
from services.router.engines.tools import ResponseFormatType, ToolCallDelta, ToolChoiceMode

FINISH_REASONS = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH}


def report_usage(answer: dict[str, Any], progress: Progress) -> None:
    """Record the counts and the model of the final object."""
    progress.report(as_int(answer.get("prompt_eval_count")), as_int(answer.get("eval_count")))
    progress.named(answer.get("model"))


class OllamaEngine(HttpEngine):
    """Ollama's /api/chat over HTTP (see the module docstring)."""

    def url(self) -> str:
        """`{base_url}/api/chat` (see the module docstring for `base_url`)."""
        return endpoint(self.provider.base_url, "/api/chat", strip=("/api", "/v1"))

    def headers(self, secret: str) -> dict[str, str]:
        """A bearer key, only when one is configured."""
        return {"Authorization": f"Bearer {secret}"} if secret else {}

    def body(self, request: EngineRequest) -> dict[str, Any]:
        """The chat request."""
        messages = []
        if request.system_prompt:
            messages.append({"role": "system", "content": request.system_prompt})
        names = {c.id: c.name for m in request.messages for c in m.tool_calls}
        messages += [_message(m, names) for m in request.messages]
        options: dict[str, Any] = {"num_predict": request.max_tokens}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.stop:
            options["stop"] = list(request.stop)
        options.update(request.sampling.numbers())
        body: dict[str, Any] = {
            "model": self.provider.model,
            "messages": messages,
            "stream": request.stream,
            "options": options,
        }
        choice = request.tool_choice
        if request.tools and choice.mode is not ToolChoiceMode.NONE:
            tools = function_tools(request)
            if choice.mode is ToolChoiceMode.NAMED:
                tools = [t for t in tools if t["function"]["name"] == choice.name]
            body["tools"] = tools
        form = request.response_format
        if form.type is ResponseFormatType.JSON_OBJECT:
            body["format"] = "json"
        elif form.type is ResponseFormatType.JSON_SCHEMA:
            body["format"] = form.schema()
        return body

    async def embed(self, texts: Sequence[str], dimensions: int, caller: Caller) -> Embedded:
        """`POST {base_url}/api/embed` (`input`, `dimensions`): `embeddings`,
        `prompt_eval_count`."""
        body: dict[str, Any] = {"model": self.provider.model, "input": list(texts)}
        if dimensions:
            body["dimensions"] = dimensions
        url = endpoint(self.provider.base_url, "/api/embed", strip=("/api", "/v1"))
        answer = as_dict(await self.post_json(url, body, caller))
        if answer.get("error") is not None:
            raise self.error_of(0, answer, "", None)
        raw = answer.get("embeddings")
        if not isinstance(raw, list):
            raise self.malformed("embeddings answer (no embeddings)")
        vectors = checked_vectors(raw, len(texts), dimensions, self.provider.name)
        tokens = as_int(answer.get("prompt_eval_count"))
        if tokens is None:
            return Embedded(vectors, sum(estimate_tokens(t) for t in texts), estimated=True)
        return Embedded(vectors, tokens)

    def error_of(
        self, status: int, payload: Any, text: str, retry_after: float | None
    ) -> ProviderError:
        """`{"error": "message"}`; inside a stream it is a transient failure."""
        message = as_dict(payload).get("error")
        if not isinstance(message, str):
            message = text
        in_stream = status == 0
        return error_for_status(
            self.provider.name,
            500 if in_stream else status,
            shown(message),
            retry_after=retry_after,
            context_length=is_context_length("", message),
            in_stream=in_stream,
        )

    def _object(self, line: str) -> dict[str, Any]:
        try:
            answer = json.loads(line)
        except ValueError:
            raise self.malformed("stream line") from None
        if not isinstance(answer, dict):
            raise self.malformed("stream line")
        if answer.get("error") is not None:
            raise self.error_of(0, answer, line, None)
        return answer

    async def read_stream(
        self, lines: AsyncIterator[str], progress: Progress
    ) -> AsyncGenerator[EngineEvent, None]:
        """One JSON object a line until the one with `done: true`."""
        calls = _Calls()
        async for line in lines:
            if not line.strip():
                continue
            answer = self._object(line)
            message = as_dict(answer.get("message"))
            text = message.get("content")
            if isinstance(text, str) and text:
                yield progress.text(text)
            for piece in calls.of(message):
                yield progress.tool(piece)
            if answer.get("done") is True:
                report_usage(answer, progress)
                yield progress.finish(self._finish_reason(answer, calls))
                return
        raise ProviderUnavailable(f"{self.provider.name}: the stream ended before the answer did")

    def read_complete(self, payload: Any, progress: Progress) -> list[EngineEvent]:
        """The one final object."""
        answer = as_dict(payload)
        if answer.get("error") is not None:
            raise self.error_of(0, answer, "", None)
        message = answer.get("message")
        if not isinstance(message, dict):
            raise self.malformed("answer (no message)")
        text = message.get("content")
        events: list[EngineEvent] = []
        if isinstance(text, str) and text:
            events.append(progress.text(text))
        calls = _Calls()
        events += [progress.tool(piece) for piece in calls.of(message)]
        report_usage(answer, progress)
        events.append(progress.finish(self._finish_reason(answer, calls)))
        return events

    @staticmethod
    def _finish_reason(answer: dict[str, Any], calls: _Calls) -> FinishReason:
        if calls.count:
            return FinishReason.TOOL_CALLS
        reason = answer.get("done_reason")
        return FINISH_REASONS.get(reason if isinstance(reason, str) else "", FinishReason.STOP)


def _message(m: ChatMessage, names: dict[str, str]) -> dict[str, Any]:
    """A message in Ollama's shape (`names`: each call id's tool, for the tool results)."""
    if m.role == "tool":
        return {"role": "tool", "content": m.content, "tool_name": names.get(m.tool_call_id, "")}
    message: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        message["tool_calls"] = [
            {"function": {"name": c.name, "arguments": json.loads(c.arguments_json)}}
            for c in m.tool_calls
        ]
    return message


class _Calls:
    """The tool calls of one answer, numbered across its lines."""

    def __init__(self) -> None:
        self.count = 0

    def of(self, message: dict[str, Any]) -> list[ToolCallDelta]:
        """One whole delta per call in a line's message."""
        calls = message.get("tool_calls")
        pieces = []
        for entry in calls if isinstance(calls, list) else []:
            function = as_dict(as_dict(entry).get("function"))
            name = function.get("name")
            if not isinstance(name, str) or not name:
                continue
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                text = arguments
            else:
                text = json.dumps(arguments if isinstance(arguments, dict) else {})
            call_id = as_dict(entry).get("id")
            pieces.append(
                ToolCallDelta(self.count, call_id if isinstance(call_id, str) else "", name, text)
            )
            self.count += 1
        return pieces
