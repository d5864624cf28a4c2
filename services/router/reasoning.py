"""One Reason call, provider attempt by attempt, as a stream of domain events.

`reason` walks the ranked candidates whose circuit is not open (only the first of them
without `allow_fallback`; an open one it reaches is skipped). For each it takes the
provider's circuit permit and a slot within its limits — a provider that refuses either is
passed over without a call — announces the attempt, and passes every text delta on the
moment the engine yields it (complete mode collects them instead). Then, by the failure's
kind (`failures`):

* retry on the same provider — transient failures and rate limits only, before any text of
  the attempt arrived, at most `max_retries` times, after a jittered backoff that honours
  Retry-After and fits the caller's deadline, while the provider's circuit stays closed and
  its retry budget allows (`retries`);
* else fall back to the next candidate, announced by `ProviderSwitched` — after a
  context-length failure, past the candidates known too small for the prompt
  (`candidates.too_small`: what the provider's error counted, the windows providers stated);
* else end the call with the failure's status (input errors stop at once).

Every candidate passed over without a call — its circuit open, a limit spent, a window known
too small, or its least cost above what is left of the call's `max_cost_micro_usd` — is
announced by `ProvidersSkipped` (which providers, why, when they may be tried again) before
the attempt that follows, or before the error when none is left, and counted
(`Resilience.refused`). A stream that would bill more than the rest of `max_cost_micro_usd`
is stopped once its text passes that point: the attempt is accounted as it stands and the
call fails RESOURCE_EXHAUSTED COST_LIMIT_EXCEEDED.

A stream that breaks after the caller received text continues on the next candidate, which
is asked to pick up from the partial text (`continuation`), so the caller reads one text.
Each attempt, however it ends, is handed to `report` as soon as it ends, with its provider
cost and the caller's charge for it (`charges`: whether its text was relayed counts);
`Finished` carries the usage, cost and charge summed over every attempt. When no candidate
could be called at all the call ends with the refusal that clears soonest (CIRCUIT_OPEN or
PROVIDER_LIMIT_REACHED, with RetryInfo).

Timeouts (connect, first token, idle, total) are the engines' own, raised as `ProviderTimeout`;
the caller's deadline ends the whole call through gRPC's cancellation, and a retry is only
started when its wait leaves time for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field

from services.common.circuit import Circuit, CircuitState, Permit
from services.common.config import ProviderConfig
from services.common.errors import SagaError, Unavailable
from services.common.prices import PriceTable
from services.common.tokens import estimate_tokens
from services.common.usage import Usage
from services.router.attempts import AttemptMeter, AttemptRecord, AttemptStatus, ms
from services.router.budget_reservations import cost_limit_exceeded, min_cost, output_tokens_within
from services.router.calls import ReasonCall
from services.router.candidates import PromptSize, after_too_long, too_long, too_small
from services.router.charges import ChargePolicy
from services.router.continuation import RepeatFilter, continuation_request
from services.router.engines.base import (
    Engine,
    EngineRequest,
    Finish,
    FinishReason,
    ProviderError,
    TextDelta,
    estimate_input_tokens,
)
from services.router.engines.tools import ToolCall, ToolCallAssembler, ToolCallDelta
from services.router.failures import Failure, Verdict, circuit_open, classify, limit_reached
from services.router.limits import LimitReached
from services.router.resilience import ProviderState, Resilience
from services.router.retries import retry_delay
from services.router.structured import answer_problem, feedback_request, invalid_output

__all__ = [
    "AttemptRecord",
    "AttemptStarted",
    "AttemptStatus",
    "Finished",
    "ProviderSwitched",
    "ProvidersSkipped",
    "RouterEvent",
    "Skip",
    "reason",
]

RETRY_HEADROOM_SECONDS = 0.25
"""A retry must leave at least this much of the caller's deadline after its wait."""


@dataclass(frozen=True)
class AttemptStarted:
    """The router calls a provider (first call, retry or fallback)."""

    provider: str
    model: str
    n: int
    held: asyncio.Future[None] | None = field(default=None, compare=False)
    """Gated runs (`reason(gated=True)`): the request leaves only once the consumer resolves
    this — once the attempt's provisional record is stored (`call_steps`); its exception
    ends the attempt unsent."""


@dataclass(frozen=True)
class Skip:
    """One candidate passed over without a call."""

    provider: str
    reason: str
    """An ErrorInfo reason: CIRCUIT_OPEN, PROVIDER_LIMIT_REACHED, COST_LIMIT_EXCEEDED,
    PROVIDER_CONTEXT_LENGTH_EXCEEDED (a window it stated is too small for the prompt)."""
    retry_after: float = 0.0
    """Seconds until it may be tried again; 0 = unknown."""


@dataclass(frozen=True)
class ProvidersSkipped:
    """The router passed over these candidates (sent before the attempt after them)."""

    skipped: tuple[Skip, ...]


@dataclass(frozen=True)
class ProviderSwitched:
    """The router moves from a failed provider to the next candidate (or, after an answer
    that failed its schema, to the same provider once more)."""

    from_provider: str
    to_provider: str
    reason: str
    tool_calls_discarded: bool = False
    """The tool-call deltas relayed so far are void (the next attempt's start at 0)."""


@dataclass(frozen=True)
class Finished:
    """The answer's end and its accounting, summed over every attempt."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    cost_micro_usd: int
    charge_micro_usd: int
    """What the caller is charged, summed over the attempts (`charges`)."""
    provider: str
    model: str
    latency_ms: int
    ttft_ms: int
    attempts: tuple[AttemptRecord, ...]
    price_table_version: str
    tool_calls: tuple[ToolCall, ...] = ()
    """The answer's tool calls, complete and checked against their tools' schemas."""


RouterEvent = (
    AttemptStarted | TextDelta | ToolCallDelta | ProvidersSkipped | ProviderSwitched | Finished
)
Report = Callable[[AttemptRecord], None]
Sleep = Callable[[float], Awaitable[None]]


class _CostLimitReached(Exception):
    """Raised inside an attempt whose text passed the call's cost limit."""


class _Unsent(Exception):
    """Raised inside an attempt whose gate failed: its request never left."""

    def __init__(self, error: Unavailable) -> None:
        super().__init__(error.message)
        self.error = error


def _judge(circuit: Circuit, permit: Permit, verdict: Verdict) -> None:
    if verdict is Verdict.FAILURE:
        circuit.record_failure(permit)
    elif verdict is Verdict.TRIP:
        circuit.trip(permit)
    elif verdict is Verdict.SUCCESS:
        circuit.record_success(permit)
    else:
        circuit.release(permit)


def _circuit_open(state: ProviderState) -> Skip | None:
    """The skip of a candidate whose circuit is open, or None when it may be called."""
    circuit = state.circuit
    if circuit.state is not CircuitState.OPEN:
        return None
    return Skip(state.config.name, "CIRCUIT_OPEN", circuit.retry_after())


class _Call:
    """The state of one call across its attempts."""

    def __init__(self, call: ReasonCall, prices: PriceTable, report: Report) -> None:
        self.call = call
        self.prices = prices
        self.report = report
        self.base = call.engine_request()
        self.started = time.monotonic()
        self.first_text: float | None = None
        self.sent: list[str] = []  # text the caller received (streaming mode)
        self.attempts: list[AttemptRecord] = []
        self.n = 0
        self.skipped: list[Skip] = []  # not yet announced
        self.tools_sent = False  # tool-call deltas relayed by the attempt that just ended
        self.checked_once = False  # an answer failed its schema and was asked for again

    def skip(self, skip: Skip, resilience: Resilience) -> None:
        """Pass over a candidate: counted now, announced before the next attempt."""
        self.skipped.append(skip)
        resilience.refused(skip.provider, skip.reason)

    def announce(self) -> ProvidersSkipped | None:
        """The skips not yet announced, if any."""
        if not self.skipped:
            return None
        event = ProvidersSkipped(tuple(self.skipped))
        self.skipped = []
        return event

    def cost_left(self) -> int:
        """What is left of the call's cost limit (only meaningful with one)."""
        return self.call.max_cost_micro_usd - sum(r.cost_micro_usd for r in self.attempts)

    def char_cap(self, provider: ProviderConfig, request: EngineRequest) -> int | None:
        """The most characters of text this attempt may receive within the cost limit
        (~4 characters a token, the estimate a cut stream is billed by); None = no cap."""
        if self.call.max_cost_micro_usd <= 0:
            return None
        tokens = output_tokens_within(
            self.prices.of(provider.name), estimate_input_tokens(request), self.cost_left()
        )
        return None if tokens is None else tokens * 4

    def request_for_next(self) -> tuple[EngineRequest, str]:
        """The request of the next provider, and the partial text it must continue."""
        partial = "".join(self.sent)
        if not partial:
            return self.base, ""
        remaining = self.base.max_tokens - estimate_tokens(partial)
        return continuation_request(self.base, partial, remaining), partial

    def add(self, record: AttemptRecord) -> None:
        self.attempts.append(record)
        self.report(record)

    def finished(
        self,
        provider: ProviderConfig,
        finish: Finish | None,
        text: str,
        tool_calls: tuple[ToolCall, ...],
    ) -> Finished:
        a = self.attempts
        reason = finish.reason if finish else FinishReason.STOP
        return Finished(
            text=text,
            finish_reason=FinishReason.TOOL_CALLS if tool_calls else reason,
            tool_calls=tool_calls,
            usage=sum((r.usage for r in a), Usage()),
            cost_micro_usd=sum(r.cost_micro_usd for r in a),
            charge_micro_usd=sum(r.charge_micro_usd for r in a),
            provider=provider.name,
            model=provider.model,
            latency_ms=ms(time.monotonic() - self.started),
            ttft_ms=0 if self.first_text is None else max(1, ms(self.first_text - self.started)),
            attempts=tuple(a),
            price_table_version=self.prices.version,
        )


def _may_retry(
    failure: Failure,
    meter: AttemptMeter,
    state: ProviderState,
    resilience: Resilience,
    deadline: float | None,
) -> float | None:
    """The wait before retrying the same provider, or None when it may not be retried.
    The budget is spent only when every other condition holds."""
    if not failure.retry or meter.ttft is not None:
        return None
    if meter.retry_count >= state.config.max_retries:
        return None
    if state.circuit.state is not CircuitState.CLOSED:
        return None
    limited = resilience.rate_limit_backoff if failure.rate_limited else None
    delay = retry_delay(
        resilience.backoff, meter.retry_count + 1, failure.retry_after, rate_limit=limited
    )
    if delay is None:
        return None
    now = asyncio.get_running_loop().time()
    if deadline is not None and now + delay + RETRY_HEADROOM_SECONDS > deadline:
        return None
    if not state.retries.try_spend():
        return None
    return delay


async def reason(
    call: ReasonCall,
    candidates: Sequence[ProviderConfig],
    engines: Mapping[str, Engine],
    prices: PriceTable,
    report: Report,
    resilience: Resilience,
    *,
    deadline: float | None = None,
    sleep: Sleep = asyncio.sleep,
    policy: ChargePolicy = ChargePolicy.ALL_ATTEMPTS,
    gated: bool = False,
) -> AsyncGenerator[RouterEvent, None]:
    """Run `call` over `candidates` (see the module docstring). `deadline` is the caller's,
    in event-loop time; `policy` decides each attempt's charge; `gated`, each attempt waits
    for its `AttemptStarted.held` before calling the provider (the consumer may read ahead
    of the caller — `coalescing` — so the wait has to be here)."""
    run = _Call(call, prices, report)
    failure: Failure | None = None  # of the last attempt
    switch_from = ""  # the failed provider to announce before the next attempt
    refusals: list[SagaError] = []  # candidates passed over without a call
    size = PromptSize(estimate_input_tokens(run.base), run.base.max_tokens)
    too_long_for: SagaError | None = None  # a candidate passed over: it stated a smaller window
    reached = False  # a candidate not skipped: without fallback, the only one
    for provider in candidates:
        state = resilience.states[provider.name]
        if reached and not call.allow_fallback:
            break
        if (open_circuit := _circuit_open(state)) is not None:
            # Left out of the chain, and said: the caller learns why it was not tried.
            refusals.append(circuit_open(provider.name, open_circuit.retry_after))
            run.skip(open_circuit, resilience)
            continue
        learned = state.window
        if too_small(provider, learned, size):
            if too_long_for is None and (window := learned.window()) is not None:
                too_long_for = too_long(provider.name, window, size.estimate)
            run.skip(Skip(provider.name, "PROVIDER_CONTEXT_LENGTH_EXCEEDED"), resilience)
            continue
        request, partial = run.request_for_next()
        if call.max_cost_micro_usd > 0 and (
            (least := min_cost(request, provider, prices)) > run.cost_left()
        ):
            # Like an open circuit, not a failure: the next candidate may still fit.
            refusals.append(cost_limit_exceeded(call.max_cost_micro_usd, least))
            run.skip(Skip(provider.name, "COST_LIMIT_EXCEEDED"), resilience)
            continue
        reached = True
        engine = engines[provider.name]
        retries = 0
        while True:
            permit = state.circuit.allow()
            if permit is None:
                refusals.append(circuit_open(provider.name, state.circuit.retry_after()))
                run.skip(
                    Skip(provider.name, "CIRCUIT_OPEN", state.circuit.retry_after()), resilience
                )
                switch_from = provider.name if retries else switch_from
                break
            try:
                lease = await state.limits.acquire(
                    estimate_input_tokens(request) + request.max_tokens
                )
            except LimitReached as limit:
                state.circuit.release(permit)
                refusals.append(limit_reached(provider.name, limit.message, limit.retry_after))
                run.skip(Skip(provider.name, refusals[-1].reason, limit.retry_after), resilience)
                # A retry refused: the failed attempt before it is what the next one follows.
                switch_from = provider.name if retries else switch_from
                break
            except asyncio.CancelledError:
                state.circuit.release(permit)  # a probe permit must not be lost
                raise
            if retries == 0:
                state.retries.note_call()
            run.n += 1
            meter = AttemptMeter(provider, run.n, request, retries, policy)
            finish: Finish | None = None
            collected: list[str] = []
            assembler = ToolCallAssembler()
            repeat = RepeatFilter(partial) if partial else None
            cap = run.char_cap(provider, request)
            chars = 0  # received in this attempt, against `cap`
            try:
                if (skipped := run.announce()) is not None:
                    yield skipped
                if switch_from and failure is not None:
                    yield ProviderSwitched(
                        switch_from, provider.name, failure.error.reason, run.tools_sent
                    )
                    switch_from = ""
                    run.tools_sent = False
                held = asyncio.get_running_loop().create_future() if gated else None
                yield AttemptStarted(provider.name, provider.model, run.n, held)
                if held is not None:
                    try:
                        await held
                    except Unavailable as error:
                        raise _Unsent(error) from None
                async with aclosing(engine.stream(request)) as events:
                    async for event in events:
                        if isinstance(event, Finish):
                            finish = event
                            continue
                        if isinstance(event, ToolCallDelta):
                            meter.text(event.arguments)
                            chars += len(event.arguments)
                            assembler.add(event)
                            if cap is not None and chars > cap:
                                raise _CostLimitReached
                            if not call.complete:
                                if run.first_text is None:
                                    run.first_text = time.monotonic()
                                run.tools_sent = meter.delivered = True
                                yield event
                            continue
                        meter.text(event.text)
                        chars += len(event.text)
                        if cap is not None and chars > cap:
                            raise _CostLimitReached
                        if call.complete or call.response_format.is_json:
                            # A structured answer is delivered only once it is checked.
                            collected.append(event.text)
                            continue
                        text = event.text if repeat is None else repeat.feed(event.text)
                        if text:
                            if run.first_text is None:
                                run.first_text = time.monotonic()
                            run.sent.append(text)
                            meter.delivered = True
                            yield TextDelta(text)
                if repeat is not None and (rest := repeat.flush()):
                    run.sent.append(rest)
                    meter.delivered = True
                    yield TextDelta(rest)
            except ProviderError as error:
                failure = classify(error, provider)
                _judge(state.circuit, permit, failure.verdict)
                record = meter.record(
                    AttemptStatus.FAILED,
                    prices,
                    reported=error.usage,
                    error_reason=failure.error.reason,
                )
                lease.release(record.usage.total_tokens)
                run.add(record)
                delay = _may_retry(failure, meter, state, resilience, deadline)
                if delay is not None:
                    retries += 1
                    await sleep(delay)
                    continue
                if not call.allow_fallback or not failure.fallback:
                    raise failure.error from None
                if failure.larger_context:
                    after_too_long(provider, learned, size, error.message)
                switch_from = provider.name
                break
            except _CostLimitReached:
                # No verdict on the provider: it did nothing wrong. The text it sent is billed.
                state.circuit.release(permit)
                record = meter.record(
                    AttemptStatus.FAILED, prices, error_reason="COST_LIMIT_EXCEEDED"
                )
                lease.release(record.usage.total_tokens)
                run.add(record)
                raise cost_limit_exceeded(
                    call.max_cost_micro_usd,
                    call.max_cost_micro_usd - run.cost_left(),
                    provider.name,
                ) from None
            except (asyncio.CancelledError, GeneratorExit):
                # The caller went away (or its deadline passed): no verdict on the provider.
                state.circuit.release(permit)
                record = meter.record(AttemptStatus.CANCELLED, prices)
                lease.release(record.usage.total_tokens)
                run.add(record)
                raise
            except _Unsent as unsent:
                # The provider was never called: no verdict on it, nothing spent; the record
                # tells the store to withdraw the attempt's provisional one.
                state.circuit.release(permit)
                lease.release(0)
                record = meter.record(
                    AttemptStatus.FAILED, prices, error_reason=unsent.error.reason
                )
                run.add(dataclasses.replace(record, sent=False))
                raise unsent.error from None
            except Exception as error:
                # Not the taxonomy (an engine's bug, or a status it raised as is): account
                # for the attempt and free what it held, then let the guard answer.
                state.circuit.release(permit)
                why = error.reason if isinstance(error, SagaError) else "INTERNAL"
                record = meter.record(AttemptStatus.FAILED, prices, error_reason=why)
                lease.release(record.usage.total_tokens)
                run.add(record)
                raise
            state.circuit.record_success(permit)
            record = meter.record(AttemptStatus.SUCCEEDED, prices, finish=finish)
            lease.release(record.usage.total_tokens)
            run.add(record)
            text = "".join(collected)
            tool_calls = assembler.calls(f"call_{secrets.token_hex(6)}")
            problem = answer_problem(request, text, tool_calls)
            if problem is not None:
                if run.checked_once:
                    raise invalid_output(problem, provider.name)
                # Asked once more with what is wrong; what the caller already saw stays.
                run.checked_once = True
                request = feedback_request(request, text, tool_calls, problem)
                partial = "".join(run.sent)
                switch_from = provider.name
                failure = Failure(
                    invalid_output(problem, provider.name),
                    retry=False,
                    fallback=False,
                    verdict=Verdict.NONE,
                )
                continue
            if call.response_format.is_json and not call.complete and text:
                if run.first_text is None:
                    run.first_text = time.monotonic()
                yield TextDelta(text)
            yield run.finished(provider, finish, text if call.complete else "", tool_calls)
            return
    if (skipped := run.announce()) is not None:
        yield skipped
    if failure is not None:
        raise failure.error
    if refusals:
        raise min(refusals, key=lambda e: e.retry_after or 0.0)
    if too_long_for is not None:
        raise too_long_for
    raise Unavailable(
        "no provider is eligible for this call", reason="NO_PROVIDER_AVAILABLE", retry_after=1.0
    )
