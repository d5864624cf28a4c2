"""One Reason call, provider attempt by attempt, as a stream of domain events.

`reason` tries the candidates in order: it announces each attempt, passes every text delta
on the moment the engine yields it (or collects them in complete mode), moves to the next
candidate when an attempt fails before the caller got any text and fallback is allowed (and
the failure is one another provider may not share), and ends with
`Finished` (the answer's accounting summed over every attempt) or raises the failure's
status. Each attempt, however it ends, is handed to `report` before the call moves on, so
its outcome reaches the optimizer without the stream waiting for it.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass

from services.common.config import ProviderConfig
from services.common.prices import PriceTable
from services.router.calls import ReasonCall
from services.router.engines.base import (
    Engine,
    EngineRequest,
    Finish,
    FinishReason,
    ProviderError,
    TextDelta,
)
from services.router.failures import FALLBACK_KINDS, provider_failure


class AttemptStatus(enum.Enum):
    """How an attempt ended (values mirror saga.execution.v1.AttemptStatus)."""

    SUCCEEDED = 1
    FAILED = 2
    CANCELLED = 3


@dataclass(frozen=True)
class AttemptStarted:
    """The router calls a provider (first call or fallback)."""

    provider: str
    model: str
    n: int


@dataclass(frozen=True)
class ProviderSwitched:
    """The router moves from a failed provider to the next candidate."""

    from_provider: str
    to_provider: str
    reason: str


@dataclass(frozen=True)
class AttemptRecord:
    """The accounting of one attempt: what is reported to the optimizer and in Final."""

    provider: str
    model: str
    n: int
    status: AttemptStatus
    error_reason: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    estimated: bool
    cost_micro_usd: int
    latency_ms: int
    ttft_ms: int
    price_table_version: str
    occurred_at: float
    """Wall-clock end of the attempt, seconds since the epoch."""


@dataclass(frozen=True)
class Finished:
    """The answer's end and its accounting, summed over every attempt."""

    text: str
    finish_reason: FinishReason
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    estimated: bool
    cost_micro_usd: int
    provider: str
    model: str
    latency_ms: int
    ttft_ms: int
    attempts: tuple[AttemptRecord, ...]
    price_table_version: str


RouterEvent = AttemptStarted | TextDelta | ProviderSwitched | Finished
Report = Callable[[AttemptRecord], None]


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _words(request: EngineRequest) -> int:
    return len(request.system_prompt.split()) + sum(
        len(m.content.split()) for m in request.messages
    )


class _Attempt:
    """Counters of the attempt in progress."""

    def __init__(self, provider: ProviderConfig, n: int) -> None:
        self.provider = provider
        self.n = n
        self.started = time.monotonic()
        self.ttft: float | None = None
        self.words = 0  # of the text received, for the estimate when usage is not reported

    def record(
        self,
        status: AttemptStatus,
        prices: PriceTable,
        request: EngineRequest,
        *,
        finish: Finish | None = None,
        error_reason: str = "",
    ) -> AttemptRecord:
        if finish is not None:
            usage = (finish.input_tokens, finish.output_tokens, finish.cached_tokens)
            estimated = finish.estimated
        elif self.ttft is None:
            usage, estimated = (0, 0, 0), False  # nothing was generated, nothing is billed
        else:
            # Cut mid-stream: the provider billed the input and what it sent; estimate both.
            usage, estimated = (_words(request), self.words, 0), True
        return AttemptRecord(
            provider=self.provider.name,
            model=self.provider.model,
            n=self.n,
            status=status,
            error_reason=error_reason,
            input_tokens=usage[0],
            output_tokens=usage[1],
            cached_tokens=usage[2],
            estimated=estimated,
            cost_micro_usd=prices.of(self.provider.name).cost(*usage),
            latency_ms=_ms(time.monotonic() - self.started),
            # 0 means "no token"; a token that came within the first millisecond counts 1.
            ttft_ms=0 if self.ttft is None else max(1, _ms(self.ttft)),
            price_table_version=prices.version,
            occurred_at=time.time(),
        )


async def reason(
    call: ReasonCall,
    candidates: Sequence[ProviderConfig],
    engines: Mapping[str, Engine],
    prices: PriceTable,
    report: Report,
) -> AsyncIterator[RouterEvent]:
    """Run `call` over `candidates` (see the module docstring)."""
    request = call.engine_request()
    started = time.monotonic()
    first_text: float | None = None
    collected: list[str] = []
    attempts: list[AttemptRecord] = []
    for index, provider in enumerate(candidates):
        attempt = _Attempt(provider, index + 1)
        yield AttemptStarted(provider.name, provider.model, attempt.n)
        finish: Finish | None = None
        try:
            async with aclosing(engines[provider.name].stream(request)) as events:
                async for event in events:
                    if isinstance(event, Finish):
                        finish = event
                        continue
                    if attempt.ttft is None:
                        attempt.ttft = time.monotonic() - attempt.started
                        if first_text is None:
                            first_text = time.monotonic()
                    attempt.words += len(event.text.split())
                    if call.complete:
                        collected.append(event.text)
                    else:
                        yield event
        except ProviderError as error:
            failure = provider_failure(error, provider.name)
            record = attempt.record(
                AttemptStatus.FAILED, prices, request, error_reason=failure.reason
            )
            attempts.append(record)
            report(record)
            last = index + 1 == len(candidates)
            # Text the caller already has cannot be taken back (mid-stream continuation is
            # issue 5); in complete mode nothing was sent, so the partial text is dropped.
            sent = attempt.ttft is not None and not call.complete
            if last or sent or not call.allow_fallback or error.kind not in FALLBACK_KINDS:
                raise failure from None
            collected.clear()
            yield ProviderSwitched(provider.name, candidates[index + 1].name, failure.reason)
            continue
        except (asyncio.CancelledError, GeneratorExit):
            report(attempt.record(AttemptStatus.CANCELLED, prices, request))
            raise

        record = attempt.record(AttemptStatus.SUCCEEDED, prices, request, finish=finish)
        attempts.append(record)
        report(record)
        yield Finished(
            text="".join(collected),
            finish_reason=finish.reason if finish else FinishReason.STOP,
            input_tokens=sum(a.input_tokens for a in attempts),
            output_tokens=sum(a.output_tokens for a in attempts),
            cached_tokens=sum(a.cached_tokens for a in attempts),
            estimated=any(a.estimated for a in attempts),
            cost_micro_usd=sum(a.cost_micro_usd for a in attempts),
            provider=provider.name,
            model=provider.model,
            latency_ms=_ms(time.monotonic() - started),
            ttft_ms=0 if first_text is None else max(1, _ms(first_text - started)),
            attempts=tuple(attempts),
            price_table_version=prices.version,
        )
        return
