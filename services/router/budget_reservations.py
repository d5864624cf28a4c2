"""Budgets, the router's side: reserve a call's maximum cost with the optimizer before any
provider is called, settle to what the call is charged after.

The reservation covers the candidates that may be tried, no more: what the dearest of them
would charge for the request's own `max_tokens` (the engines' default of 1,024 only when the
request names none) plus the prompt (estimated at ~4 characters a token): `max_cost` — never
more than the call's own `max_cost_micro_usd`. When the optimizer refuses that amount
(RESOURCE_EXHAUSTED `BUDGET_EXHAUSTED`, saying what is left), the candidates whose own
maximum exceeds what is left are passed over (announced as skipped, reason
BUDGET_EXHAUSTED, before the first attempt) and the dearest of the rest is reserved instead
(`affordable`). So a call is never refused while a candidate it would try fits the budget —
a call preferring a free provider runs near the limit — and no attempt can cost more than
what was reserved: a dearer fallback that does not fit is never tried. Only when no
candidate fits does the refusal (with QuotaFailure) reach the caller, before any provider
was called. The reservation id is the call's id (`outcomes.call_id`), so a resent
ReserveBudget is idempotent (a refused one records nothing, so the second, smaller ask under
the same id is a new one). When the optimizer asks for it (`degrade_to_cheapest`, near the
limit) the call is ranked by CHEAPEST instead, among the same candidates.

The budget reserved against is the caller's: the user's own (set by an admin, else the
configured default `budgets.per_user_micro_usd`) and, for a call made with an API key, that
key's budget too when it has one (`key_id`: the request context's credential id).

Settling happens after the call however it ended — answered, failed or cancelled — with the
sum of what its attempts are charged (`charges`: the providers' cost, less what
`accounting.charge_policy` waives; budgets limit what the caller is charged), in a
background task (the caller does not wait for it), retried a few times since SettleBudget is
idempotent. A call whose continuation after a broken stream was charged more than its
reservation settles to the real, higher charge: the budget books what was charged.

A call's own limit (`max_cost_micro_usd`) uses the same estimates: the call is refused before
anything is reserved or called when even the cheapest candidate's least cost (the prompt and
one output token, `min_cost`) exceeds it — RESOURCE_EXHAUSTED `COST_LIMIT_EXCEEDED` with
QuotaFailure (`check_cost_limit`) — and the reservation is never more than the limit. While
a stream runs, `output_tokens_within` says how many output tokens the rest of the limit pays
for; `reasoning` stops the attempt past that point with the same error.

Without budgets (`budgets.per_user_micro_usd` = 0 and `budgets.enabled` false) there is
nothing to reserve against, and the router adds no hop to the call. With them, the router
fails closed: an optimizer it cannot reach for ReserveBudget (UNAVAILABLE,
DEADLINE_EXCEEDED, UNIMPLEMENTED) ends the call with UNAVAILABLE `BUDGET_UNAVAILABLE` rather
than spend unaccounted money.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from saga.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
from services.common.backoff import Backoff
from services.common.config import BudgetsConfig, ProviderConfig
from services.common.errors import QuotaViolation, ResourceExhausted, Unavailable
from services.common.lifecycle import InFlight
from services.common.prices import MICRO_PER_MILLION, PriceTable, ProviderPrice
from services.common.status import RemoteError
from services.router.engines.base import EngineRequest, estimate_input_tokens

log = logging.getLogger("saga.router.budget_reservations")

RESERVE_TIMEOUT_SECONDS = 2.0
SETTLE_TIMEOUT_SECONDS = 5.0
SETTLE_BACKOFF = Backoff(initial=0.4, maximum=1.6, jitter=0.0, max_attempts=4)
"""SettleBudget is tried at most 4 times, 0.4, 0.8 then 1.6 s apart."""
UNREACHABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED}
)


def max_cost(
    request: EngineRequest, candidates: Sequence[ProviderConfig], prices: PriceTable
) -> int:
    """The most the call may cost, micro-USD: the dearest candidate's price of the prompt
    plus the whole of `max_tokens`."""
    input_tokens = estimate_input_tokens(request)
    return max(
        (prices.of(p.name).cost(input_tokens, request.max_tokens) for p in candidates), default=0
    )


def remaining_after_refusal(error: Exception) -> int | None:
    """What is left of the budget according to the optimizer's BUDGET_EXHAUSTED refusal
    `error`; None for any other error (or a refusal that does not say)."""
    if getattr(error, "reason", "") != "BUDGET_EXHAUSTED":
        return None
    metadata = getattr(error, "metadata", None) or {}
    try:
        return max(0, int(metadata["remainingMicroUsd"]))
    except (KeyError, ValueError):
        return None


def affordable(
    candidates: Sequence[ProviderConfig], costs: Sequence[int], left: int
) -> tuple[list[ProviderConfig], list[ProviderConfig]]:
    """The candidates whose maximum (`costs`, in the same order) fits in `left`, in their
    order, and those passed over."""
    fits = [p for p, c in zip(candidates, costs, strict=True) if c <= left]
    over = [p for p, c in zip(candidates, costs, strict=True) if c > left]
    return fits, over


def min_cost(request: EngineRequest, provider: ProviderConfig, prices: PriceTable) -> int:
    """The least `provider` can charge for the call, micro-USD: the prompt (estimated) and
    one output token."""
    return prices.of(provider.name).cost(estimate_input_tokens(request), 1)


def cost_limit_exceeded(limit: int, amount: int, provider: str = "") -> ResourceExhausted:
    """The call's `max_cost_micro_usd` cannot pay for `amount` micro-USD (the least a
    candidate would cost) — or, with a `provider`, its stream was stopped at the limit after
    the call's attempts cost `amount`."""
    if provider:
        description = f"{provider}: the answer was stopped at the call's cost limit of {limit}"
        metadata = {"limitMicroUsd": str(limit), "spentMicroUsd": str(amount), "provider": provider}
    else:
        description = f"the cheapest candidate needs at least {amount}; the limit is {limit}"
        metadata = {"limitMicroUsd": str(limit), "neededMicroUsd": str(amount)}
    return ResourceExhausted(
        f"max_cost_micro_usd exceeded: {description} micro-USD",
        reason="COST_LIMIT_EXCEEDED",
        metadata=metadata,
        quota_violations=[QuotaViolation("max_cost_micro_usd", description)],
    )


def check_cost_limit(
    request: EngineRequest, candidates: Sequence[ProviderConfig], prices: PriceTable, limit: int
) -> None:
    """Raise COST_LIMIT_EXCEEDED when `limit` (> 0) is below every candidate's `min_cost`."""
    if limit <= 0 or not candidates:
        return
    cheapest = min(min_cost(request, p, prices) for p in candidates)
    if cheapest > limit:
        raise cost_limit_exceeded(limit, cheapest)


def output_tokens_within(price: ProviderPrice, input_tokens: int, left: int) -> int | None:
    """The most output tokens an attempt may bill, after `input_tokens` of prompt, while its
    cost (rounded as `ProviderPrice.cost` rounds) stays within `left` micro-USD; None when
    output is free (no bound)."""
    per_mtok = price.output_micro_usd_per_mtok
    if per_mtok <= 0:
        return None
    # cost <= left  <=>  numerator + MICRO/2 < (left + 1) * MICRO (integer rounding half up).
    prompt = input_tokens * price.input_micro_usd_per_mtok  # uncached: the safe side
    room = (left + 1) * MICRO_PER_MILLION - MICRO_PER_MILLION // 2 - 1 - prompt
    return max(room // per_mtok, 0)


@dataclass(frozen=True)
class Reservation:
    """A held reservation."""

    reservation_id: str
    amount_micro_usd: int
    degrade_to_cheapest: bool


class Budgets:
    """Reserves and settles calls' costs with the optimizer (see the module docstring)."""

    def __init__(self, channel: grpc.aio.Channel, config: BudgetsConfig) -> None:
        self._stub = optimizer_pb2_grpc.OptimizerServiceStub(channel)
        self.enabled = config.active
        self._settling = InFlight()

    async def reserve(
        self,
        reservation_id: str,
        user_id: str,
        execution_id: str,
        amount: int,
        key_id: str = "",
    ) -> Reservation | None:
        """Hold `amount` of the user's budget (and of the API key `key_id`'s, when it has
        one); None when no budget applies. The optimizer's refusal is raised as it came
        (`RemoteError`: the guard relays it unchanged)."""
        if not self.enabled:
            return None
        try:
            reply = await self._stub.ReserveBudget(
                optimizer_pb2.ReserveBudgetRequest(
                    reservation_id=reservation_id,
                    user_id=user_id,
                    execution_id=execution_id,
                    amount_micro_usd=amount,
                    key_id=key_id,
                ),
                timeout=RESERVE_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() not in UNREACHABLE:
                # Kept whole (relayed unchanged), and readable by the call's steps, which
                # reserve again for the candidates that fit what the refusal says is left.
                raise RemoteError.from_rpc_error(error, "router.saga") from None
            log.warning(
                "budget not reserved: optimizer unreachable", extra={"code": error.code().name}
            )
            raise Unavailable(
                "the budget cannot be checked now",
                reason="BUDGET_UNAVAILABLE",
                retry_after=1.0,
            ) from None
        return Reservation(reservation_id, amount, reply.degrade_to_cheapest)

    def settle(self, reservation: Reservation | None, cost: int) -> None:
        """Settle `reservation` to `cost` in the background (call it from the handler, so
        the task joins the call's trace; never blocks)."""
        if reservation is None:
            return
        self._settling.start(self._settle(reservation, cost))

    async def _settle(self, reservation: Reservation, cost: int) -> None:
        request = optimizer_pb2.SettleBudgetRequest(
            reservation_id=reservation.reservation_id, cost_micro_usd=cost
        )
        for attempt in itertools.count(1):
            try:
                await self._stub.SettleBudget(request, timeout=SETTLE_TIMEOUT_SECONDS)
                return
            except grpc.aio.AioRpcError as error:
                if error.code() not in UNREACHABLE or SETTLE_BACKOFF.exhausted(attempt):
                    # The optimizer expires an unsettled reservation: the budget recovers.
                    log.warning(
                        "budget not settled",
                        extra={
                            "reservation_id": reservation.reservation_id,
                            "code": error.code().name,
                        },
                    )
                    return
                await asyncio.sleep(SETTLE_BACKOFF.delay(attempt))

    async def close(self, grace: float = 2.0) -> None:
        """Give settlements in flight `grace` seconds, then cancel the rest."""
        await self._settling.wait(grace)
