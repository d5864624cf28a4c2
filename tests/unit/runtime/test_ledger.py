"""The ledger's hash chain: the head commits to every transaction, in order, a changed row is
found by verify, and replicas appending or seeding together never fork it — on SQLite and on
PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.database import Database, open_database
from services.runtime import demo
from services.runtime.ledger import GENESIS, Ledger, Transaction, chain_hash, chain_head
from services.runtime.schema import MIGRATIONS
from tests.conftest import Backend
from tests.harness import ROOT

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


async def open_db(backend: Backend, data_dir: Path, service: str = "runtime") -> Database:
    return await open_database(backend.url, backend.namespace, data_dir, service, MIGRATIONS)


async def test_append_moves_the_head_and_it_survives_a_reopen(
    backend: Backend, tmp_path: Path
) -> None:
    db = await open_db(backend, tmp_path)
    ledger = await Ledger.open(db)
    assert ledger.head() == GENESIS
    first = await ledger.append(BUY)
    assert first == chain_hash(GENESIS, BUY)
    second = await ledger.append(SELL)
    assert second not in (GENESIS, first)
    assert second == chain_head([BUY, SELL])
    await db.close()
    db = await open_db(backend, tmp_path)
    reopened = await Ledger.open(db)
    assert reopened.head() == second
    await db.close()


async def test_amounts_beyond_32_bits_are_stored_exactly(backend: Backend, tmp_path: Path) -> None:
    big = Transaction("p1", "2024-03-01", "BRK.A", "buy", 5_000 * 10**6, 700_000 * 10**6, "USD")
    db = await open_db(backend, tmp_path)
    ledger = await Ledger.open(db)
    await ledger.append(big)
    [row] = await ledger.rows()
    assert row.transaction == big
    assert (await ledger.verify()).ok
    await db.close()


async def test_two_ledgers_with_the_same_transactions_have_the_same_head(
    backend: Backend, tmp_path: Path
) -> None:
    db1 = await open_db(backend, tmp_path, "one")
    db2 = await open_db(backend, tmp_path, "two")
    one, two = await Ledger.open(db1), await Ledger.open(db2)
    await one.append(BUY)
    await one.append(SELL)
    await two.append(BUY, SELL)
    assert one.head() == two.head()
    await db1.close()
    await db2.close()


async def test_verify_finds_the_first_tampered_row(backend: Backend, tmp_path: Path) -> None:
    db = await open_db(backend, tmp_path)
    ledger = await Ledger.open(db)
    await ledger.append(BUY, SELL, BUY)
    intact = await ledger.verify()
    assert (intact.ok, intact.rows, intact.head) == (True, 3, ledger.head())
    [second] = [r.seq for r in await ledger.rows()][1:2]

    # Someone edits the second row behind the ledger's back.
    await db.execute(
        "UPDATE ledger_transactions SET quantity_micro = 40000000 WHERE seq = $1", second
    )
    broken = await ledger.verify()
    assert (broken.ok, broken.broken_seq) == (False, second)
    assert "does not match the row's content" in broken.problem

    # Re-hashing the edited row does not help: the next row no longer links to it.
    await db.execute("UPDATE ledger_transactions SET hash = $1 WHERE seq = $2", "f" * 64, second)
    relinked = await ledger.verify()
    assert relinked.broken_seq == second
    await db.close()


async def test_a_second_row_after_the_same_head_is_refused(
    backend: Backend, tmp_path: Path
) -> None:
    db = await open_db(backend, tmp_path)
    ledger = await Ledger.open(db)
    await ledger.append(BUY)
    insert = (
        "INSERT INTO ledger_transactions (portfolio, trade_date, symbol, side, quantity_micro, "
        "price_micro, currency, prev_hash, hash, recorded_at) "
        "VALUES ('p1', '2024-03-02', 'AAPL', 'sell', 1, 1, 'USD', $1, $2, '2024-03-02')"
    )
    # A fork: a writer that read a stale head (GENESIS) cannot link a row to it.
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        await db.execute(insert, GENESIS, "e" * 64)
    # Positive control: the same row after the current head is accepted.
    assert await db.execute(insert, ledger.head(), "e" * 64) == 1
    await db.close()


async def test_replicas_appending_together_extend_one_chain(
    backend: Backend, tmp_path: Path
) -> None:
    # Three replicas: three connections (pools) to the same database, each with a stale head.
    dbs = [await open_db(backend, tmp_path) for _ in range(3)]
    ledgers = [await Ledger.open(db) for db in dbs]
    appends = [ledger.append(BUY if n % 2 else SELL) for n in range(5) for ledger in ledgers]
    heads = await asyncio.gather(*appends)
    rows = await ledgers[0].rows()
    assert len(rows) == 15
    verification = await ledgers[0].verify()
    assert verification.ok
    assert sorted(heads) == sorted(r.hash for r in rows)
    assert verification.head in heads
    for db in dbs:
        await db.close()


SEED_SCRIPT = """
import asyncio, datetime, sys
from pathlib import Path
from services.common.database import open_database
from services.runtime import demo
from services.runtime.ledger import Ledger
from services.runtime.packs import FRESH, PackStore, new_pack
from services.runtime.schema import MIGRATIONS

async def main() -> None:
    url, namespace, data_dir = sys.argv[1:4]
    db = await open_database(url, namespace, Path(data_dir), "runtime", MIGRATIONS)
    ledger, packs = await Ledger.open(db), await PackStore.open(db)
    seeded = await ledger.seed(demo.TRANSACTIONS)
    pack = new_pack("2025-01-02", demo.SOURCE, demo.PRICES, FRESH)
    pack_seeded = await packs.seed(pack)
    latest = packs.latest()
    print(int(seeded), int(pack_seeded), ledger.head(), latest.pack_id if latest else "")
    await db.close()

asyncio.run(main())
"""


async def test_processes_starting_together_seed_the_demo_exactly_once(
    backend: Backend, tmp_path: Path
) -> None:
    args = ("-c", SEED_SCRIPT, backend.url, backend.namespace, str(tmp_path))
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, *args, cwd=ROOT, stdout=subprocess.PIPE
        )
        for _ in range(4)
    ]
    outputs = [await asyncio.wait_for(p.communicate(), 60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    results = [out.decode().split() for out, _ in outputs]
    assert sum(int(r[0]) for r in results) == 1
    assert sum(int(r[1]) for r in results) == 1
    # Every process, winner or not, ends at the same head and pack.
    assert {r[2] for r in results} == {chain_head(demo.TRANSACTIONS)}
    assert len({r[3] for r in results}) == 1
    db = await open_db(backend, tmp_path)
    ledger = await Ledger.open(db)
    assert len(await ledger.rows()) == len(demo.TRANSACTIONS)
    assert (await ledger.verify()).ok
    assert await db.fetchval("SELECT COUNT(*) FROM packs") == 1
    await db.close()
