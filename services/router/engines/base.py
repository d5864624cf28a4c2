"""What every engine is: a provider call streamed as text deltas and one final event, and the
error taxonomy engines raise (SPEC 3.4).

An engine turns an `EngineRequest` into an async stream of `TextDelta`s followed by exactly
one `Finish` (usage and finish reason). A failure raises a `ProviderError` subclass whose
`kind` is one of the taxonomy's five: the router maps each kind to one gRPC code and reason,
and decides on fallback by it. Engines know nothing of ranking, fallback or gRPC.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ChatMessage:
    """One message of the conversation; `role` is system, user or assistant."""

    role: str
    content: str


@dataclass(frozen=True)
class EngineRequest:
    """One provider call, already validated and bounded by the router."""

    messages: tuple[ChatMessage, ...]
    system_prompt: str
    max_tokens: int
    temperature: float | None = None
    stop: tuple[str, ...] = ()


class FinishReason(enum.Enum):
    """Why the answer ended (values mirror saga.execution.v1.FinishReason)."""

    STOP = 1
    LENGTH = 2
    CONTENT_FILTER = 3
    ERROR = 4


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


EngineEvent = TextDelta | Finish


class Engine(Protocol):
    """A provider engine (one instance per configured provider)."""

    def stream(self, request: EngineRequest) -> AsyncGenerator[EngineEvent, None]:
        """Call the provider: `TextDelta`s as they arrive, then one `Finish`; raise a
        `ProviderError` on failure (also after some deltas)."""
        ...

    async def close(self) -> None:
        """Release what the engine owns (its HTTP session), at shutdown."""
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


class ProviderError(Exception):
    """A failed provider call. `message` is safe to show (never a credential)."""

    kind: ErrorKind = ErrorKind.UNAVAILABLE

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class ProviderUnavailable(ProviderError):
    """Transient failure."""

    kind = ErrorKind.UNAVAILABLE


class ProviderRateLimited(ProviderError):
    """The provider throttles us."""

    kind = ErrorKind.RATE_LIMITED


class ProviderUnauthenticated(ProviderError):
    """The provider refused our credential."""

    kind = ErrorKind.UNAUTHENTICATED


class ProviderRejectedInput(ProviderError):
    """The provider refused the input."""

    kind = ErrorKind.INVALID_INPUT


class ProviderTimeout(ProviderError):
    """The provider did not answer in time."""

    kind = ErrorKind.TIMEOUT
