"""The accounting of one provider attempt: usage, cost, timings, how it ended.

Usage comes from the provider when it reported it (the engine's `Finish`, or the `usage` a
failed engine attaches). When it did not — a stream cut mid-way, say — the attempt is billed
as estimated and flagged: the prompt's input tokens and the text received, ~4 characters a
token. An attempt that produced nothing and reported nothing costs nothing. Beside its cost
(what the provider billed: input, output, cache reads and writes each at its price) an
attempt carries its charge, what the caller pays for it (`charges`, by the configured policy;
the meter is told whether the attempt's text was relayed to the caller).

In flight (`InFlight`), an attempt is also held durably as a provisional record, so a router
that crashes mid-stream still bills it: the request leaves for the provider only once that
first record is committed (one group commit, about 0.3 ms on a local SQLite file — a crash
at any point after the provider was called bills the attempt), and no text is given to the
caller beyond what is durable; estimated (flagged) as the prompt's input
tokens plus a *claim* on the output — characters, ~4 a token, always at least what the
caller was given. The claim starts at
`CLAIM_AHEAD_CHARS` and is raised, ahead of the text, to what was given plus
`CLAIM_AHEAD_CHARS` (~64 tokens) or a quarter more, whichever is larger: one write per
~200 characters at first, then per ~19 % more text (about a dozen writes for a 1,000-token
answer), queued three quarters through the previous claim so the stream rarely waits for it,
and waited for only when text would pass the durable claim. A crashed attempt is therefore
billed for the text the caller was given, at most a quarter (or `CLAIM_AHEAD_CHARS`) more —
text the provider sent that was still queued for a slow caller (`coalescing`) is not; in
complete mode (no text until the end) the claim is the request's `max_tokens`, the most it
may have produced. The attempt's real record, however it ends, replaces the provisional one.
"""

from __future__ import annotations

import asyncio
import enum
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.common.config import ProviderConfig
from services.common.prices import PriceTable
from services.common.tokens import estimate_tokens
from services.common.usage import Usage
from services.router.charges import ChargePolicy, charge
from services.router.engines.base import (
    EngineRequest,
    Finish,
    estimate_input_tokens,
)
from services.router.engines.progress import usage_of
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
    """What the provider billed (or, flagged as estimated, what Saga estimates it billed)."""
    charge_micro_usd: int
    """What the caller is charged for it (`charges`), at most `cost_micro_usd`."""
    latency_ms: int
    ttft_ms: int
    price_table_version: str
    occurred_at: float
    """Wall-clock end of the attempt, seconds since the epoch."""
    retry_count: int = 0
    """Retries at this provider, within this call, before this attempt."""
    sent: bool = True
    """False: the request never left (its provisional record could not be stored first), so
    the provider was not called — nothing to bill, no outcome to record, no verdict on it."""


def ms(seconds: float) -> int:
    """Whole milliseconds, never negative."""
    return max(0, round(seconds * 1000))


class AttemptMeter:
    """Counts what happens during one attempt, then states its `record`."""

    def __init__(
        self,
        provider: ProviderConfig,
        n: int,
        request: EngineRequest,
        retry_count: int = 0,
        policy: ChargePolicy = ChargePolicy.ALL_ATTEMPTS,
    ) -> None:
        self.provider = provider
        self.n = n
        self.request = request
        self.retry_count = retry_count
        self.policy = policy
        self.delivered = False
        """Some of the attempt's text was relayed to the caller (set by the caller of
        `text`, which knows: complete mode relays nothing of a failed attempt)."""
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
            return usage_of(finish)
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
        cost = prices.of(self.provider.name).cost(
            usage.input_tokens, usage.output_tokens, usage.cached_tokens, usage.cache_write_tokens
        )
        return AttemptRecord(
            provider=self.provider.name,
            model=self.provider.model,
            n=self.n,
            status=status,
            error_reason=error_reason,
            usage=usage,
            cost_micro_usd=cost,
            charge_micro_usd=charge(
                self.policy,
                cost,
                succeeded=status is AttemptStatus.SUCCEEDED,
                cancelled=status is AttemptStatus.CANCELLED,
                error_reason=error_reason,
                delivered=self.delivered,
            ),
            latency_ms=ms(elapsed),
            # 0 means "no token"; a token that came within the first millisecond counts 1.
            ttft_ms=0 if self.ttft is None else max(1, ms(self.ttft)),
            price_table_version=prices.version,
            occurred_at=time.time(),
            retry_count=self.retry_count,
        )


CLAIM_AHEAD_CHARS = 256
"""The least a provisional record claims beyond the text the caller was given."""
STOPPED_REASON = "ROUTER_STOPPED"
"""The error reason of a provisional record: the router stopped during the attempt."""

Hold = Callable[[AttemptRecord], Awaitable[None]]
"""Stores (or raises) an attempt's provisional record; done when it is stored."""


class InFlight:
    """An attempt held durably while it runs (see the module docstring). The hot path adds
    each delta's length to `given` and calls `advance` only once `given` passes `soft`."""

    def __init__(
        self,
        provider: ProviderConfig,
        n: int,
        input_tokens: int,
        max_tokens: int,
        prices: PriceTable,
        hold: Hold,
        policy: ChargePolicy = ChargePolicy.ALL_ATTEMPTS,
    ) -> None:
        self.provider = provider
        self._policy = policy
        self.n = n
        self.given = 0
        """Characters of this attempt's text the caller was given (or is about to be)."""
        self.soft = 0
        """Past this many characters given, raise the claim."""
        self._input = input_tokens
        self._max_tokens = max_tokens
        self._prices = prices
        self._hold = hold
        self.durable = 0
        """Characters claimed by the latest committed write: no more may be given."""
        self._latest: tuple[int, asyncio.Future[None]] | None = None
        self._started = time.monotonic()
        self._closed = False

    def close(self) -> None:
        """The attempt's real record is stored: claim nothing more."""
        self._closed = True
        self.soft = 1 << 62

    def start(self, complete: bool) -> None:
        """Begin storing the first claim (the request's whole `max_tokens` in complete mode);
        the provider is called once it is stored (`held`)."""
        self._claim(self._max_tokens * 4 if complete else CLAIM_AHEAD_CHARS)

    async def held(self) -> None:
        """Wait until the latest claim is committed (it raises if it could not be)."""
        await self._wait()

    async def advance(self) -> None:
        """Raise the claim ahead of `given`; wait only if `given` is past the durable
        claim."""
        if self._closed:
            return
        if self._latest is None or self.given > self.soft:
            self._claim(self.given + max(CLAIM_AHEAD_CHARS, self.given // 4))
        if self.given > self.durable:
            await self._wait()

    def record(self, chars: int) -> AttemptRecord:
        """The provisional record claiming `chars` characters of output."""
        output = math.ceil(chars / 4)
        cost = self._prices.of(self.provider.name).cost(self._input, output)
        return AttemptRecord(
            provider=self.provider.name,
            model=self.provider.model,
            n=self.n,
            status=AttemptStatus.FAILED,
            error_reason=STOPPED_REASON,
            usage=Usage(self._input, output, estimated=True),
            cost_micro_usd=cost,
            # Should the router stop now, the caller has been given `given` characters.
            charge_micro_usd=charge(
                self._policy,
                cost,
                succeeded=False,
                cancelled=False,
                error_reason=STOPPED_REASON,
                delivered=self.given > 0,
            ),
            latency_ms=ms(time.monotonic() - self._started),
            ttft_ms=0,
            price_table_version=self._prices.version,
            occurred_at=time.time(),
        )

    def _claim(self, chars: int) -> None:
        if self._closed:
            return
        future = asyncio.ensure_future(self._hold(self.record(chars)))
        self._latest = (chars, future)
        self.soft = self.given + 3 * (chars - self.given) // 4

        def stored(done: asyncio.Future[None]) -> None:
            if not done.cancelled() and done.exception() is None:
                self.durable = max(self.durable, chars)

        future.add_done_callback(stored)

    async def _wait(self) -> None:
        """Wait for the latest claim (stores commit in order: the earlier ones too)."""
        if self._latest is None:
            return
        chars, future = self._latest
        await asyncio.shield(future)
        self.durable = max(self.durable, chars)
