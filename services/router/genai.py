"""Provider attempts in the OpenTelemetry GenAI semantic conventions (status Development).

Each provider attempt — a first call, a retry, a fallback — is one CLIENT span named
`chat {gen_ai.request.model}`, the child of the router's Reason span, and one observation
of each GenAI client metric. The conventions' names are used as they stand today
(`gen_ai.provider.name`, which replaced `gen_ai.system`); Saga's own provider name goes in
`saga.provider`, since `gen_ai.provider.name` is the *kind* of service called (its
well-known value: openai, anthropic, azure.ai.openai, …).

Cost: the span is started when the attempt starts and ended when it ends, with every
attribute known only at the end (usage, finish reason, time to first chunk) set then —
nothing is done per token. Metrics are three histogram observations per attempt (four with
usage). Message content (prompt, system instructions, answer) is recorded only when
`telemetry.capture_message_content` is on, as the `gen_ai.input.messages`,
`gen_ai.system_instructions` and `gen_ai.output.messages` span attributes (JSON strings, as
the conventions allow on spans); the answer is the text the attempt already keeps for its
accounting, so capturing adds nothing per token either.

The metric names are those of the conventions' metrics page (`gen_ai.client.operation.*`,
`gen_ai.client.token.usage`); a later draft of the client-inference page renames them
`gen_ai.client.inference.*` — still Development, so not followed yet.

Prometheus names follow OpenTelemetry's conversion: dots become underscores and the unit
is a suffix (`gen_ai_client_operation_duration_seconds`, label `gen_ai_provider_name`).
`error.type` is the attempt's ErrorInfo reason (docs/errors.md lists them), or
`CANCELLED` for an attempt its caller abandoned.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from prometheus_client import Histogram

from services.common.config import ProviderConfig
from services.common.usage import Usage
from services.router.engines.base import EngineRequest, FinishReason

OPERATION = "chat"
"""`gen_ai.operation.name` of every Reason attempt (a chat completion)."""

DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
"""The conventions' ExplicitBucketBoundaries for operation duration and time to first
chunk, in seconds."""

TOKEN_BUCKETS = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
"""The conventions' ExplicitBucketBoundaries for `gen_ai.client.token.usage`."""

_COMMON = (
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
    "server_address",
    "server_port",
)
OPERATION_DURATION = Histogram(
    "gen_ai_client_operation_duration",
    "GenAI operation duration (one provider attempt).",
    [*_COMMON, "error_type"],
    unit="seconds",
    buckets=DURATION_BUCKETS,
)
TOKEN_USAGE = Histogram(
    "gen_ai_client_token_usage",
    "Number of input and output tokens used (one provider attempt).",
    [*_COMMON, "gen_ai_token_type"],
    buckets=TOKEN_BUCKETS,
)
TIME_TO_FIRST_CHUNK = Histogram(
    "gen_ai_client_operation_time_to_first_chunk",
    "Time from issuing a provider call to the first chunk of its answer.",
    list(_COMMON),
    unit="seconds",
    buckets=DURATION_BUCKETS,
)

_KINDS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "ollama": "ollama",
    "copilot": "github_copilot",
    "sim": "saga.sim",
}
# OpenAI-compatible services the openai engine may be pointed at, by host suffix, with the
# conventions' well-known value for each.
_HOSTS = (
    ("openai.azure.com", "azure.ai.openai"),
    ("services.ai.azure.com", "azure.ai.inference"),
    ("models.inference.ai.azure.com", "azure.ai.inference"),
    ("api.deepseek.com", "deepseek"),
    ("api.groq.com", "groq"),
    ("api.mistral.ai", "mistral_ai"),
    ("api.x.ai", "x_ai"),
    ("api.perplexity.ai", "perplexity"),
    ("api.moonshot.ai", "moonshot_ai"),
    ("api.cohere.com", "cohere"),
)
_FINISH = {
    FinishReason.STOP: "stop",
    FinishReason.LENGTH: "length",
    FinishReason.CONTENT_FILTER: "content_filter",
    FinishReason.ERROR: "error",
    FinishReason.TOOL_CALLS: "tool_call",
}

_tracer = trace.get_tracer("saga.router.genai")
_capture_content = False


def configure(*, capture_message_content: bool) -> None:
    """Set this process's content capture (`telemetry.capture_message_content`)."""
    global _capture_content
    _capture_content = capture_message_content


@functools.lru_cache(maxsize=256)
def _endpoint(kind: str, base_url: str) -> tuple[str, str, int]:
    """(gen_ai.provider.name, server.address, server.port) of a provider; address "" for
    the in-process sim."""
    name = _KINDS.get(kind, kind)
    if kind == "sim" or not base_url:
        return name, "", 0
    url = urlsplit(base_url)
    host = (url.hostname or "").lower()
    if kind == "openai":
        name = next((value for suffix, value in _HOSTS if host.endswith(suffix)), name)
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        port = 0
    return name, host, port


def provider_name(provider: ProviderConfig) -> str:
    """The `gen_ai.provider.name` of `provider` (its engine, refined by its host)."""
    return _endpoint(provider.kind, provider.base_url)[0]


def _messages(request: EngineRequest) -> str:
    return json.dumps(
        [
            {"role": m.role, "parts": [{"type": "text", "content": m.content}]}
            for m in request.messages
        ],
        ensure_ascii=False,
    )


class AttemptSpan:
    """The span and metrics of one provider attempt: `start` when it starts, `end` once
    when it ends."""

    __slots__ = ("_labels", "_request", "_span")

    def __init__(self, span: Span, labels: tuple[str, ...], request: EngineRequest) -> None:
        self._span: Span | None = span
        self._labels = labels
        self._request = request

    @classmethod
    def start(
        cls, provider: ProviderConfig, n: int, request: EngineRequest, retry_count: int
    ) -> AttemptSpan:
        """Open the attempt's CLIENT span under the current (Reason) span."""
        name, address, port = _endpoint(provider.kind, provider.base_url)
        attributes: dict[str, str | int | float | bool] = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.provider.name": name,
            "gen_ai.request.model": provider.model,
            "gen_ai.request.max_tokens": request.max_tokens,
            "gen_ai.request.stream": request.stream,
            "saga.provider": provider.name,
            "saga.attempt": n,
            "saga.retry_count": retry_count,
        }
        if request.temperature is not None:
            attributes["gen_ai.request.temperature"] = request.temperature
        if address:
            attributes["server.address"] = address
            attributes["server.port"] = port
        if _capture_content:
            attributes["gen_ai.input.messages"] = _messages(request)
            if request.system_prompt:
                attributes["gen_ai.system_instructions"] = json.dumps(
                    [{"type": "text", "content": request.system_prompt}], ensure_ascii=False
                )
        span = _tracer.start_span(
            f"{OPERATION} {provider.model}", kind=SpanKind.CLIENT, attributes=attributes
        )
        labels = (OPERATION, name, provider.model, "", address, str(port) if address else "")
        return cls(span, labels, request)

    def end(
        self,
        *,
        usage: Usage,
        duration: float,
        ttft: float | None,
        finish: FinishReason | None,
        error_type: str,
        failed: bool,
        pieces: Sequence[str],
        response_model: str = "",
    ) -> None:
        """Close the span with what the attempt produced and observe the metrics (only the
        first call does anything). `error_type` is "" for a success; `pieces` is the answer's
        text (joined and recorded only when content capture is on); `response_model` is ""
        when the provider did not name it."""
        span = self._span
        if span is None:
            return
        self._span = None
        attributes: dict[str, str | int | float | bool | list[str]] = {
            "gen_ai.usage.input_tokens": usage.input_tokens,
            "gen_ai.usage.output_tokens": usage.output_tokens,
            "saga.usage.estimated": usage.estimated,
        }
        if usage.cached_tokens:
            attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cached_tokens
        if usage.cache_write_tokens:
            attributes["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write_tokens
        if response_model:
            attributes["gen_ai.response.model"] = response_model
        reason = _FINISH[finish] if finish is not None else ("error" if failed else "")
        if reason:
            attributes["gen_ai.response.finish_reasons"] = [reason]
        streamed = self._request.stream  # the conventions: first chunks of streams only
        if ttft is not None and streamed:
            attributes["gen_ai.response.time_to_first_chunk"] = ttft
        if error_type:
            attributes["error.type"] = error_type
        if _capture_content and pieces:
            attributes["gen_ai.output.messages"] = json.dumps(
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": "".join(pieces)}],
                        "finish_reason": reason or "stop",
                    }
                ],
                ensure_ascii=False,
            )
        span.set_attributes(attributes)
        if failed:
            span.set_status(Status(StatusCode.ERROR, error_type))
        span.end()

        op, provider, model, _, address, port = self._labels
        labels = (op, provider, model, response_model, address, port)
        OPERATION_DURATION.labels(*labels, error_type).observe(duration)
        if ttft is not None and streamed:
            TIME_TO_FIRST_CHUNK.labels(*labels).observe(ttft)
        if usage.input_tokens:
            TOKEN_USAGE.labels(*labels, "input").observe(usage.input_tokens)
        if usage.output_tokens:
            TOKEN_USAGE.labels(*labels, "output").observe(usage.output_tokens)
