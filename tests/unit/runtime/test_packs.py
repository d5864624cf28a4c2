"""Pricing packs: the id names the content, the demo is seeded once, the newest FRESH pack is
kept in memory and survives a reopen — on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from services.common.database import Database, open_database
from services.runtime import demo
from services.runtime.ledger import GENESIS, Ledger, chain_head
from services.runtime.packs import FRESH, PackStore, Price, new_pack, pack_checksum
from services.runtime.schema import MIGRATIONS
from tests.conftest import Backend

PRICES = (Price("MSFT", 2, "USD", "close"), Price("AAPL", 1, "USD", "close"))


async def open_db(backend: Backend, data_dir: Path) -> Database:
    return await open_database(backend.url, backend.namespace, data_dir, "runtime", MIGRATIONS)


def test_a_pack_id_names_its_content() -> None:
    pack = new_pack("2025-01-02", "demo", PRICES, FRESH)
    assert [p.symbol for p in pack.prices] == ["AAPL", "MSFT"]
    assert pack.checksum == pack_checksum("2025-01-02", "demo", reversed(PRICES))
    assert pack.pack_id == f"PP_2025-01-02_{pack.checksum[:8]}"
    assert new_pack("2025-01-03", "demo", PRICES, FRESH).pack_id != pack.pack_id
    with pytest.raises(ValueError, match="status"):
        new_pack("2025-01-02", "demo", PRICES, "NEW")


async def test_first_start_seeds_the_demo_portfolio_once(backend: Backend, tmp_path: Path) -> None:
    db = await open_db(backend, tmp_path)
    ledger, packs = await Ledger.open(db), await PackStore.open(db)
    assert packs.latest() is None
    await demo.seed(ledger, packs)
    head = ledger.head()
    assert head == chain_head(demo.TRANSACTIONS) != GENESIS
    pack = packs.latest()
    assert pack is not None
    assert pack.status == "FRESH"
    assert pack.asof == datetime.datetime.now(datetime.UTC).date().isoformat()
    assert pack.pack_id.startswith(f"PP_{pack.asof}_")
    held = {t.symbol for t in demo.TRANSACTIONS}
    assert held <= {p.symbol for p in pack.prices}
    assert all(p.source for p in pack.prices)
    # A restart the same day seeds nothing more; a later one only a pack for its day, while
    # no operator has published one (the demo must not go stale); never the ledger again.
    await demo.seed(ledger, packs)
    assert packs.latest() == pack
    await demo.seed(ledger, packs, today=datetime.date(2030, 1, 1))
    assert ledger.head() == head
    later = packs.latest()
    assert later is not None
    assert (later.asof, later.status) == ("2030-01-01", "FRESH")
    assert len(await ledger.rows()) == len(demo.TRANSACTIONS)
    await packs.publish("2030-01-02", "close", list(pack.prices))
    await demo.seed(ledger, packs, today=datetime.date(2030, 1, 3))
    assert packs.latest() == later  # an operator's pack exists: the demo stops seeding
    await db.close()

    db = await open_db(backend, tmp_path)
    reopened = await PackStore.open(db)
    assert reopened.latest() == later
    assert await reopened.get(pack.pack_id) == pack
    assert await reopened.get("PP_2025-01-02_00000000") is None
    await db.close()
