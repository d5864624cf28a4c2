"""Pricing-pack lifecycle on SQLite and PostgreSQL: publish WARMING, reconcile in the
background against the ledger's holdings to FRESH or ERROR, supersede only once FRESH, STALE
past the maximum age, carry the newest earlier pack forward, resume after a restart."""

from __future__ import annotations

import datetime
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path

import pytest

from services.common.database import Database, open_database
from services.common.errors import InvalidArgument, NotFound
from services.runtime import demo
from services.runtime.ledger import Ledger
from services.runtime.pack_rules import held_symbols
from services.runtime.packs import PackStore, Price
from services.runtime.schema import MIGRATIONS
from tests.conftest import Backend

NOW = datetime.datetime(2025, 3, 10, 12, 0, tzinfo=datetime.UTC)
GOOD = [Price(p.symbol, p.price_micro, p.currency, "") for p in demo.PRICES]


@pytest.fixture
async def db(backend: Backend, tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(backend.url, backend.namespace, tmp_path, "runtime", MIGRATIONS)
    ledger = await Ledger.open(database)
    await ledger.seed(demo.TRANSACTIONS)
    yield database
    await database.close()


class Ticking:
    """A clock that moves one second each time it is read (publication order is visible)."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime.datetime:
        self.now += datetime.timedelta(seconds=1)
        return self.now


CLOCK = Ticking()


async def open_store(db: Database, warmup: float = 0.0) -> PackStore:
    ledger = await Ledger.open(db)

    async def held(asof: str) -> set[str]:
        return held_symbols((r.transaction for r in await ledger.rows()), asof)

    return await PackStore.open(db, held=held, max_age_days=3, warmup_seconds=warmup, clock=CLOCK)


def prices(**changes: int) -> list[Price]:
    """The demo prices with some symbols' prices changed (or removed with -1)."""
    out = []
    for p in GOOD:
        value = changes.get(p.symbol, p.price_micro)
        if value != -1:
            out.append(Price(p.symbol, value, p.currency, "feed"))
    return out


async def test_a_published_pack_warms_then_is_fresh_with_its_summary(db: Database) -> None:
    store = await open_store(db)
    pack = await store.publish("2025-03-10", "feed", prices())
    assert pack.status == "WARMING"
    assert pack.pack_id.startswith("PP_2025-03-10_")
    assert datetime.datetime.fromisoformat(pack.ready_by) > NOW
    await store.settled()
    health = await store.health("2025-03-10")
    assert (health.pack_id, health.status, health.carried_forward) == (pack.pack_id, "FRESH", False)
    summary = health.pack.reconciliation if health.pack else None
    assert summary is not None
    assert summary.passed
    assert summary.held_symbols == len({t.symbol for t in demo.TRANSACTIONS})
    assert store.latest() is not None
    assert store.latest().pack_id == pack.pack_id
    # The same content again is the same pack, not a second one.
    assert (await store.publish("2025-03-10", "feed", prices())).pack_id == pack.pack_id
    assert await db.fetchval("SELECT COUNT(*) FROM packs") == 1


async def test_reconciliation_failures_end_in_error_naming_the_symbols(db: Database) -> None:
    store = await open_store(db)
    bad = prices(NVDA=-1, MSFT=0)
    bad.append(Price("AAPL", 1, "USD", "feed"))
    pack = await store.publish("2025-03-10", "feed", bad)
    await store.settled()
    health = await store.health_of(pack.pack_id, "2025-03-10")
    assert health.status == "ERROR"
    summary = health.pack.reconciliation if health.pack else None
    assert summary is not None
    assert not summary.passed
    assert summary.missing_symbols == ("NVDA",)
    assert summary.non_positive_symbols == ("MSFT",)
    assert summary.duplicate_symbols == ("AAPL",)
    assert not summary.checksum_mismatch


async def test_holdings_are_those_of_the_packs_date(db: Database) -> None:
    # Before 2024-01-04 the demo portfolio held no NVDA and no VOO.
    store = await open_store(db)
    pack = await store.publish("2024-01-03", "feed", prices(NVDA=-1, VOO=-1))
    await store.settled()
    assert (await store.health_of(pack.pack_id, "2024-01-03")).status == "FRESH"


async def test_a_content_changed_after_publication_fails_its_checksum(db: Database) -> None:
    store = await open_store(db, warmup=0.3)
    pack = await store.publish("2025-03-10", "feed", prices())
    await db.execute(
        "UPDATE packs SET prices = replace(prices, '229870000', '1') WHERE pack_id = $1",
        pack.pack_id,
    )
    await store.settled()
    health = await store.health_of(pack.pack_id, "2025-03-10")
    assert health.status == "ERROR"
    assert health.pack is not None
    assert health.pack.reconciliation is not None
    assert health.pack.reconciliation.checksum_mismatch


async def test_a_newer_pack_supersedes_only_once_fresh(db: Database) -> None:
    first = await open_store(db)
    old = await first.publish("2025-03-10", "feed", prices())
    await first.settled()
    slow = await open_store(db, warmup=30)
    newer = await slow.publish("2025-03-10", "feed", prices(AAPL=230_000_000))
    assert (await slow.health("2025-03-10")).pack_id == old.pack_id  # newer still warming
    failed = await first.publish("2025-03-10", "feed", prices(AAPL=0))
    await first.settled()
    assert (await first.health_of(failed.pack_id, "2025-03-10")).status == "ERROR"
    assert (await first.health("2025-03-10")).pack_id == old.pack_id  # an ERROR never wins
    await slow.close()
    resumed = await open_store(db)
    resumed.start()  # a restart reconciles what was left warming
    await resumed.settled()
    health = await resumed.health("2025-03-10")
    assert (health.pack_id, health.status) == (newer.pack_id, "FRESH")


async def test_a_date_whose_only_pack_warms_or_failed_says_so(db: Database) -> None:
    fresh = await open_store(db)
    await fresh.publish("2025-03-07", "feed", prices())
    await fresh.settled()
    slow = await open_store(db, warmup=30)
    warming = await slow.publish("2025-03-10", "feed", prices())
    health = await slow.health("2025-03-10")
    assert (health.pack_id, health.status) == (warming.pack_id, "WARMING")
    await slow.close()
    failed = await fresh.publish("2025-03-09", "feed", prices(AAPL=0))
    await fresh.settled()
    assert (await fresh.health("2025-03-09")).pack_id == failed.pack_id
    assert (await fresh.health("2025-03-09")).status == "ERROR"


async def test_without_a_pack_of_the_date_the_newest_earlier_is_carried_forward(
    db: Database,
) -> None:
    store = await open_store(db)
    pack = await store.publish("2025-03-05", "feed", prices())
    await store.settled()
    near = await store.health("2025-03-08")  # 3 days: the maximum age
    assert (near.pack_id, near.status, near.carried_forward) == (pack.pack_id, "FRESH", True)
    far = await store.health("2025-03-09")
    assert (far.pack_id, far.status, far.carried_forward) == (pack.pack_id, "STALE", True)
    # The pack itself is FRESH for a run of its own date, STALE for one long after.
    assert (await store.health_of(pack.pack_id, "2025-03-05")).status == "FRESH"
    assert (await store.health_of(pack.pack_id, "2025-04-01")).status == "STALE"
    none = await store.health("2025-03-04")
    assert (none.pack, none.status) == (None, "")
    for unknown in ("PP_2025-03-05_00000000", "PP_" + "x" * 100_000):
        with pytest.raises(NotFound) as error:
            await store.health_of(unknown, "2025-03-05")
        assert error.value.reason == "PACK_NOT_FOUND"
        assert len(error.value.metadata["packId"]) <= 64


async def test_a_malformed_publication_is_refused_with_field_violations(db: Database) -> None:
    store = await open_store(db)
    with pytest.raises(InvalidArgument) as error:
        await store.publish(
            "2025-03-10",
            "",
            [Price("", 1, "USD", ""), Price("A" * 33, 1, "usd", ""), Price("OK", 1, "USD", "a b")],
        )
    assert error.value.reason == "PACK_INVALID"
    assert [v.field for v in error.value.field_violations] == [
        "source",
        "prices[0].symbol",
        "prices[1].symbol",
        "prices[1].currency",
        "prices[2].source",
    ]
    with pytest.raises(InvalidArgument) as error:
        await store.publish("2025-03-10", "feed", [])
    assert [v.field for v in error.value.field_violations] == ["prices"]
    assert await db.fetchval("SELECT COUNT(*) FROM packs") == 0


async def test_packs_are_listed_newest_first_in_pages(db: Database) -> None:
    store = await open_store(db)
    ids = [(await store.publish(d, "feed", prices())).pack_id for d in ("2025-03-01", "2025-03-03")]
    ids.append((await store.publish("2025-03-03", "feed", prices(AAPL=5))).pack_id)
    await store.settled()
    first, token = await store.page(2, "", "2025-03-03")
    assert token
    rest, last = await store.page(2, token, "2025-03-03")
    assert last == ""
    listed = [h.pack_id for h in first + rest]
    assert sorted(listed) == sorted(ids)
    assert len(listed) == 3
    assert [h.asof for h in first + rest] == ["2025-03-03", "2025-03-03", "2025-03-01"]
    with pytest.raises(InvalidArgument) as error:
        await store.page(2, "garbage!", "2025-03-03")
    assert error.value.reason == "PAGE_TOKEN_INVALID"


async def test_packs_stored_before_the_migration_are_counted(
    backend: Backend, tmp_path: Path
) -> None:
    old = await open_database(backend.url, backend.namespace, tmp_path, "runtime", MIGRATIONS[:2])
    await old.execute(
        "INSERT INTO packs (pack_id, asof, source, status, created_at, prices, checksum) "
        "VALUES ('PP_x', '2025-03-01', 'demo', 'FRESH', '2025-03-01T00:00:00+00:00', $1, 'c')",
        json.dumps([asdict(Price(s, 1, "USD", "demo")) for s in ("A", "B")]),
    )
    await old.close()
    db = await open_database(backend.url, backend.namespace, tmp_path, "runtime", MIGRATIONS)
    store = await open_store(db)
    health = await store.health_of("PP_x", "2025-03-01")
    assert health.pack is not None
    assert (health.status, health.pack.price_count, health.pack.reconciliation) == (
        "FRESH",
        2,
        None,
    )
    await db.close()
