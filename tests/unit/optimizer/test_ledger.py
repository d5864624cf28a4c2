"""The usage ledger on SQLite and PostgreSQL alike: idempotent recording, aggregation by
every dimension, totals, bounds, and rows that outlive a reopened database."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.database import Database, open_database
from services.common.errors import InvalidArgument
from services.optimizer.ledger import Ledger, UsageRecord, UsageRow
from services.optimizer.schema import MIGRATIONS
from services.optimizer.usage import Dimension, UsageQuery
from tests.conftest import Backend

DAY1 = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC).timestamp()
DAY2 = dt.datetime(2026, 3, 2, 23, 59, tzinfo=dt.UTC).timestamp()


async def _open(backend: Backend, tmp_path: Path) -> Database:
    return await open_database(backend.url, backend.namespace, tmp_path, "optimizer", MIGRATIONS)


@pytest.fixture
async def db(backend: Backend, tmp_path: Path) -> AsyncIterator[Database]:
    database = await _open(backend, tmp_path)
    try:
        yield database
    finally:
        await database.close()


def record(outcome_id: str, **overrides: object) -> UsageRecord:
    base = UsageRecord(
        outcome_id=outcome_id,
        user_id="usr_a",
        session_id="ses_1",
        execution_id="exe_1",
        step_id="summarise",
        pattern_id="chat",
        provider="cheap",
        model="m-cheap",
        input_tokens=100,
        output_tokens=50,
        cached_tokens=10,
        cache_write_tokens=20,
        estimated=False,
        cost_micro_usd=1_000,
        charge_micro_usd=1_000,
        latency_ms=300,
        ttft_ms=40,
        status="succeeded",
        error_reason="",
        retry_count=0,
        price_table_version="prices-abc",
        occurred_at=DAY1,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


BATCH = [
    record("exe_1:s:1"),
    record(
        "exe_1:s:2",
        provider="smart",
        model="m-smart",
        cost_micro_usd=9_000,
        charge_micro_usd=9_000,
        occurred_at=DAY2,
    ),
    record(
        "exe_2:s:1",
        user_id="usr_b",
        session_id="ses_2",
        input_tokens=7,
        cache_write_tokens=0,
        cost_micro_usd=5,
        charge_micro_usd=5,
    ),
    record(
        "exe_2:s:2",
        user_id="usr_b",
        session_id="ses_2",
        status="failed",
        error_reason="PROVIDER_UNAVAILABLE",
        estimated=True,
        retry_count=2,
        output_tokens=0,
        cost_micro_usd=40,  # a cut stream, billed by the provider and waived for the caller
        charge_micro_usd=0,
        occurred_at=DAY2,
    ),
]


def query(*group_by: Dimension, user: str | None = None) -> UsageQuery:
    return UsageQuery(dt.date(2026, 3, 1), dt.date(2026, 3, 2), user, tuple(group_by))


async def test_the_same_batch_twice_is_stored_once(db: Database) -> None:
    ledger = Ledger(db)
    assert [r.outcome_id for r in await ledger.record(BATCH)] == [r.outcome_id for r in BATCH]
    assert await ledger.record(BATCH) == []
    # A duplicate inside one batch counts once; a new id beside old ones is stored.
    fresh = record("exe_3:s:1")
    assert await ledger.record([BATCH[0], fresh, fresh]) == [fresh]
    assert await db.fetchval("SELECT COUNT(*) FROM usage_records") == len(BATCH) + 1


async def test_every_field_is_kept(db: Database) -> None:
    ledger = Ledger(db)
    await ledger.record(BATCH)
    kept = await ledger.recent("cheap", DAY1 - 1, 10)
    assert kept == [r for r in BATCH if r.provider == "cheap"]
    row = await db.fetchrow(
        "SELECT day, recorded_at FROM usage_records WHERE outcome_id = $1", "exe_1:s:2"
    )
    assert row is not None
    assert row["day"] == "2026-03-02"  # 23:59 UTC is still the 2nd
    assert row["recorded_at"] > DAY2


async def test_usage_groups_by_each_dimension(db: Database) -> None:
    ledger = Ledger(db)
    await ledger.record(BATCH)
    by_user = await ledger.usage(query(Dimension.USER))
    assert [(r.user_id, r.calls, r.cost_micro_usd) for r in by_user.rows] == [
        ("usr_a", 2, 10_000),
        ("usr_b", 2, 45),
    ]
    assert by_user.rows[0].provider == ""  # not grouped by: empty
    by_session = await ledger.usage(query(Dimension.SESSION))
    assert [(r.session_id, r.input_tokens) for r in by_session.rows] == [
        ("ses_1", 200),
        ("ses_2", 107),
    ]
    by_provider = await ledger.usage(query(Dimension.PROVIDER))
    assert [(r.provider, r.calls) for r in by_provider.rows] == [("cheap", 3), ("smart", 1)]
    by_model = await ledger.usage(query(Dimension.MODEL))
    assert [r.model for r in by_model.rows] == ["m-cheap", "m-smart"]
    by_day = await ledger.usage(query(Dimension.DAY))
    assert [(r.day, r.calls, r.output_tokens) for r in by_day.rows] == [
        ("2026-03-01", 2, 100),
        ("2026-03-02", 2, 50),
    ]
    combined = await ledger.usage(query(Dimension.DAY, Dimension.PROVIDER, user="usr_a"))
    assert [(r.day, r.provider, r.cost_micro_usd) for r in combined.rows] == [
        ("2026-03-01", "cheap", 1_000),
        ("2026-03-02", "smart", 9_000),
    ]


async def test_totals_sum_every_row_of_the_query(db: Database) -> None:
    ledger = Ledger(db)
    await ledger.record(BATCH)
    everyone = await ledger.usage(query(Dimension.PROVIDER))
    assert everyone.totals == UsageRow(
        calls=4,
        input_tokens=307,
        output_tokens=150,
        cached_tokens=40,
        cache_write_tokens=60,
        cost_micro_usd=10_045,
        charge_micro_usd=10_005,
    )
    one = await ledger.usage(query(Dimension.PROVIDER, user="usr_b"))
    # What the providers billed and what the caller is charged, side by side.
    assert (one.totals.calls, one.totals.cost_micro_usd, one.totals.charge_micro_usd) == (
        2,
        45,
        5,
    )
    first_day = await ledger.usage(
        UsageQuery(dt.date(2026, 3, 1), dt.date(2026, 3, 1), None, (Dimension.DAY,))
    )
    assert [r.day for r in first_day.rows] == ["2026-03-01"]
    nobody = await ledger.usage(query(Dimension.DAY, user="usr_nobody"))
    assert (nobody.rows, nobody.totals) == ((), UsageRow())


async def test_too_many_groups_is_refused(db: Database) -> None:
    ledger = Ledger(db)
    await ledger.record(BATCH)
    with pytest.raises(InvalidArgument) as err:
        await ledger.usage(query(Dimension.USER, Dimension.DAY), max_rows=3)
    assert err.value.reason == "USAGE_RESULT_TOO_LARGE"
    # Positive control: the same query under a bound it fits.
    assert len((await ledger.usage(query(Dimension.USER, Dimension.DAY), max_rows=4)).rows) == 4


async def test_rows_outlive_a_reopened_database(backend: Backend, tmp_path: Path) -> None:
    first = await _open(backend, tmp_path)
    try:
        await Ledger(first).record(BATCH[:2])
    finally:
        await first.close()
    second = await _open(backend, tmp_path)
    try:
        ledger = Ledger(second)
        assert await ledger.record(BATCH) == BATCH[2:]  # the first two were kept
        assert (await ledger.usage(query(Dimension.DAY))).totals.calls == 4
    finally:
        await second.close()


async def test_a_large_batch_is_stored_whole(db: Database) -> None:
    batch = [record(f"exe_big:s:{i}") for i in range(250)]
    assert len(await Ledger(db).record(batch)) == 250
    assert (await Ledger(db).usage(query(Dimension.DAY))).totals.calls == 250


async def test_rows_from_before_charges_are_charged_their_cost(
    backend: Backend, tmp_path: Path
) -> None:
    # A ledger written before cache writes and charges existed (the first two migrations).
    old = await open_database(backend.url, backend.namespace, tmp_path, "optimizer", MIGRATIONS[:2])
    try:
        await old.execute(
            "INSERT INTO usage_records (outcome_id, user_id, session_id, execution_id, step_id, "
            "pattern_id, provider, model, input_tokens, output_tokens, cached_tokens, estimated, "
            "cost_micro_usd, latency_ms, ttft_ms, status, error_reason, retry_count, "
            "price_table_version, occurred_at, day, recorded_at) VALUES ('old:s:1', 'usr_a', "
            "'', 'old', 's', '', 'cheap', 'm', 10, 5, 0, FALSE, 70, 1, 1, 'failed', "
            "'PROVIDER_UNAVAILABLE', 0, 'prices-old', $1, '2026-03-01', $1)",
            DAY1,
        )
    finally:
        await old.close()
    db = await _open(backend, tmp_path)
    try:
        totals = (await Ledger(db).usage(query(Dimension.DAY))).totals
        assert (totals.cost_micro_usd, totals.charge_micro_usd, totals.cache_write_tokens) == (
            70,
            70,
            0,
        )
    finally:
        await db.close()
