"""The ledger's hash chain: the head commits to every transaction, in order, and a changed
row is found by verify."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from services.common.storage import Database
from services.runtime import demo
from services.runtime.ledger import GENESIS, Ledger, Transaction, chain_hash, chain_head
from services.runtime.packs import PackStore
from services.runtime.schema import MIGRATIONS

BUY = Transaction("p1", "2024-03-01", "AAPL", "buy", 10_000_000, 170_000_000, "USD")
SELL = Transaction("p1", "2024-03-02", "AAPL", "sell", 4_000_000, 175_500_000, "USD")


def test_a_hash_is_sha256_of_the_previous_hash_and_the_canonical_json() -> None:
    canonical = (
        b'{"currency":"USD","portfolio":"p1","price_micro":170000000,"quantity_micro":10000000,'
        b'"side":"buy","symbol":"AAPL","trade_date":"2024-03-01"}'
    )
    assert BUY.canonical() == canonical
    assert chain_hash(GENESIS, BUY) == hashlib.sha256(GENESIS.encode() + canonical).hexdigest()


def test_the_same_transactions_give_the_same_head_and_order_matters() -> None:
    assert chain_head([BUY, SELL]) == chain_head([BUY, SELL])
    assert chain_head([BUY, SELL]) != chain_head([SELL, BUY])
    assert chain_head([]) == GENESIS


async def open_ledger(path: Path) -> tuple[Database, Ledger]:
    db = await Database.open(path, MIGRATIONS)
    return db, await Ledger.open(db)


async def test_append_moves_the_head_and_it_survives_a_reopen(tmp_path: Path) -> None:
    db, ledger = await open_ledger(tmp_path / "runtime.db")
    assert ledger.head() == GENESIS
    first = await ledger.append(BUY)
    assert first == chain_hash(GENESIS, BUY)
    second = await ledger.append(SELL)
    assert second not in (GENESIS, first)
    assert second == chain_head([BUY, SELL])
    await db.close()
    db, reopened = await open_ledger(tmp_path / "runtime.db")
    assert reopened.head() == second
    await db.close()


async def test_two_ledgers_with_the_same_transactions_have_the_same_head(tmp_path: Path) -> None:
    db1, one = await open_ledger(tmp_path / "one.db")
    db2, two = await open_ledger(tmp_path / "two.db")
    await one.append(BUY)
    await one.append(SELL)
    await two.append(BUY, SELL)
    assert one.head() == two.head()
    await db1.close()
    await db2.close()


async def test_verify_finds_the_first_tampered_row(tmp_path: Path) -> None:
    path = tmp_path / "runtime.db"
    db, ledger = await open_ledger(path)
    await ledger.append(BUY, SELL, BUY)
    intact = await ledger.verify()
    assert (intact.ok, intact.rows, intact.head) == (True, 3, ledger.head())
    await db.close()

    # Someone edits the second row behind the ledger's back.
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE ledger_transactions SET quantity_micro = 40000000 WHERE seq = 2")
    db, ledger = await open_ledger(path)
    broken = await ledger.verify()
    assert (broken.ok, broken.broken_seq) == (False, 2)
    assert "does not match the row's content" in broken.problem
    await db.close()

    # Re-hashing the edited row does not help: the next row no longer links to it.
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE ledger_transactions SET hash = ? WHERE seq = 2", ("f" * 64,))
    db, ledger = await open_ledger(path)
    relinked = await ledger.verify()
    assert relinked.broken_seq == 2
    await db.close()


async def test_first_start_seeds_the_demo_portfolio_once(tmp_path: Path) -> None:
    db, ledger = await open_ledger(tmp_path / "runtime.db")
    packs = await PackStore.open(db)
    await demo.seed(ledger, packs)
    head = ledger.head()
    assert head == chain_head(demo.TRANSACTIONS) != GENESIS
    pack = packs.latest()
    assert pack is not None
    assert pack.status == "FRESH"
    assert pack.pack_id.startswith(f"PP_{pack.asof}_")
    held = {t.symbol for t in demo.TRANSACTIONS}
    assert held <= {p.symbol for p in pack.prices}
    assert all(p.source for p in pack.prices)
    await demo.seed(ledger, packs)  # a restart seeds nothing more
    assert ledger.head() == head
    assert len(await ledger.rows()) == len(demo.TRANSACTIONS)
    await db.close()
