"""One Embed call: texts to vectors, in batches, on one provider, accounted like Reason.

The candidates are the providers able to embed — the `embeddings` capability and an engine
that embeds (sim, openai, ollama) — among the caller's allowed ones, preferred ones first
(`candidates`). The inputs go in batches of at most `BATCH_INPUTS` texts and `BATCH_CHARS`
characters; each batch is one attempt, counted in the provider's circuit and limits like a
Reason attempt, recorded with its usage (input tokens only), cost and charge, and reported
(outbox → the optimizer's usage ledger) as it ends. Every batch of a call goes to the same
provider: vectors of different models do not mix, so when a batch fails and fallback is
allowed (and the failure permits it, `failures`), the next candidate redoes every batch —
the batches already done stay billed. There is no retry on the same provider.

The call's maximum cost (its inputs' estimated tokens at the dearest candidate's input
price, capped by `max_cost_micro_usd`) is reserved before any provider is called and settled
to what the attempts charge, however the call ends; a first candidate whose estimate
exceeds `max_cost_micro_usd` is refused COST_LIMIT_EXCEEDED before it is called.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from services.common.circuit import CircuitState
from services.common.config import ProviderConfig
from services.common.errors import FieldViolation, InvalidArgument, SagaError, Unavailable
from services.common.prices import PriceTable
from services.common.tokens import estimate_tokens
from services.common.usage import Usage
from services.router.attempts import AttemptRecord, AttemptStatus, ms
from services.router.budget_reservations import cost_limit_exceeded
from services.router.call_steps import CallBudget, StoreOutcome, all_stored
from services.router.calls import Accounting
from services.router.candidates import allowed_only, choose, no_capable_provider
from services.router.charges import ChargePolicy, charge
from services.router.engines.base import Caller, Embedder, Engine, ProviderError
from services.router.failures import circuit_open, classify
from services.router.limits import LimitReached
from services.router.outcomes import call_id
from services.router.rankings import RankingSnapshot
from services.router.resilience import Resilience

MAX_INPUTS = 2048
MAX_INPUT_CHARS = 32_768
MAX_TOTAL_CHARS = 1_000_000
MAX_DIMENSIONS = 8192
BATCH_INPUTS = 128
BATCH_CHARS = 200_000
CAPABILITY = "embeddings"


@dataclass(frozen=True)
class EmbedCall:
    """One Embed request, as received."""

    inputs: tuple[str, ...]
    dimensions: int = 0
    preferred: tuple[str, ...] = ()
    pinned: str = ""
    allowed: tuple[str, ...] = ()
    allow_fallback: bool = False
    accounting: Accounting = field(default_factory=Accounting)
    max_cost_micro_usd: int = 0
    caller: Caller = field(default_factory=Caller)


@dataclass(frozen=True)
class Embeddings:
    """The vectors (in input order) and the call's accounting over every attempt."""

    vectors: tuple[tuple[float, ...], ...]
    usage: Usage
    cost_micro_usd: int
    charge_micro_usd: int
    provider: str
    model: str
    attempts: tuple[AttemptRecord, ...]
    price_table_version: str


def _invalid(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(
        f"{field}: {description}",
        reason="EMBED_INPUT_INVALID",
        field_violations=[FieldViolation(field, description)],
    )


def validate(call: EmbedCall) -> None:
    """Raise InvalidArgument EMBED_INPUT_INVALID for the first bound `call` breaks."""
    if not 1 <= len(call.inputs) <= MAX_INPUTS:
        raise _invalid("inputs", f"1 to {MAX_INPUTS} texts")
    for i, text in enumerate(call.inputs):
        if not text.strip() or len(text) > MAX_INPUT_CHARS:
            raise _invalid(f"inputs[{i}]", f"non-blank, at most {MAX_INPUT_CHARS} characters")
    if sum(len(t) for t in call.inputs) > MAX_TOTAL_CHARS:
        raise _invalid("inputs", f"at most {MAX_TOTAL_CHARS} characters in all")
    if not 0 <= call.dimensions <= MAX_DIMENSIONS:
        raise _invalid("dimensions", f"0 (the model's) to {MAX_DIMENSIONS}")
    if call.max_cost_micro_usd < 0:
        raise _invalid("max_cost_micro_usd", "0 (no limit) or more")


def batches(inputs: Sequence[str]) -> list[range]:
    """The index ranges of the batches `inputs` go in (see the module docstring)."""
    out: list[range] = []
    start = chars = 0
    for i, text in enumerate(inputs):
        if i > start and (i - start >= BATCH_INPUTS or chars + len(text) > BATCH_CHARS):
            out.append(range(start, i))
            start, chars = i, 0
        chars += len(text)
    out.append(range(start, len(inputs)))
    return out


def estimate(call: EmbedCall, provider: ProviderConfig, prices: PriceTable) -> int:
    """What the call would cost on `provider`, its tokens estimated from its characters."""
    tokens = sum(estimate_tokens(t) for t in call.inputs)
    return prices.of(provider.name).cost(tokens, 0, 0, 0)


async def embed(
    call: EmbedCall,
    candidates: Sequence[ProviderConfig],
    engines: Mapping[str, Engine],
    prices: PriceTable,
    resilience: Resilience,
    report: Callable[[AttemptRecord], None],
    policy: ChargePolicy = ChargePolicy.ALL_ATTEMPTS,
) -> Embeddings:
    """Embed `call.inputs` on the first candidate that answers every batch (see the module
    docstring); raise the last failure, or the refusal of every candidate."""
    attempts: list[AttemptRecord] = []
    refusals: list[SagaError] = []
    failure: SagaError | None = None
    parts = batches(call.inputs)
    for provider in candidates:
        state = resilience.states[provider.name]
        engine = cast(Embedder, engines[provider.name])  # `able` checked it embeds
        if state.circuit.state is CircuitState.OPEN:
            refusals.append(circuit_open(provider.name, state.circuit.retry_after()))
            resilience.refused(provider.name, "CIRCUIT_OPEN")
            continue
        vectors: list[tuple[float, ...]] = []
        for part in parts:
            texts = call.inputs[part.start : part.stop]
            permit = state.circuit.allow()
            if permit is None:
                refusals.append(circuit_open(provider.name, state.circuit.retry_after()))
                break
            try:
                lease = await state.limits.acquire(sum(estimate_tokens(t) for t in texts))
            except LimitReached as limit:
                state.circuit.release(permit)
                resilience.refused(provider.name, "PROVIDER_LIMIT_REACHED")
                refusals.append(
                    Unavailable(
                        limit.message,
                        reason="PROVIDER_LIMIT_REACHED",
                        retry_after=limit.retry_after,
                    )
                )
                break
            started = time.monotonic()
            try:
                result = await engine.embed(texts, call.dimensions, call.caller)
            except ProviderError as error:
                decided = classify(error, provider)
                state.circuit.record_failure(permit)
                lease.release(0)
                attempts.append(
                    _record(
                        provider,
                        len(attempts) + 1,
                        Usage(),
                        prices,
                        policy,
                        started,
                        decided.error.reason,
                    )
                )
                report(attempts[-1])
                failure = decided.error
                if not call.allow_fallback or not decided.fallback:
                    raise failure from None
                break
            except BaseException as gone:
                # The caller went away (or an engine bug): no verdict on the provider, and
                # the batch is billed as estimated — the provider may well have answered it.
                state.circuit.release(permit)
                lease.release(0)
                tokens = sum(estimate_tokens(t) for t in texts)
                cancelled = not isinstance(gone, Exception)
                attempts.append(
                    _record(
                        provider,
                        len(attempts) + 1,
                        Usage(tokens, 0, 0, True),
                        prices,
                        policy,
                        started,
                        "" if cancelled else "INTERNAL",
                        status=AttemptStatus.CANCELLED if cancelled else AttemptStatus.FAILED,
                    )
                )
                report(attempts[-1])
                raise
            state.circuit.record_success(permit)
            usage = Usage(result.input_tokens, 0, 0, result.estimated)
            lease.release(result.input_tokens)
            attempts.append(_record(provider, len(attempts) + 1, usage, prices, policy, started))
            report(attempts[-1])
            vectors += result.vectors
        else:
            return Embeddings(
                vectors=tuple(vectors),
                usage=sum((a.usage for a in attempts), Usage()),
                cost_micro_usd=sum(a.cost_micro_usd for a in attempts),
                charge_micro_usd=sum(a.charge_micro_usd for a in attempts),
                provider=provider.name,
                model=provider.model,
                attempts=tuple(attempts),
                price_table_version=prices.version,
            )
        if not call.allow_fallback:
            break
    if failure is not None:
        raise failure
    if refusals:
        raise min(refusals, key=lambda e: e.retry_after or 0.0)
    raise Unavailable(
        "no provider that can embed is eligible", reason="NO_PROVIDER_AVAILABLE", retry_after=1.0
    )


def candidates(
    call: EmbedCall,
    providers: Sequence[ProviderConfig],
    engines: Mapping[str, Engine],
    snapshot: RankingSnapshot | None,
) -> list[ProviderConfig]:
    """The call's candidates, best first: among the allowed providers, those with the
    `embeddings` capability and an engine that embeds (an anthropic one never does);
    FailedPrecondition NO_CAPABLE_PROVIDER when none is left, or the pinned one is not."""
    permitted = allowed_only(providers, call.allowed)
    capable = [
        p for p in permitted if CAPABILITY in p.capabilities and hasattr(engines[p.name], "embed")
    ]
    names = {p.name for p in capable}
    others = {p.name for p in permitted} - names
    if not capable or call.pinned in others:
        raise no_capable_provider((CAPABILITY,))
    # A preference for a provider that cannot embed lapses (an unknown one fails `choose`).
    preferred = [n for n in call.preferred if n not in others]
    return choose(capable, snapshot, preferred=preferred, pinned=call.pinned)


async def run_embed(
    call: EmbedCall,
    providers: Sequence[ProviderConfig],
    engines: Mapping[str, Engine],
    snapshot: RankingSnapshot | None,
    prices: PriceTable,
    budget: CallBudget,
    resilience: Resilience,
    store: StoreOutcome,
    policy: ChargePolicy = ChargePolicy.ALL_ATTEMPTS,
) -> Embeddings:
    """The call's steps (see the module docstring): candidates, the cost limit, the budget
    reserved, the batches embedded with every attempt stored before the answer (else
    USAGE_NOT_STORED), the reservation settled to the charge however the call ended."""
    ranked = candidates(call, providers, engines, snapshot)
    check_cost(call, ranked[0], prices)
    most = max(estimate(call, p, prices) for p in ranked)
    if call.max_cost_micro_usd:
        most = min(most, call.max_cost_micro_usd)
    a = call.accounting
    cid = call_id(a)
    reservation = await budget.reserve(cid, a.user_id, a.execution_id, most, a.key_id)
    stored: list[Awaitable[None]] = []
    charged = 0

    def report(record: AttemptRecord) -> None:
        nonlocal charged
        charged += record.charge_micro_usd
        stored.append(store(record, cid))

    try:
        result = await embed(call, ranked, engines, prices, resilience, report, policy)
        await all_stored(stored)
    finally:
        budget.settle(reservation, charged)
    return result


def check_cost(call: EmbedCall, first: ProviderConfig, prices: PriceTable) -> None:
    """Refuse a call whose estimate on its first candidate exceeds its cost limit."""
    if (
        call.max_cost_micro_usd
        and (cost := estimate(call, first, prices)) > call.max_cost_micro_usd
    ):
        raise cost_limit_exceeded(call.max_cost_micro_usd, cost, first.name)


def _record(
    provider: ProviderConfig,
    n: int,
    usage: Usage,
    prices: PriceTable,
    policy: ChargePolicy,
    started: float,
    error_reason: str = "",
    status: AttemptStatus | None = None,
) -> AttemptRecord:
    cost = prices.of(provider.name).cost(usage.input_tokens, 0, 0, 0)
    if status is None:
        status = AttemptStatus.FAILED if error_reason else AttemptStatus.SUCCEEDED
    succeeded = status is AttemptStatus.SUCCEEDED
    return AttemptRecord(
        provider=provider.name,
        model=provider.model,
        n=n,
        status=status,
        error_reason=error_reason,
        usage=usage,
        cost_micro_usd=cost,
        charge_micro_usd=charge(
            policy,
            cost,
            succeeded=succeeded,
            cancelled=status is AttemptStatus.CANCELLED,
            error_reason=error_reason,
            delivered=succeeded,
        ),
        latency_ms=ms(time.monotonic() - started),
        ttft_ms=0,
        price_table_version=prices.version,
        occurred_at=time.time(),
    )
