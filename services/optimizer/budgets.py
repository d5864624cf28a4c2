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
records nothing (a later retry may fit). Without budgets (no default and `budgets.enabled`
false) reserving always succeeds with remaining -1, but reservations are still recorded, so
settling works either way.

Whose budget: a user's own, when an admin set one (`set_limit`: an amount and a period kind),
else the configured default (`budgets.per_user_micro_usd` per `budgets.period`) — which is
therefore also every new user's budget; a default of 0 leaves such users without one. An
admin may also cap one of a user's API keys: a call made with that key must fit both the
key's budget (what calls through that key cost in the key's period, summed over the
reservations that carry its id) and the user's. Both checks run under the user's lock, so a
key's spend is serialised with its user's. A refusal names the budget at fault in its
QuotaFailure (`user:ID` or `key:ID`) and says what is left for the call (the smaller of the
two) in `remainingMicroUsd`.
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


MAX_BUDGET_MICRO_USD = 10**15
"""The largest budget an admin may set ($1,000,000,000)."""
PERIOD_KINDS = ("day", "month")


@dataclass(frozen=True)
class Period:
    """One budget period: its name and when it starts and ends (epoch seconds)."""

    name: str
    ends_at: float
    starts_at: float = 0.0


def period_at(now: float, kind: str) -> Period:
    """The `kind` ("day" or "month") period, in UTC, that contains `now`."""
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    if kind == "day":
        start = dt.datetime(moment.year, moment.month, moment.day, tzinfo=dt.UTC)
        return Period(
            start.date().isoformat(),
            (start + dt.timedelta(days=1)).timestamp(),
            start.timestamp(),
        )
    days = calendar.monthrange(moment.year, moment.month)[1]
    start = dt.datetime(moment.year, moment.month, 1, tzinfo=dt.UTC)
    return Period(
        f"{moment.year:04d}-{moment.month:02d}",
        (start + dt.timedelta(days)).timestamp(),
        start.timestamp(),
    )


@dataclass(frozen=True)
class Limit:
    """One budget: its amount per period, the period kind, and whether an admin set it
    (else it is the configured default)."""

    amount_micro_usd: int
    period_kind: str
    own: bool


@dataclass(frozen=True)
class BudgetView:
    """One budget as it stands in its current period (GetBudget, SetBudget)."""

    user_id: str
    key_id: str
    budget_micro_usd: int
    """NO_BUDGET when none applies."""
    own: bool
    period_kind: str
    period: str
    spent_micro_usd: int
    held_micro_usd: int

    @property
    def remaining_micro_usd(self) -> int:
        """What is left to reserve (never negative); NO_BUDGET when none applies."""
        if self.budget_micro_usd == NO_BUDGET:
            return NO_BUDGET
        return max(0, self.budget_micro_usd - self.spent_micro_usd - self.held_micro_usd)


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
        """Whether budgets apply at all (a configured default, or `budgets.enabled`)."""
        return self._config.active

    async def reserve(
        self,
        reservation_id: str,
        user_id: str,
        execution_id: str,
        amount_micro_usd: int,
        key_id: str = "",
    ) -> Grant:
        """Hold `amount_micro_usd` of `user_id`'s budget (and of the API key `key_id`'s,
        when it has one); RESOURCE_EXHAUSTED (BUDGET_EXHAUSTED) when it does not fit."""
        _require_id(reservation_id, "reservation_id")
        _require_id(user_id, "user_id")
        for value, field in ((execution_id, "execution_id"), (key_id, "key_id")):
            if len(value) > MAX_ID_CHARS:
                raise InvalidArgument(
                    f"{field} must have at most {MAX_ID_CHARS} characters",
                    reason="BUDGET_REQUEST_INVALID",
                    field_violations=[FieldViolation(field, "too long")],
                )
        _require_amount(amount_micro_usd, "amount_micro_usd")
        now = self._clock()
        async with self._db.transaction() as tx:
            limit = await self._user_limit(tx, user_id)
            period = period_at(now, limit.period_kind)
            spent = await self._lock(tx, user_id, period.name)
            existing = await tx.fetchrow(
                "SELECT * FROM budget_reservations WHERE reservation_id = $1", reservation_id
            )
            if existing is not None:
                return _repeat(existing, user_id, amount_micro_usd)
            held = await _held(tx, user_id, period.name, now)
            limited = self._limited(limit)
            standing = self._standing(period.name, limit.amount_micro_usd, spent, held)
            key = await self._key_view(tx, user_id, key_id, now) if key_id else None
            # What is left for this call: the smaller of the user's and the key's remainders.
            lefts = ([standing.remaining_micro_usd] if limited else []) + (
                [key.remaining_micro_usd] if key is not None else []
            )
            if limited and standing.committed + amount_micro_usd > standing.budget_micro_usd:
                raise _exhausted(
                    f"user:{user_id}",
                    period,
                    standing.budget_micro_usd,
                    min(lefts),
                    amount_micro_usd,
                    now,
                )
            if key is not None and key.remaining_micro_usd < amount_micro_usd:
                key_period = period_at(now, key.period_kind)
                raise _exhausted(
                    f"key:{key_id}",
                    key_period,
                    key.budget_micro_usd,
                    min(lefts),
                    amount_micro_usd,
                    now,
                )
            after = Standing(
                period.name,
                standing.budget_micro_usd,
                standing.spent_micro_usd,
                standing.held_micro_usd + amount_micro_usd,
                standing.degrade_ratio,
            )
            grant = Grant(
                min(lefts) - amount_micro_usd if lefts else NO_BUDGET,
                period.name,
                limited and after.degrade,
            )
            await tx.execute(
                "INSERT INTO budget_reservations (reservation_id, user_id, execution_id, period,"
                " amount_micro_usd, state, cost_micro_usd, created_at, expires_at,"
                " remaining_micro_usd, degrade, key_id)"
                " VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9, $10, $11)",
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
                key_id,
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
            limit = await self._user_limit(tx, user_id)
            if not self._limited(limit):
                return NO_BUDGET
            held = await _held(tx, user_id, period_name, now)
            return self._standing(
                period_name, limit.amount_micro_usd, spent, held
            ).remaining_micro_usd

    async def standing(self, user_id: str) -> Standing | None:
        """`user_id`'s books in the current period; None when no budget applies."""
        if not self.enabled:
            return None
        now = self._clock()
        async with self._db.transaction() as tx:
            limit = await self._user_limit(tx, user_id)
            if not self._limited(limit):
                return None
            view = await self._user_view(tx, user_id, limit, now)
        return self._standing(
            view.period, limit.amount_micro_usd, view.spent_micro_usd, view.held_micro_usd
        )

    async def status(self, user_id: str) -> tuple[BudgetView, list[BudgetView]]:
        """`user_id`'s budget as it stands, and each of their keys' own budgets."""
        _require_id(user_id, "user_id")
        now = self._clock()
        async with self._db.transaction() as tx:
            user = await self._user_view(tx, user_id, await self._user_limit(tx, user_id), now)
            rows = await tx.fetch(
                "SELECT key_id FROM budget_limits WHERE user_id = $1 AND key_id <> ''"
                " ORDER BY key_id",
                user_id,
            )
            keys = [await self._key_view(tx, user_id, str(r["key_id"]), now) for r in rows]
        return user, [k for k in keys if k is not None]

    async def set_limit(
        self, user_id: str, key_id: str, amount_micro_usd: int, period_kind: str, clear: bool
    ) -> BudgetView:
        """Set (or, with `clear`, remove) the budget of `user_id` — of their API key `key_id`
        when one is named; the budget as it then stands. FAILED_PRECONDITION
        BUDGETS_DISABLED when budgets are off (a budget nothing would check)."""
        _require_id(user_id, "user_id")
        if len(key_id) > MAX_ID_CHARS:
            raise _bad_limit("key_id", f"at most {MAX_ID_CHARS} characters")
        if clear and (amount_micro_usd or period_kind):
            raise _bad_limit("clear", "amount_micro_usd and period must be unset with clear")
        if not 0 <= amount_micro_usd <= MAX_BUDGET_MICRO_USD:
            raise _bad_limit("amount_micro_usd", f"0 to {MAX_BUDGET_MICRO_USD} micro-USD")
        if period_kind and period_kind not in PERIOD_KINDS:
            raise _bad_limit("period", "day or month")
        if not self.enabled:
            raise FailedPrecondition(
                "budgets are off: set budgets.enabled (or a default budgets.per_user_micro_usd)",
                reason="BUDGETS_DISABLED",
            )
        now = self._clock()
        async with self._db.transaction() as tx:
            if clear:
                await tx.execute(
                    "DELETE FROM budget_limits WHERE user_id = $1 AND key_id = $2",
                    user_id,
                    key_id,
                )
            else:
                await tx.execute(
                    "INSERT INTO budget_limits"
                    " (user_id, key_id, amount_micro_usd, period_kind, updated_at)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, key_id) DO UPDATE SET"
                    " amount_micro_usd = excluded.amount_micro_usd,"
                    " period_kind = excluded.period_kind, updated_at = excluded.updated_at",
                    user_id,
                    key_id,
                    amount_micro_usd,
                    period_kind or self._config.period,
                    round(now * 1_000_000),
                )
            if key_id:
                view = await self._key_view(tx, user_id, key_id, now)
                if view is None:  # cleared: no cap of its own
                    period = period_at(now, self._config.period)
                    return BudgetView(
                        user_id,
                        key_id,
                        NO_BUDGET,
                        False,
                        self._config.period,
                        period.name,
                        0,
                        0,
                    )
                return view
            return await self._user_view(tx, user_id, await self._user_limit(tx, user_id), now)

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

    def _standing(self, period: str, budget: int, spent: int, held: int) -> Standing:
        return Standing(period, budget, spent, held, self._config.degrade_ratio)

    def _limited(self, limit: Limit) -> bool:
        """Whether `limit` caps anything: budgets are on, and it was set or a default is."""
        return self.enabled and (limit.own or limit.amount_micro_usd > 0)

    async def _user_limit(self, tx: Tx, user_id: str) -> Limit:
        """The user's own budget, else the configured default."""
        row = await tx.fetchrow(
            "SELECT amount_micro_usd, period_kind FROM budget_limits"
            " WHERE user_id = $1 AND key_id = ''",
            user_id,
        )
        if row is None:
            return Limit(self._config.per_user_micro_usd, self._config.period, own=False)
        return Limit(int(row["amount_micro_usd"]), str(row["period_kind"]), own=True)

    async def _user_view(self, tx: Tx, user_id: str, limit: Limit, now: float) -> BudgetView:
        period = period_at(now, limit.period_kind)
        spent = await tx.fetchval(
            "SELECT spent_micro_usd FROM budget_spend WHERE user_id = $1 AND period = $2",
            user_id,
            period.name,
        )
        held = await _held(tx, user_id, period.name, now)
        budget = limit.amount_micro_usd if self._limited(limit) else NO_BUDGET
        return BudgetView(
            user_id, "", budget, limit.own, limit.period_kind, period.name, int(spent or 0), held
        )

    async def _key_view(self, tx: Tx, user_id: str, key_id: str, now: float) -> BudgetView | None:
        """The key's own budget as it stands; None when it has none (or budgets are off)."""
        row = await tx.fetchrow(
            "SELECT amount_micro_usd, period_kind FROM budget_limits"
            " WHERE user_id = $1 AND key_id = $2",
            user_id,
            key_id,
        )
        if row is None or not self.enabled:
            return None
        kind = str(row["period_kind"])
        period = period_at(now, kind)
        # What calls through the key cost since its period began: settled at their cost,
        # held (unexpired) at their reservation.
        totals = await tx.fetchrow(
            "SELECT COALESCE(SUM(CASE WHEN state = $4 THEN cost_micro_usd ELSE 0 END), 0) AS spent,"
            " COALESCE(SUM(CASE WHEN state = $5 AND expires_at > $6 THEN amount_micro_usd"
            " ELSE 0 END), 0) AS held"
            " FROM budget_reservations WHERE user_id = $1 AND key_id = $2 AND created_at >= $3",
            user_id,
            key_id,
            period.starts_at,
            SETTLED,
            HELD,
            now,
        )
        assert totals is not None  # an aggregate always has its row
        return BudgetView(
            user_id,
            key_id,
            int(row["amount_micro_usd"]),
            True,
            kind,
            period.name,
            int(totals["spent"]),
            int(totals["held"]),
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


def _bad_limit(field: str, problem: str) -> InvalidArgument:
    return InvalidArgument(
        f"{field}: {problem}",
        reason="BUDGET_REQUEST_INVALID",
        field_violations=[FieldViolation(field, problem)],
    )


def _exhausted(
    subject: str, period: Period, budget: int, remaining: int, amount: int, now: float
) -> ResourceExhausted:
    """The refusal of `amount` by the budget of `subject` (`user:ID` or `key:ID`); what is
    left for the call (`remaining`) is the smaller of its user's and key's remainders."""
    kind = "key budget" if subject.startswith("key:") else "budget"
    description = (
        f"{kind} of {budget} micro-USD for period {period.name} "
        f"cannot cover {amount} more ({remaining} left)"
    )
    return ResourceExhausted(
        description,
        reason="BUDGET_EXHAUSTED",
        metadata={
            "remainingMicroUsd": str(remaining),
            "budgetMicroUsd": str(budget),
            "requestedMicroUsd": str(amount),
            "period": period.name,
            "subject": subject,
        },
        retry_after=max(0.0, period.ends_at - now),
        quota_violations=[QuotaViolation(subject, description)],
    )
