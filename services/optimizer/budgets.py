"""Budgets per user per period, with reservations (SPEC 3.5): a run reserves the most a call
may cost before any provider is called and settles to the real cost after, so concurrent
runs cannot overshoot the budget.

Periods are UTC days (`2026-11-21`) or months (`2026-11`). What counts against a user's
budget in a period is what settled calls cost (`budget_spend`) plus the reservations still
held. A held reservation stops counting once it is `reservation_ttl_seconds` old, so a
router that crashed between reserve and settle does not hold the budget forever; settling it
later still books its cost (the money was spent).

Every change to a user's books in a period happens under one lock: the user's `budget_spend`
row, locked with `SELECT … FOR UPDATE` on PostgreSQL (SQLite's write transaction already
serialises every writer). Reservation and settlement both take that lock first, then touch
reservation rows, so they cannot deadlock, and the check "spent + held + amount ≤ budget" and
the insert that follows it are atomic however many replicas reserve at once.

Reservation ids are idempotent: a repeated reserve returns the answer recorded the first
time; a repeated settle with the same cost returns the current remainder. A refused reserve
records nothing (a later retry may fit). A budget of 0 means none: reserving always succeeds
with remaining -1, but reservations are still recorded, so settling works either way.
"""

from __future__ import annotations

import calendar
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.common.config import BudgetsConfig
from services.common.database import Database, Tx
from services.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    QuotaViolation,
    ResourceExhausted,
)

MAX_ID_CHARS = 256
NO_BUDGET = -1
KEEP_SECONDS = 40 * 86_400
"""Reservations older than this are pruned (past any period they could count in, and past
any plausible retry of their id)."""

HELD = "held"
SETTLED = "settled"


@dataclass(frozen=True)
class Period:
    """One budget period: its name and when it ends (epoch seconds)."""

    name: str
    ends_at: float


def period_at(now: float, kind: str) -> Period:
    """The `kind` ("day" or "month") period, in UTC, that contains `now`."""
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    if kind == "day":
        start = dt.datetime(moment.year, moment.month, moment.day, tzinfo=dt.UTC)
        return Period(start.date().isoformat(), (start + dt.timedelta(days=1)).timestamp())
    days = calendar.monthrange(moment.year, moment.month)[1]
    start = dt.datetime(moment.year, moment.month, 1, tzinfo=dt.UTC)
    return Period(f"{moment.year:04d}-{moment.month:02d}", (start + dt.timedelta(days)).timestamp())


@dataclass(frozen=True)
class Grant:
    """A reservation's answer: what is left after it, and whether to prefer CHEAPEST."""

    remaining_micro_usd: int
    period: str
    degrade_to_cheapest: bool


@dataclass(frozen=True)
class Standing:
    """A user's books in the current period."""

    period: str
    budget_micro_usd: int
    spent_micro_usd: int
    held_micro_usd: int
    degrade_ratio: float

    @property
    def committed(self) -> int:
        """Spent plus held."""
        return self.spent_micro_usd + self.held_micro_usd

    @property
    def remaining_micro_usd(self) -> int:
        """What is left to reserve (never negative)."""
        return max(0, self.budget_micro_usd - self.committed)

    @property
    def degrade(self) -> bool:
        """Whether commitments reached the degrade threshold (when one is configured)."""
        return self.degrade_ratio > 0 and self.committed >= self.degrade_ratio * (
            self.budget_micro_usd
        )


def _require_id(value: str, field: str) -> None:
    if not 0 < len(value) <= MAX_ID_CHARS:
        raise InvalidArgument(
            f"{field} must have 1 to {MAX_ID_CHARS} characters",
            reason="BUDGET_REQUEST_INVALID",
            field_violations=[FieldViolation(field, f"1 to {MAX_ID_CHARS} characters")],
        )


def _require_amount(value: int, field: str) -> None:
    if value < 0:
        raise InvalidArgument(
            f"{field} must not be negative",
            reason="BUDGET_REQUEST_INVALID",
            field_violations=[FieldViolation(field, "0 or more micro-USD")],
        )


class Budgets:
    """The budget books over the optimizer's database."""

    def __init__(
        self, db: Database, config: BudgetsConfig, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self._config = config
        self._clock = clock
        self._lock_suffix = " FOR UPDATE" if db.dialect == "postgresql" else ""

    @property
    def enabled(self) -> bool:
        """Whether a budget applies at all."""
        return self._config.per_user_micro_usd > 0

    async def reserve(
        self, reservation_id: str, user_id: str, execution_id: str, amount_micro_usd: int
    ) -> Grant:
        """Hold `amount_micro_usd` of `user_id`'s budget; RESOURCE_EXHAUSTED
        (BUDGET_EXHAUSTED) when it does not fit."""
        _require_id(reservation_id, "reservation_id")
        _require_id(user_id, "user_id")
        if len(execution_id) > MAX_ID_CHARS:
            raise InvalidArgument(
                f"execution_id must have at most {MAX_ID_CHARS} characters",
                reason="BUDGET_REQUEST_INVALID",
                field_violations=[FieldViolation("execution_id", "too long")],
            )
        _require_amount(amount_micro_usd, "amount_micro_usd")
        now = self._clock()
        period = period_at(now, self._config.period)
        async with self._db.transaction() as tx:
            spent = await self._lock(tx, user_id, period.name)
            existing = await tx.fetchrow(
                "SELECT * FROM budget_reservations WHERE reservation_id = $1", reservation_id
            )
            if existing is not None:
                return _repeat(existing, user_id, amount_micro_usd)
            held = await _held(tx, user_id, period.name, now)
            standing = self._standing(period.name, spent, held)
            if self.enabled and standing.committed + amount_micro_usd > standing.budget_micro_usd:
                raise _exhausted(user_id, period, standing, amount_micro_usd, now)
            after = Standing(
                period.name,
                standing.budget_micro_usd,
                standing.spent_micro_usd,
                standing.held_micro_usd + amount_micro_usd,
                standing.degrade_ratio,
            )
            grant = Grant(
                after.remaining_micro_usd if self.enabled else NO_BUDGET,
                period.name,
                self.enabled and after.degrade,
            )
            await tx.execute(
                "INSERT INTO budget_reservations (reservation_id, user_id, execution_id, period,"
                " amount_micro_usd, state, cost_micro_usd, created_at, expires_at,"
                " remaining_micro_usd, degrade)"
                " VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9, $10)",
                reservation_id,
                user_id,
                execution_id,
                period.name,
                amount_micro_usd,
                HELD,
                now,
                now + self._config.reservation_ttl_seconds,
                grant.remaining_micro_usd,
                grant.degrade_to_cheapest,
            )
            return grant

    async def settle(self, reservation_id: str, cost_micro_usd: int) -> int:
        """Replace the reservation's hold with what the call cost; the remainder of its
        period's budget (NO_BUDGET when none applies). NOT_FOUND for an unknown id."""
        _require_id(reservation_id, "reservation_id")
        _require_amount(cost_micro_usd, "cost_micro_usd")
        now = self._clock()
        async with self._db.transaction() as tx:
            found = await tx.fetchrow(
                "SELECT user_id, period FROM budget_reservations WHERE reservation_id = $1",
                reservation_id,
            )
            if found is None:
                raise NotFound(
                    "no such reservation",
                    reason="RESERVATION_NOT_FOUND",
                    metadata={"reservationId": reservation_id},
                )
            user_id, period_name = str(found["user_id"]), str(found["period"])
            spent = await self._lock(tx, user_id, period_name)
            row = await tx.fetchrow(
                "SELECT state, cost_micro_usd FROM budget_reservations WHERE reservation_id = $1",
                reservation_id,
            )
            assert row is not None  # reservations are only deleted long after their period
            if row["state"] == SETTLED:
                if int(row["cost_micro_usd"]) != cost_micro_usd:
                    raise FailedPrecondition(
                        f"reservation already settled at {row['cost_micro_usd']} micro-USD",
                        reason="RESERVATION_CONFLICT",
                        metadata={"reservationId": reservation_id},
                    )
            else:
                await tx.execute(
                    "UPDATE budget_reservations SET state = $1, cost_micro_usd = $2"
                    " WHERE reservation_id = $3",
                    SETTLED,
                    cost_micro_usd,
                    reservation_id,
                )
                spent += cost_micro_usd
                await tx.execute(
                    "UPDATE budget_spend SET spent_micro_usd = $1"
                    " WHERE user_id = $2 AND period = $3",
                    spent,
                    user_id,
                    period_name,
                )
            if not self.enabled:
                return NO_BUDGET
            held = await _held(tx, user_id, period_name, now)
            return self._standing(period_name, spent, held).remaining_micro_usd

    async def standing(self, user_id: str) -> Standing | None:
        """`user_id`'s books in the current period; None when no budget applies."""
        if not self.enabled:
            return None
        now = self._clock()
        period = period_at(now, self._config.period)
        async with self._db.transaction() as tx:
            spent = await tx.fetchval(
                "SELECT spent_micro_usd FROM budget_spend WHERE user_id = $1 AND period = $2",
                user_id,
                period.name,
            )
            held = await _held(tx, user_id, period.name, now)
        return self._standing(period.name, int(spent or 0), held)

    async def prune(self) -> int:
        """Delete reservations too old to matter; how many went."""
        return await self._db.execute(
            "DELETE FROM budget_reservations WHERE created_at < $1", self._clock() - KEEP_SECONDS
        )

    async def _lock(self, tx: Tx, user_id: str, period: str) -> int:
        """Take the (user, period) lock, creating its row; what settled calls cost so far."""
        await tx.execute(
            "INSERT INTO budget_spend (user_id, period, spent_micro_usd) VALUES ($1, $2, 0)"
            " ON CONFLICT (user_id, period) DO NOTHING",
            user_id,
            period,
        )
        # The suffix is one of two constants, never request text.
        spent = await tx.fetchval(
            "SELECT spent_micro_usd FROM budget_spend WHERE user_id = $1 AND period = $2"  # noqa: S608
            + self._lock_suffix,
            user_id,
            period,
        )
        return int(spent)

    def _standing(self, period: str, spent: int, held: int) -> Standing:
        return Standing(
            period, self._config.per_user_micro_usd, spent, held, self._config.degrade_ratio
        )


async def _held(tx: Tx, user_id: str, period: str, now: float) -> int:
    """What `user_id`'s unexpired, unsettled reservations in `period` hold."""
    held = await tx.fetchval(
        "SELECT COALESCE(SUM(amount_micro_usd), 0) FROM budget_reservations"
        " WHERE user_id = $1 AND period = $2 AND state = $3 AND expires_at > $4",
        user_id,
        period,
        HELD,
        now,
    )
    return int(held)


def _repeat(existing: dict[str, Any], user_id: str, amount_micro_usd: int) -> Grant:
    """The recorded answer of a reservation asked for again (with the same values)."""
    if existing["user_id"] != user_id or int(existing["amount_micro_usd"]) != amount_micro_usd:
        raise FailedPrecondition(
            "reservation id already used for another user or amount",
            reason="RESERVATION_CONFLICT",
            metadata={"reservationId": str(existing["reservation_id"])},
        )
    return Grant(
        int(existing["remaining_micro_usd"]),
        str(existing["period"]),
        bool(existing["degrade"]),
    )


def _exhausted(
    user_id: str, period: Period, standing: Standing, amount: int, now: float
) -> ResourceExhausted:
    remaining = standing.remaining_micro_usd
    description = (
        f"budget of {standing.budget_micro_usd} micro-USD for period {period.name} "
        f"cannot cover {amount} more ({remaining} left)"
    )
    return ResourceExhausted(
        description,
        reason="BUDGET_EXHAUSTED",
        metadata={
            "remainingMicroUsd": str(remaining),
            "budgetMicroUsd": str(standing.budget_micro_usd),
            "requestedMicroUsd": str(amount),
            "period": period.name,
        },
        retry_after=max(0.0, period.ends_at - now),
        quota_violations=[QuotaViolation(f"user:{user_id}", description)],
    )
