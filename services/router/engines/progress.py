"""One provider call as it goes: its deadlines (first token, idle, total) and what it has
produced (text deltas, the usage the provider reported), from which its final usage — or,
when it fails, the usage consumed so far — is taken, estimated where the provider was
silent."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Awaitable
from typing import TypeVar

from services.common.config import ProviderConfig
from services.common.usage import Usage
from services.router.engines.base import (
    EngineRequest,
    Finish,
    FinishReason,
    ProviderTimeout,
    TextDelta,
    estimate_input_tokens,
)
from services.router.engines.tools import ToolCallDelta

T = TypeVar("T")


class Deadlines:
    """The first-token, idle and total deadlines of one call, on the event loop's clock.

    Until the first text a read waits until the first-token deadline; after it, each read
    waits at most `idle_timeout_ms` (a stream that stalls mid-answer is left then, not at the
    total timeout), and never past the total deadline."""

    def __init__(self, provider: ProviderConfig, streamed: bool) -> None:
        self._provider = provider
        self._loop = asyncio.get_running_loop()
        now = self._loop.time()
        self.total = now + provider.total_timeout_ms / 1000
        self.first_token = (
            min(self.total, now + provider.first_token_timeout_ms / 1000)
            if streamed
            else self.total
        )
        self._idle = provider.idle_timeout_ms / 1000
        self.got_text = False

    def current(self) -> float:
        """The deadline the next read must meet."""
        if self.got_text:
            return min(self.total, self._loop.time() + self._idle)
        return self.first_token

    def error(self, missed: float | None = None) -> ProviderTimeout:
        """The failure of the missed deadline `missed` (None: the current one)."""
        p = self._provider
        if missed is None:
            missed = self.current()
        if self.got_text and missed < self.total:
            return ProviderTimeout(
                f"{p.name}: the stream stalled (no data for {p.idle_timeout_ms} ms)"
            )
        if self.got_text or self.first_token >= self.total:
            return ProviderTimeout(f"{p.name}: no complete answer within {p.total_timeout_ms} ms")
        return ProviderTimeout(f"{p.name}: no first token within {p.first_token_timeout_ms} ms")

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable` until the current deadline; raise ProviderTimeout after it."""
        missed = self.current()
        timeout = asyncio.timeout_at(missed)
        try:
            async with timeout:
                return await awaitable
        except TimeoutError:
            if timeout.expired():
                raise self.error(missed) from None
            raise


class Progress:
    """What one call has produced so far: text deltas, and usage the provider reported."""

    def __init__(self, request: EngineRequest, deadlines: Deadlines) -> None:
        self._request = request
        self._deadlines = deadlines
        self.chunks = 0
        self.chars = 0
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cached_tokens = 0
        self.cache_write_tokens = 0
        self.model = ""
        """The model that answered, as the provider named it (first named wins)."""
        self.streamed = False
        """Whether the answer came as a stream (then about one token per chunk)."""

    def text(self, text: str) -> TextDelta:
        """Count a delta of generated text and return it to be yielded."""
        self.chunks += 1
        self.chars += len(text)
        self._deadlines.got_text = True
        return TextDelta(text)

    @property
    def request(self) -> EngineRequest:
        """The request being answered (how it was asked shapes how its answer is read)."""
        return self._request

    def tool(self, delta: ToolCallDelta) -> ToolCallDelta:
        """Count a tool-call delta (generated output like text) and return it to be
        yielded."""
        self.chunks += 1
        self.chars += len(delta.name) + len(delta.arguments)
        self._deadlines.got_text = True
        return delta

    def report(
        self,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cached: int = 0,
        written: int = 0,
    ) -> None:
        """Record usage the provider reported (None leaves a count as it was; `cached` and
        `written` are the cache reads and writes among the input tokens)."""
        if input_tokens is not None:
            self.input_tokens = input_tokens
        if output_tokens is not None:
            self.output_tokens = output_tokens
        if cached:
            self.cached_tokens = cached
        if written:
            self.cache_write_tokens = written

    def named(self, model: object) -> None:
        """The provider named the model that answers (kept only if none was named yet)."""
        if not self.model and isinstance(model, str):
            self.model = model

    def _estimated_output(self) -> int:
        # Streaming APIs send about one token per chunk; a complete answer is one piece.
        return self.chunks if self.streamed else math.ceil(self.chars / 4)

    def finish(self, reason: FinishReason) -> Finish:
        """The final event: the provider's usage, or an estimate flagged as such."""
        if self.input_tokens is not None and self.output_tokens is not None:
            return Finish(
                reason,
                self.input_tokens,
                self.output_tokens,
                self.cached_tokens,
                model=self.model,
                cache_write_tokens=self.cache_write_tokens,
            )
        return Finish(
            reason,
            self.input_tokens
            if self.input_tokens is not None
            else estimate_input_tokens(self._request),
            self.output_tokens if self.output_tokens is not None else self._estimated_output(),
            self.cached_tokens,
            estimated=True,
            model=self.model,
            cache_write_tokens=self.cache_write_tokens,
        )

    def usage(self) -> Usage | None:
        """What a call that fails now has consumed (None when it generated nothing)."""
        if self.chunks == 0:
            return None
        # Flagged even when both counts came: the call ended before the provider's last word.
        return dataclasses.replace(usage_of(self.finish(FinishReason.ERROR)), estimated=True)


def usage_of(finish: Finish) -> Usage:
    """The usage a finish reports."""
    return Usage(
        finish.input_tokens,
        finish.output_tokens,
        finish.cached_tokens,
        finish.estimated,
        finish.cache_write_tokens,
    )
