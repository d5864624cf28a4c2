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
