"""The accounting of one provider attempt: usage, cost, timings, how it ended.

Usage comes from the provider when it reported it (the engine's `Finish`, or the `usage` a
failed engine attaches). When it did not — a stream cut mid-way, say — the attempt is billed
as estimated and flagged: the prompt's input tokens and the text received, ~4 characters a
token. An attempt that produced nothing and reported nothing costs nothing.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

from services.common.config import ProviderConfig
from services.common.prices import PriceTable
from services.common.usage import Usage
from services.router.engines.base import (
    EngineRequest,
    Finish,
    estimate_input_tokens,
    estimate_tokens,
)
from services.router.genai import AttemptSpan


class AttemptStatus(enum.Enum):
    """How an attempt ended (values mirror saga.execution.v1.AttemptStatus)."""

    SUCCEEDED = 1
    FAILED = 2
    CANCELLED = 3


@dataclass(frozen=True)
class AttemptRecord:
    """The accounting of one attempt: what is reported to the optimizer and in Final."""

    provider: str
    model: str
    n: int
    status: AttemptStatus
    error_reason: str
    usage: Usage
    cost_micro_usd: int
    latency_ms: int
    ttft_ms: int
    price_table_version: str
    occurred_at: float
    """Wall-clock end of the attempt, seconds since the epoch."""
    retry_count: int = 0
    """Retries at this provider, within this call, before this attempt."""


def ms(seconds: float) -> int:
    """Whole milliseconds, never negative."""
    return max(0, round(seconds * 1000))


class AttemptMeter:
    """Counts what happens during one attempt, then states its `record`."""

    def __init__(
        self, provider: ProviderConfig, n: int, request: EngineRequest, retry_count: int = 0
    ) -> None:
        self.provider = provider
        self.n = n
        self.request = request
        self.retry_count = retry_count
        self.started = time.monotonic()
        self.ttft: float | None = None
        self.pieces: list[str] = []  # the text received, for the estimate without usage
        # The attempt's GenAI span: opened here, closed once by `record` (never per token).
        self.span = AttemptSpan.start(provider, n, request, retry_count)

    def text(self, text: str) -> None:
        """The provider sent `text`."""
        if self.ttft is None:
            self.ttft = time.monotonic() - self.started
        self.pieces.append(text)

    def usage(self, finish: Finish | None, reported: Usage | None) -> Usage:
        """What the attempt used."""
        if finish is not None:
            return Usage(
                finish.input_tokens, finish.output_tokens, finish.cached_tokens, finish.estimated
            )
        if reported is not None:
            return reported
        if self.ttft is None:
            return Usage()  # nothing was generated, nothing is billed
        # Cut mid-stream: the provider billed the prompt and what it sent; estimate both.
        return Usage(
            estimate_input_tokens(self.request),
            estimate_tokens("".join(self.pieces)),
            estimated=True,
        )

    def record(
        self,
        status: AttemptStatus,
        prices: PriceTable,
        *,
        finish: Finish | None = None,
        reported: Usage | None = None,
        error_reason: str = "",
    ) -> AttemptRecord:
        """The attempt's accounting, as it ended."""
        usage = self.usage(finish, reported)
        elapsed = time.monotonic() - self.started
        self.span.end(
            usage=usage,
            duration=elapsed,
            ttft=self.ttft,
            finish=finish.reason if finish is not None else None,
            error_type=error_reason or ("CANCELLED" if status is AttemptStatus.CANCELLED else ""),
            failed=status is AttemptStatus.FAILED,
            pieces=self.pieces,
            response_model=finish.model if finish is not None else "",
        )
        return AttemptRecord(
            provider=self.provider.name,
            model=self.provider.model,
            n=self.n,
            status=status,
            error_reason=error_reason,
            usage=usage,
            cost_micro_usd=prices.of(self.provider.name).cost(
                usage.input_tokens, usage.output_tokens, usage.cached_tokens
            ),
            latency_ms=ms(elapsed),
            # 0 means "no token"; a token that came within the first millisecond counts 1.
            ttft_ms=0 if self.ttft is None else max(1, ms(self.ttft)),
            price_table_version=prices.version,
            occurred_at=time.time(),
            retry_count=self.retry_count,
        )
