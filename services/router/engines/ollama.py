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
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from services.router.engines.base import (
    EngineEvent,
    EngineRequest,
    FinishReason,
    ProviderError,
    ProviderUnavailable,
)
from services.router.engines.http import HttpEngine, as_dict, as_int, endpoint
from services.router.engines.http_errors import error_for_status, is_context_length, shown
from services.router.engines.progress import Progress

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
        messages += [{"role": m.role, "content": m.content} for m in request.messages]
        options: dict[str, Any] = {"num_predict": request.max_tokens}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.stop:
            options["stop"] = list(request.stop)
        options.update(request.sampling.numbers())
        return {
            "model": self.provider.model,
            "messages": messages,
            "stream": request.stream,
            "options": options,
        }

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
        async for line in lines:
            if not line.strip():
                continue
            answer = self._object(line)
            text = as_dict(answer.get("message")).get("content")
            if isinstance(text, str) and text:
                yield progress.text(text)
            if answer.get("done") is True:
                report_usage(answer, progress)
                yield progress.finish(self._finish_reason(answer))
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
        report_usage(answer, progress)
        events.append(progress.finish(self._finish_reason(answer)))
        return events

    @staticmethod
    def _finish_reason(answer: dict[str, Any]) -> FinishReason:
        reason = answer.get("done_reason")
        return FINISH_REASONS.get(reason if isinstance(reason, str) else "", FinishReason.STOP)
