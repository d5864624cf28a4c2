"""Budgets on SQLite and PostgreSQL alike: reservations never overshoot (even 20 at once
from two replicas), settling frees the rest, unsettled reservations expire, ids are
idempotent, periods roll over, and the refusal says what is left."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.config import BudgetsConfig
from services.common.database import Database, open_database
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from services.optimizer.budgets import KEEP_SECONDS, NO_BUDGET, Budgets, Grant, period_at
from services.optimizer.schema import MIGRATIONS
from tests.clock import Clock
from tests.conftest import Backend

START = dt.datetime(2026, 3, 14, 10, tzinfo=dt.UTC).timestamp()
BUDGET = 100_000


async def _open(backend: Backend, tmp_path: Path) -> Database:
    return await open_database(backend.url, backend.namespace, tmp_path, "optimizer", MIGRATIONS)


@pytest.fixture
async def db(backend: Backend, tmp_path: Path) -> AsyncIterator[Database]:
    database = await _open(backend, tmp_path)
    try:
        yield database
    finally:
        await database.close()


def books(db: Database, clock: Clock, **config: object) -> Budgets:
    settings: dict[str, object] = {"per_user_micro_usd": BUDGET, "reservation_ttl_seconds": 900}
    settings.update(config)
    return Budgets(db, BudgetsConfig(**settings), clock)  # type: ignore[arg-type]


def test_periods_are_utc_days_or_months() -> None:
    assert period_at(START, "month").name == "2026-03"
    assert period_at(START, "day").name == "2026-03-14"
    assert period_at(START, "month").ends_at == dt.datetime(2026, 4, 1, tzinfo=dt.UTC).timestamp()
    assert period_at(START, "day").ends_at == dt.datetime(2026, 3, 15, tzinfo=dt.UTC).timestamp()
    december = dt.datetime(2026, 12, 31, 23, 59, tzinfo=dt.UTC).timestamp()
    new_year = dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp()
    assert period_at(december, "month").ends_at == new_year


async def test_reserve_then_settle_replaces_the_hold_with_the_cost(db: Database) -> None:
    b = books(db, Clock(START))
    assert await b.reserve("r1", "usr_a", "exe_1", 30_000) == Grant(70_000, "2026-03", False)
    assert await b.settle("r1", 1_000) == 99_000
    standing = await b.standing("usr_a")
    assert standing is not None
    assert (standing.spent_micro_usd, standing.held_micro_usd) == (1_000, 0)
    # Another user's books are their own.
    assert (await b.reserve("r2", "usr_b", "exe_2", 100_000)).remaining_micro_usd == 0


async def test_exhausted_is_refused_with_what_is_left(db: Database) -> None:
    clock = Clock(START)
    b = books(db, clock)
    await b.reserve("r1", "usr_a", "exe_1", 95_000)
    with pytest.raises(ResourceExhausted) as err:
        await b.reserve("r2", "usr_a", "exe_1", 5_001)
    e = err.value
    assert e.reason == "BUDGET_EXHAUSTED"
    assert e.metadata["remainingMicroUsd"] == "5000"
    assert e.metadata["period"] == "2026-03"
    assert [v.subject for v in e.quota_violations] == ["user:usr_a"]
    assert "2026-03" in e.quota_violations[0].description
    assert e.retry_after == pytest.approx(period_at(START, "month").ends_at - START)
    # Positive control: exactly what is left fits; a refused id may be retried later.
    assert (await b.reserve("r2", "usr_a", "exe_1", 5_000)).remaining_micro_usd == 0


async def test_twenty_concurrent_reservations_never_overshoot(
    backend: Backend, tmp_path: Path, db: Database
) -> None:
    clock = Clock(START)
    first = books(db, clock)
    await first.reserve("setup", "usr_a", "exe_0", 90_500)
    await first.settle("setup", 90_500)  # 9,500 left: room for nine of 1,000
    # Two replicas (two connections or pools), ten reservations each, all at once.
    other = await _open(backend, tmp_path)
    try:
        second = books(other, clock)

        async def attempt(b: Budgets, n: int) -> int:
            try:
                await b.reserve(f"r{n}", "usr_a", f"exe_{n}", 1_000)
            except ResourceExhausted:
                return 0
            return 1_000

        granted = await asyncio.gather(*(attempt(first if n % 2 else second, n) for n in range(20)))
    finally:
        await other.close()
    assert sum(granted) == 9_000
    standing = await first.standing("usr_a")
    assert standing is not None
    assert standing.committed == 99_500 <= BUDGET
    assert standing.remaining_micro_usd == 500


async def test_settling_cheaper_frees_the_rest(db: Database) -> None:
    b = books(db, Clock(START))
    await b.reserve("r1", "usr_a", "exe_1", 100_000)
    with pytest.raises(ResourceExhausted):
        await b.reserve("r2", "usr_a", "exe_1", 10)
    assert await b.settle("r1", 40_000) == 60_000
    assert (await b.reserve("r2", "usr_a", "exe_1", 60_000)).remaining_micro_usd == 0


async def test_unsettled_reservations_expire(db: Database) -> None:
    clock = Clock(START)
    b = books(db, clock, reservation_ttl_seconds=60)
    await b.reserve("crashed", "usr_a", "exe_1", 100_000)
    with pytest.raises(ResourceExhausted):
        await b.reserve("r2", "usr_a", "exe_2", 1)
    clock.now += 61
    assert (await b.reserve("r2", "usr_a", "exe_2", 1)).remaining_micro_usd == 99_999
    # A late settle still books what the call cost (the money was spent).
    assert await b.settle("crashed", 500) == 99_499


async def test_reservation_ids_are_idempotent(db: Database) -> None:
    b = books(db, Clock(START))
    first = await b.reserve("r1", "usr_a", "exe_1", 10_000)
    await b.reserve("r2", "usr_a", "exe_1", 20_000)
    assert await b.reserve("r1", "usr_a", "exe_1", 10_000) == first
    standing = await b.standing("usr_a")
    assert standing is not None
    assert standing.held_micro_usd == 30_000
    with pytest.raises(FailedPrecondition) as err:
        await b.reserve("r1", "usr_a", "exe_1", 10_001)
    assert err.value.reason == "RESERVATION_CONFLICT"
    with pytest.raises(FailedPrecondition):
        await b.reserve("r1", "usr_b", "exe_1", 10_000)
    assert await b.settle("r1", 4_000) == 76_000
    assert await b.settle("r1", 4_000) == 76_000  # booked once
    with pytest.raises(FailedPrecondition) as err:
        await b.settle("r1", 4_001)
    assert err.value.reason == "RESERVATION_CONFLICT"
    # A settled reservation asked for again still gives its first answer.
    assert await b.reserve("r1", "usr_a", "exe_1", 10_000) == first


async def test_unknown_reservation_is_not_found(db: Database) -> None:
    b = books(db, Clock(START))
    with pytest.raises(NotFound) as err:
        await b.settle("never", 1)
    assert err.value.reason == "RESERVATION_NOT_FOUND"
    await b.reserve("known", "usr_a", "exe_1", 1)
    assert await b.settle("known", 1) == BUDGET - 1


async def test_a_new_period_starts_a_new_budget(db: Database) -> None:
    clock = Clock(START)
    b = books(db, clock, period="day")
    grant = await b.reserve("r1", "usr_a", "exe_1", BUDGET)
    assert (grant.period, grant.remaining_micro_usd) == ("2026-03-14", 0)
    await b.settle("r1", BUDGET)
    clock.now += 86_400
    assert await b.reserve("r2", "usr_a", "exe_1", 1) == Grant(BUDGET - 1, "2026-03-15", False)


async def test_degrade_near_the_limit(db: Database) -> None:
    b = books(db, Clock(START), degrade_ratio=0.8)
    assert (await b.reserve("r1", "usr_a", "exe_1", 79_999)).degrade_to_cheapest is False
    assert (await b.reserve("r2", "usr_a", "exe_1", 1)).degrade_to_cheapest is True
    standing = await b.standing("usr_a")
    assert standing is not None
    assert standing.degrade


async def test_no_budget_always_grants_and_still_settles(db: Database) -> None:
    b = books(db, Clock(START), per_user_micro_usd=0)
    assert await b.reserve("r1", "usr_a", "exe_1", 10**12) == Grant(NO_BUDGET, "2026-03", False)
    assert await b.settle("r1", 10**9) == NO_BUDGET
    assert await b.standing("usr_a") is None


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("", "usr_a", "exe_1", 1), "reservation_id"),
        (("r1", "", "exe_1", 1), "user_id"),
        (("r1", "usr_a", "x" * 257, 1), "execution_id"),
        (("r1", "usr_a", "exe_1", -1), "amount_micro_usd"),
    ],
)
async def test_bad_reservations_name_the_field(
    db: Database, args: tuple[str, str, str, int], field: str
) -> None:
    b = books(db, Clock(START))
    with pytest.raises(InvalidArgument) as err:
        await b.reserve(*args)
    assert err.value.reason == "BUDGET_REQUEST_INVALID"
    assert [v.field for v in err.value.field_violations] == [field]
    with pytest.raises(InvalidArgument):
        await b.settle("r1", -1)
    # Positive control.
    assert (await b.reserve("r1", "usr_a", "exe_1", 0)).remaining_micro_usd == BUDGET


async def test_old_reservations_are_pruned(db: Database) -> None:
    clock = Clock(START)
    b = books(db, clock)
    await b.reserve("old", "usr_a", "exe_1", 1)
    clock.now += KEEP_SECONDS / 2
    await b.reserve("recent", "usr_a", "exe_1", 1)
    clock.now += KEEP_SECONDS / 2 + 1
    assert await b.prune() == 1
    with pytest.raises(NotFound):
        await b.settle("old", 1)
    assert await b.settle("recent", 1) >= 0


async def test_an_admin_set_budget_replaces_the_default_for_that_user_only(db: Database) -> None:
    b = books(db, Clock(START))
    view = await b.set_limit("usr_small", "", 1_000, "", clear=False)
    assert (view.budget_micro_usd, view.own, view.period_kind) == (1_000, True, "month")
    assert view.remaining_micro_usd == 1_000
    with pytest.raises(ResourceExhausted) as err:
        await b.reserve("r1", "usr_small", "exe_1", 1_001)
    assert err.value.quota_violations[0].subject == "user:usr_small"
    # Every other user (a new one included) has the configured default.
    assert (await b.reserve("r2", "usr_new", "exe_2", 1_001)).remaining_micro_usd == (
        BUDGET - 1_001
    )
    user, keys = await b.status("usr_new")
    assert (user.budget_micro_usd, user.own, keys) == (BUDGET, False, [])
    # Cleared: back to the default.
    await b.set_limit("usr_small", "", 0, "", clear=True)
    assert (await b.reserve("r3", "usr_small", "exe_1", 1_001)).remaining_micro_usd == (
        BUDGET - 1_001
    )


async def test_a_budget_of_its_own_may_have_its_own_period(db: Database) -> None:
    clock = Clock(START)
    b = books(db, clock)
    await b.set_limit("usr_a", "", 1_000, "day", clear=False)
    await b.reserve("r1", "usr_a", "exe_1", 1_000)
    await b.settle("r1", 1_000)
    with pytest.raises(ResourceExhausted):
        await b.reserve("r2", "usr_a", "exe_1", 1)
    clock.advance(86_400)  # the next day: a new period
    assert (await b.reserve("r3", "usr_a", "exe_1", 1)).remaining_micro_usd == 999


async def test_a_key_budget_caps_spend_through_that_key_within_its_users(db: Database) -> None:
    b = books(db, Clock(START))
    await b.set_limit("usr_a", "key_capped", 500, "", clear=False)
    grant = await b.reserve("r1", "usr_a", "exe_1", 400, key_id="key_capped")
    assert grant.remaining_micro_usd == 100  # the smaller of the key's and the user's
    await b.settle("r1", 300)
    with pytest.raises(ResourceExhausted) as err:
        await b.reserve("r2", "usr_a", "exe_1", 201, key_id="key_capped")
    assert err.value.quota_violations[0].subject == "key:key_capped"
    assert err.value.metadata["remainingMicroUsd"] == "200"
    # Another key of the same user, and calls without a key, still spend the user's budget.
    assert (await b.reserve("r3", "usr_a", "exe_1", 201, key_id="key_other")).remaining_micro_usd
    assert (await b.reserve("r4", "usr_a", "exe_1", 201)).remaining_micro_usd
    # The key's cap is within its user's: the user's own limit refuses first.
    await b.set_limit("usr_a", "", 750, "", clear=False)
    with pytest.raises(ResourceExhausted) as err:
        await b.reserve("r5", "usr_a", "exe_1", 100, key_id="key_capped")
    assert err.value.quota_violations[0].subject == "user:usr_a"
    assert err.value.metadata["remainingMicroUsd"] == "48"
    user, keys = await b.status("usr_a")
    assert user.remaining_micro_usd == 750 - 300 - 201 - 201
    assert [(k.key_id, k.spent_micro_usd, k.remaining_micro_usd) for k in keys] == [
        ("key_capped", 300, 200)
    ]
    # A key of one user has no cap when another user's call names the same id.
    assert (await b.reserve("r6", "usr_b", "exe_2", 201, key_id="key_capped")).remaining_micro_usd


async def test_setting_a_budget_is_checked_and_refused_when_budgets_are_off(db: Database) -> None:
    b = books(db, Clock(START))
    for args, field in (
        (("usr_a", "", -1, "", False), "amount_micro_usd"),
        (("usr_a", "", 10**16, "", False), "amount_micro_usd"),
        (("usr_a", "", 5, "week", False), "period"),
        (("usr_a", "", 5, "", True), "clear"),
        (("", "", 5, "", False), "user_id"),
    ):
        with pytest.raises(InvalidArgument) as err:
            await b.set_limit(*args)  # type: ignore[arg-type]
        assert err.value.field_violations[0].field == field
    off = books(db, Clock(START), per_user_micro_usd=0)
    with pytest.raises(FailedPrecondition) as refused:
        await off.set_limit("usr_a", "", 5, "", clear=False)
    assert refused.value.reason == "BUDGETS_DISABLED"
    # Enabled without a default: only users with their own budget are limited.
    on = books(db, Clock(START), per_user_micro_usd=0, enabled=True)
    await on.set_limit("usr_only", "", 5, "", clear=False)
    with pytest.raises(ResourceExhausted):
        await on.reserve("r1", "usr_only", "exe_1", 6)
    assert (await on.reserve("r2", "usr_free", "exe_1", 6)).remaining_micro_usd == NO_BUDGET
