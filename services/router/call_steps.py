"""The steps of one Reason call around its attempts, in their order (no gRPC: the servicer
translates the request in and the events out).

1. Rank the candidates among the caller's allowed providers (all when none are named): the
   call's strategy in the latest snapshot (`candidates`) — or, for STRATEGY_CUSTOM with the
   caller's own weights, the optimizer's `Rank` with those weights (`CustomRank`: the
   snapshot holds only the configured weights' ranking).
2. Refuse a call whose `max_cost_micro_usd` not even the cheapest candidate fits
   (`check_cost_limit`: COST_LIMIT_EXCEEDED), then reserve the call's maximum cost
   (`budget_reservations.max_cost` of those candidates, never more than that limit) before
   any provider is called. When the budget cannot cover it, the candidates that alone
   would exceed what is left are passed over (announced as skipped, BUDGET_EXHAUSTED) and
   the rest reserved for; only when none fits does the refusal end the call, with nothing
   spent.
3. Near the limit (the reservation's `degrade_to_cheapest`), rank again by CHEAPEST (among
   the candidates reserved for).
4. Run the attempts (`reasoning`); each attempt is held in the outbox as a provisional,
   estimated record before its request leaves for the provider (the attempt's `held` gate),
   raised as its text is given to the caller (`attempts.InFlight`: a write per many
   characters, never per token), so a router crash still bills it; its real outcome
   replaces that record the moment it ends, and its cost is added to the call's. An attempt
   that cannot be held is never sent (UNAVAILABLE USAGE_NOT_STORED, nothing spent).
5. Before `Finished` goes out, wait until every outcome is stored — else UNAVAILABLE
   USAGE_NOT_STORED: a caller never holds an answer whose usage a crash could lose.
6. Settle the reservation to the attempts' charge (`charges`: budgets limit what the caller
   is charged, by `accounting.charge_policy`) however the call ended — answered, failed or
   cancelled — once its events are done (in the background: settling never blocks).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import Protocol

from services.common.config import ProviderConfig
from services.common.errors import FieldViolation, InvalidArgument, SagaError, Unavailable
from services.common.prices import PriceTable
from services.common.strategy import Strategy
from services.router.attempts import AttemptRecord, InFlight
from services.router.budget_reservations import (
    Reservation,
    affordable,
    check_cost_limit,
    max_cost,
    remaining_after_refusal,
)
from services.router.calls import CustomWeights, ReasonCall, able
from services.router.candidates import allowed_only, capable_only, choose
from services.router.charges import ChargePolicy
from services.router.engines.base import TextDelta, estimate_input_tokens
from services.router.outcomes import call_id
from services.router.rankings import RankingSnapshot
from services.router.reasoning import (
    AttemptStarted,
    Finished,
    ProvidersSkipped,
    Report,
    RouterEvent,
    Skip,
)


class CallBudget(Protocol):
    """Where a call's cost is reserved and settled (`budget.Budgets`)."""

    async def reserve(
        self,
        reservation_id: str,
        user_id: str,
        execution_id: str,
        amount: int,
        key_id: str = "",
    ) -> Reservation | None:
        """Hold `amount` (of the user's and the key's budgets); None when no budget is
        configured; raise the refusal."""
        ...

    def settle(self, reservation: Reservation | None, cost: int) -> None:
        """Settle `reservation` to `cost` in the background (never blocks)."""
        ...


Attempts = Callable[[Sequence[ProviderConfig], Report], AsyncGenerator[RouterEvent, None]]
"""Runs the call's attempts over the candidates, handing each attempt to the report as it
ends (`reasoning.reason`, coalesced or not)."""

CustomRank = Callable[[CustomWeights, Sequence[str], ReasonCall], Awaitable[Sequence[str]]]
"""Ranks the named providers by the given weights, best first (the optimizer's `Rank`)."""

StoreOutcome = Callable[[AttemptRecord, str], Awaitable[None]]
"""Stores one attempt of the call whose id is given (`outbox`); returns at once, and what it
returns is done when the outcome is stored."""


async def run_call(
    call: ReasonCall,
    providers: Sequence[ProviderConfig],
    snapshot: RankingSnapshot | None,
    prices: PriceTable,
    budget: CallBudget,
    attempts: Attempts,
    store: StoreOutcome,
    rank_custom: CustomRank | None = None,
    hold: StoreOutcome | None = None,
    policy: ChargePolicy = ChargePolicy.ALL_ATTEMPTS,
) -> AsyncGenerator[RouterEvent, None]:
    """The events of one call, its steps taken in order (see the module docstring). Close
    the generator (`aclosing`) when done with it: that is when it settles. `hold` stores an
    attempt's provisional record (None: attempts are stored only when they end), charged by
    `policy` like the attempts' real records."""
    permitted = allowed_only(providers, call.allowed)
    allowed = able(capable_only(permitted, call.required_capabilities(), call.pinned), call)
    # A preferred provider that lacks what the call needs is configured, just not a
    # candidate for it: the preference lapses (an unknown name still fails in `choose`).
    lacking = {p.name for p in permitted} - {p.name for p in allowed}
    preferred = tuple(n for n in call.preferred if n not in lacking)

    def ranked(strategy: Strategy | None, ranking: RankingSnapshot | None) -> list[ProviderConfig]:
        return choose(allowed, ranking, strategy=strategy, preferred=preferred, pinned=call.pinned)

    ranking = snapshot
    if call.weights is not None and call.strategy is Strategy.CUSTOM and not call.pinned:
        if rank_custom is None:
            raise Unavailable(
                "this router cannot rank by a call's own weights",
                reason="RANKING_UNAVAILABLE",
                retry_after=1.0,
            )
        order = await rank_custom(call.weights, [p.name for p in allowed], call)
        ranking = custom_snapshot(snapshot, tuple(order), prices)
    elif (
        call.strategy is Strategy.CUSTOM
        and snapshot is not None
        and Strategy.CUSTOM not in snapshot.rankings
        and not call.pinned
    ):
        # The optimizer ranks CUSTOM only once weights are configured: without the caller's
        # own, the call would silently be ranked by another strategy.
        raise InvalidArgument(
            "STRATEGY_CUSTOM needs weights: none given and none configured",
            reason="WEIGHTS_INVALID",
            field_violations=[FieldViolation("weights", "required for STRATEGY_CUSTOM")],
        )
    candidates = ranked(call.strategy, ranking)
    request = call.engine_request()
    check_cost_limit(request, candidates, prices, call.max_cost_micro_usd)
    limit = call.max_cost_micro_usd
    costs = [max_cost(request, [p], prices) for p in candidates]
    if limit > 0:
        costs = [min(c, limit) for c in costs]
    cid = call_id(call.accounting)
    a = call.accounting

    async def reserve(amount: int) -> Reservation | None:
        return await budget.reserve(cid, a.user_id, a.execution_id, amount, a.key_id)

    passed_over: list[ProviderConfig] = []
    try:
        reservation = await reserve(max(costs, default=0))
    except SagaError as error:
        # Not enough for the dearest candidate: reserve for those that fit (if any).
        left = remaining_after_refusal(error)
        if left is None:
            raise
        fits, passed_over = affordable(candidates, costs, left)
        if not fits:
            raise
        reservation = await reserve(max(c for c in costs if c <= left))
        candidates = fits
    kept = {p.name for p in candidates}
    if reservation is not None and reservation.degrade_to_cheapest:
        candidates = [p for p in ranked(Strategy.CHEAPEST, snapshot) if p.name in kept]

    stored: list[Awaitable[None]] = []
    charged = 0

    live: InFlight | None = None
    given = 0  # characters the caller was given by the call's earlier attempts
    ended: set[int] = set()  # attempts whose outcome is stored: nothing left to hold

    def report(record: AttemptRecord) -> None:
        nonlocal charged
        charged += record.charge_micro_usd
        ended.add(record.n)
        if live is not None and live.n == record.n:
            live.close()  # (with coalescing, the attempt may end before its deltas are read)
        stored.append(store(record, cid))

    try:
        if passed_over:  # inside the try: a caller gone at this event still settles
            yield ProvidersSkipped(tuple(Skip(p.name, "BUDGET_EXHAUSTED") for p in passed_over))
        async with aclosing(attempts(candidates, report)) as events:
            async for event in events:
                if live is not None and type(event) is TextDelta:
                    live.given += len(event.text)
                    if live.given > live.soft or live.given > live.durable:
                        await _stored(live.advance())
                elif isinstance(event, AttemptStarted):
                    given += 0 if live is None else live.given
                    live = None
                    if hold is not None and event.n not in ended:
                        live = _in_flight(event, candidates, call, given, prices, hold, cid, policy)
                        live.start(call.complete)
                    _release(event.held, live)
                elif isinstance(event, Finished):
                    await all_stored(stored)
                yield event
    finally:
        budget.settle(reservation, charged)


def custom_snapshot(
    snapshot: RankingSnapshot | None, order: tuple[str, ...], prices: PriceTable
) -> RankingSnapshot:
    """A snapshot whose only ranking is `order`, for STRATEGY_CUSTOM (the caller's weights)."""
    return RankingSnapshot(
        version=snapshot.version if snapshot is not None else 0,
        default_strategy=Strategy.CUSTOM,
        rankings={Strategy.CUSTOM: order},
        prices=prices,
    )


def _in_flight(
    started: AttemptStarted,
    candidates: Sequence[ProviderConfig],
    call: ReasonCall,
    given: int,
    prices: PriceTable,
    hold: StoreOutcome,
    cid: str,
    policy: ChargePolicy,
) -> InFlight:
    """The provisional record of a starting attempt: a continuation's prompt also holds the
    text given so far."""
    provider = next(p for p in candidates if p.name == started.provider)
    request = call.engine_request()
    input_tokens = estimate_input_tokens(request) + math.ceil(given / 4)
    return InFlight(
        provider,
        started.n,
        input_tokens,
        request.max_tokens,
        prices,
        lambda record: hold(record, cid),
        policy,
    )


def _release(gate: asyncio.Future[None] | None, live: InFlight | None) -> None:
    """Let a gated attempt call its provider once its first claim is stored (at once when
    nothing is held); a claim that fails ends it unsent, USAGE_NOT_STORED."""
    if gate is None:
        return
    if live is None:
        gate.set_result(None)
        return

    async def release() -> None:
        try:
            await _stored(live.held())
        except Unavailable as error:
            if not gate.done():
                gate.set_exception(error)
        else:
            if not gate.done():
                gate.set_result(None)

    task = asyncio.ensure_future(release())
    gate.add_done_callback(lambda _: task.cancel())  # the attempt went: stop waiting
    _releases.add(task)
    task.add_done_callback(_releases.discard)


_releases: set[asyncio.Task[None]] = set()  # (asyncio keeps only weak references to tasks)


async def all_stored(stored: Sequence[Awaitable[None]]) -> None:
    """Wait until every attempt of the call is in the outbox (before Finished)."""
    await _stored(asyncio.gather(*stored))


async def _stored(storing: Awaitable[object]) -> None:
    """Wait for a store; its failure is USAGE_NOT_STORED (nothing unaccounted goes on)."""
    try:
        await storing
    except Exception:
        raise Unavailable(
            "the call's usage could not be stored; its answer is not confirmed",
            reason="USAGE_NOT_STORED",
            retry_after=1.0,
        ) from None
