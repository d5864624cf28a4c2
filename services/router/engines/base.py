"""What every engine is: a provider call streamed as text deltas and one final event, and the
error taxonomy engines raise (SPEC 3.4).

An engine turns an `EngineRequest` into an async stream of `TextDelta`s and `ToolCallDelta`s
(`tools`) followed by exactly one `Finish` (usage and finish reason). A failure raises a
`ProviderError` subclass whose `kind` is one of the taxonomy's six: the router maps each
kind to one gRPC code and reason, and decides on fallback by it. Engines know nothing of
ranking, fallback or gRPC.

The error tree::

    ProviderError                      kind, message, retry_after, usage, http_status
    ├── ProviderUnavailable            UNAVAILABLE      5xx, 529, reset, DNS, malformed stream
    ├── ProviderRateLimited            RATE_LIMITED     429 (retry_after from Retry-After)
    ├── ProviderUnauthenticated        UNAUTHENTICATED  401/403
    │   └── ProviderCredentialFailed   UNAUTHENTICATED  auth could not give us a credential
    │                                                   (`upstream`: auth's error, intact)
    ├── ProviderRejectedInput          INVALID_INPUT    400/413/422
    │   ├── ProviderContextTooLong     INVALID_INPUT    the prompt exceeds the context window
    │   └── ProviderContentFiltered    INVALID_INPUT    the provider's content policy refused it
    ├── ProviderMisconfigured          MISCONFIGURED    404/405: wrong base_url, model or path
    └── ProviderTimeout                TIMEOUT          408/504, our connect/first-token/idle/total

`usage` on an error is what the failed attempt consumed as far as the engine knows (input
tokens the provider reported before failing, text it had sent), flagged `estimated`; it is
None when nothing was generated. `metadata` is what the failure adds to the ErrorInfo the
caller sees (the provider's own error code as `providerCode`, the URL path a 404 answered as
`urlPath`): safe to show, never a credential.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from services.common.errors import SagaError
from services.common.sampling import OPTIONAL_FIELDS
from services.common.tokens import estimate_tokens
from services.common.usage import Usage
from services.router.engines.tools import (
    AUTO,
    TEXT,
    ResponseFormat,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolSpec,
)


@dataclass(frozen=True)
class ChatMessage:
    """One message of the conversation; `role` is system, user, assistant or tool."""

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    """An assistant message: the tool calls the model made in that turn."""
    tool_call_id: str = ""
    """A tool message: the id of the call it is the result of."""


@dataclass(frozen=True)
class Caller:
    """Whom a call is made for: the verified user and the request-context token the router
    received (forwarded to auth when the engine fetches that user's provider credential)."""

    user_id: str = ""
    context: str = field(default="", repr=False)
    """The `saga-context` metadata value; a bearer token, so never in a repr or a log."""


@dataclass(frozen=True)
class Sampling:
    """The sampling fields not every engine sends (`services.common.sampling.ENGINE_FIELDS`
    says which do); None / empty = unset."""

    top_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    end_user: str = ""

    def numbers(self) -> dict[str, float | int]:
        """top_p, seed and the penalties that are set, by their (OpenAI and Ollama) names."""
        values = {
            "top_p": self.top_p,
            "seed": self.seed,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
        }
        return {name: value for name, value in values.items() if value is not None}

    def present(self) -> set[str]:
        """The names of the fields that are set."""
        return {name for name in OPTIONAL_FIELDS if getattr(self, name) not in (None, "")}


@dataclass(frozen=True)
class EngineRequest:
    """One provider call, already validated and bounded by the router."""

    messages: tuple[ChatMessage, ...]
    system_prompt: str
    max_tokens: int
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    sampling: Sampling = Sampling()
    stream: bool = True
    """False in COMPLETE mode: HTTP engines then ask for one JSON answer (no SSE) and yield
    its text as a single delta."""
    caller: Caller = Caller()
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = AUTO
    parallel_tool_calls: bool | None = None
    """None = the provider's default."""
    response_format: ResponseFormat = TEXT


class CredentialLookup(Protocol):
    """How an engine gets the secret it calls its provider with (bound to one provider)."""

    async def __call__(self, caller: Caller, *, stale: str = "") -> str:
        """The secret for a call made for `caller`. `stale` is a secret the provider just
        refused: it is dropped from any cache and a fresh one fetched. Raises the
        credential source's own error (a `SagaError` with auth's reason) when there is none."""
        ...


class FinishReason(enum.Enum):
    """Why the answer ended (values mirror saga.execution.v1.FinishReason)."""

    STOP = 1
    LENGTH = 2
    CONTENT_FILTER = 3
    ERROR = 4
    TOOL_CALLS = 5
    """The model called tools: the caller runs them and answers with tool messages."""


@dataclass(frozen=True)
class TextDelta:
    """A chunk of generated text."""

    text: str


@dataclass(frozen=True)
class Finish:
    """The last event of a successful stream: why it ended and what it used."""

    reason: FinishReason
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    estimated: bool = False
    model: str = field(default="", compare=False)
    """The model that answered, as the provider named it ("" when it did not); for telemetry
    (`gen_ai.response.model`), so left out of equality: two finishes that used the same
    are equal."""
    cache_write_tokens: int = 0
    """Input tokens written to the provider's prompt cache (a subset of `input_tokens`)."""


EngineEvent = TextDelta | ToolCallDelta | Finish


def estimate_input_tokens(request: EngineRequest) -> int:
    """The input tokens of `request`, estimated from its characters (tool definitions and
    the tool calls in the conversation count: providers bill them as input)."""
    return (
        estimate_tokens(request.system_prompt)
        + sum(
            estimate_tokens(m.content)
            + sum(estimate_tokens(c.name + c.arguments_json) for c in m.tool_calls)
            for m in request.messages
        )
        + sum(estimate_tokens(t.name + t.description + t.parameters_json) for t in request.tools)
        + estimate_tokens(request.response_format.schema_json)
    )


class Engine(Protocol):
    """A provider engine (one instance per configured provider)."""

    def stream(self, request: EngineRequest) -> AsyncGenerator[EngineEvent, None]:
        """Call the provider: `TextDelta`s as they arrive, then one `Finish`; raise a
        `ProviderError` on failure (also after some deltas)."""
        ...

    async def close(self) -> None:
        """Release what the engine owns (its HTTP session), at shutdown."""
        ...


@dataclass(frozen=True)
class Embedded:
    """The vectors of a batch of texts, in input order, and what the provider counted."""

    vectors: tuple[tuple[float, ...], ...]
    input_tokens: int
    estimated: bool = False
    """The provider reported no count: `input_tokens` is Saga's estimate."""


class Embedder(Protocol):
    """An engine that can embed (sim, openai, ollama)."""

    async def embed(self, texts: Sequence[str], dimensions: int, caller: Caller) -> Embedded:
        """The vectors of `texts` (`dimensions` 0 = the model's own length); raise a
        `ProviderError` on failure, also for an answer that does not hold one vector per
        text of the asked length."""
        ...


class ErrorKind(enum.Enum):
    """The provider error taxonomy."""

    UNAVAILABLE = "unavailable"
    """Transient: 5xx, connection reset, DNS — another provider may well succeed."""
    RATE_LIMITED = "rate_limited"
    """429: come back after `retry_after`."""
    UNAUTHENTICATED = "unauthenticated"
    """401/403: our credential for the provider is wrong or revoked."""
    INVALID_INPUT = "invalid_input"
    """400/413: the provider refuses this input (context too long, say)."""
    TIMEOUT = "timeout"
    """408/504 or our own timeout."""
    MISCONFIGURED = "misconfigured"
    """404/405: the provider has no such endpoint or model — our configuration (base_url,
    model) is wrong, so the same call would fail again."""


class ProviderError(Exception):
    """A failed provider call. `message` is safe to show (never a credential)."""

    kind: ErrorKind = ErrorKind.UNAVAILABLE
    context_length_exceeded: bool = False
    """The input does not fit the provider's context window: a provider with a larger
    window may take it (only `ProviderContextTooLong` sets it)."""
    content_filtered: bool = False
    """The provider's content policy refused the input or the answer (only
    `ProviderContentFiltered` sets it)."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        usage: Usage | None = None,
        http_status: int = 0,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.usage = usage
        self.http_status = http_status
        """The provider's HTTP status (0: no HTTP answer, or a failure inside a stream)."""
        self.metadata: dict[str, str] = metadata if metadata is not None else {}
        """ErrorInfo metadata the failure adds (see the module docstring)."""


class ProviderUnavailable(ProviderError):
    """Transient failure."""

    kind = ErrorKind.UNAVAILABLE


class ProviderRateLimited(ProviderError):
    """The provider throttles us."""

    kind = ErrorKind.RATE_LIMITED


class ProviderUnauthenticated(ProviderError):
    """The provider refused our credential."""

    kind = ErrorKind.UNAUTHENTICATED


class ProviderCredentialFailed(ProviderUnauthenticated):
    """No credential to call the provider with: auth refused or failed (REAUTH_REQUIRED,
    a key never set, auth unreachable …). `upstream` is auth's error, reason and domain
    intact, so the router can end the call with it. The provider itself was not called:
    this says nothing of its health, and a retry would get the same answer."""

    def __init__(self, message: str, upstream: SagaError) -> None:
        super().__init__(message)
        self.upstream = upstream


class ProviderRejectedInput(ProviderError):
    """The provider refused the input."""

    kind = ErrorKind.INVALID_INPUT


class ProviderContextTooLong(ProviderRejectedInput):
    """The input exceeds the provider's context window."""

    context_length_exceeded = True


class ProviderContentFiltered(ProviderRejectedInput):
    """The provider's content policy (safety system, content filter) refused the call;
    `metadata["providerCode"]` is the provider's own code for it."""

    content_filtered = True


class ProviderMisconfigured(ProviderError):
    """The provider answered 404 or 405: no such endpoint (a wrong base_url) or model."""

    kind = ErrorKind.MISCONFIGURED


class ProviderTimeout(ProviderError):
    """The provider did not answer in time."""

    kind = ErrorKind.TIMEOUT
