"""Ledger import: a CSV is parsed whole (every bad cell reported with its line), and appended
atomically after checking sells against holdings — on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from services.common.database import open_database
from services.common.errors import Aborted, InvalidArgument
from services.runtime import demo
from services.runtime.ledger import Ledger, Oversold, Transaction, chain_head
from services.runtime.ledger_csv import parse_transactions
from services.runtime.packs import PackStore
from services.runtime.schema import MIGRATIONS
from tests.conftest import Backend

TODAY = datetime.date(2024, 6, 30)
HEADER = "portfolio,trade_date,symbol,side,quantity,price,currency\n"


def test_rows_become_transactions_in_millionths_with_their_lines() -> None:
    text = (
        "symbol,side,portfolio,trade_date,quantity,price,currency\n"
        "AAPL,buy,p1,2024-03-01,10,170.123456,USD\n"
        "\n"
        " MSFT , sell ,p1,2024-03-02,0.5,400,USD\n"
    )
    rows = parse_transactions(text, TODAY)
    assert [r.line for r in rows] == [2, 4]
    assert rows[0].transaction == Transaction(
        "p1", "2024-03-01", "AAPL", "buy", 10_000_000, 170_123_456, "USD"
    )
    assert rows[1].transaction.quantity_micro == 500_000
    assert rows[1].transaction.side == "sell"


def test_every_bad_cell_is_reported_with_its_line_and_column() -> None:
    text = HEADER + (
        "p1,2024-03-01,AAPL,buy,10,170,USD\n"
        "p1,2024-02-30,aapl,hold,-1,1.0000001,usd\n"
        "p1,2099-01-01,AAPL,buy,1,1,USD\n"
        "p1,2024-03-01,AAPL\n"
    )
    with pytest.raises(InvalidArgument) as caught:
        parse_transactions(text, TODAY)
    assert caught.value.reason == "LEDGER_IMPORT_INVALID"
    fields = [v.field for v in caught.value.field_violations]
    assert fields == [
        "csv.lines[3].trade_date",
        "csv.lines[3].symbol",
        "csv.lines[3].side",
        "csv.lines[3].quantity",
        "csv.lines[3].price",
        "csv.lines[3].currency",
        "csv.lines[4].trade_date",
        "csv.lines[5]",
    ]
    assert "future" in caught.value.field_violations[6].description


def test_a_bad_header_or_an_empty_file_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_transactions("portfolio,date,symbol,side,quantity,price,currency\n", TODAY)
    descriptions = [v.description for v in caught.value.field_violations]
    assert descriptions == ["missing column trade_date", "unknown column 'date'"]
    with pytest.raises(InvalidArgument) as caught:
        parse_transactions(HEADER, TODAY)
    assert caught.value.field_violations[0].description == "no transactions"
    with pytest.raises(InvalidArgument):
        parse_transactions("", TODAY)


async def test_an_import_appends_atomically_and_checks_sells_against_holdings(
    backend: Backend, tmp_path: Path
) -> None:
    db = await open_database(backend.url, backend.namespace, tmp_path, "runtime", MIGRATIONS)
    ledger = await Ledger.open(db)
    await demo.seed(ledger, await PackStore.open(db))
    seeded = ledger.head()
    sell = Transaction("demo", "2024-03-01", "AAPL", "sell", 70_000_000, 200_000_000, "USD")
    too_much = Transaction("demo", "2024-03-02", "AAPL", "sell", 6_000_000, 200_000_000, "USD")
    with pytest.raises(Oversold) as caught:
        await ledger.import_transactions([sell, too_much])
    assert caught.value.index == 1
    assert ledger.head() == seeded
    assert len(await ledger.rows()) == len(demo.TRANSACTIONS)  # nothing of the batch stayed

    with pytest.raises(Aborted) as moved:
        await ledger.import_transactions([sell], expected_head="f" * 64)
    assert moved.value.reason == "LEDGER_HEAD_MOVED"

    before, after = await ledger.import_transactions([sell], expected_head=seeded)
    assert before == seeded
    assert after == chain_head([*demo.TRANSACTIONS, sell]) == ledger.head()
    assert (await ledger.verify()).ok
    await db.close()


async def test_a_replica_sees_another_replicas_import_when_it_refreshes(
    backend: Backend, tmp_path: Path
) -> None:
    first_db = await open_database(backend.url, backend.namespace, tmp_path, "runtime", MIGRATIONS)
    second_db = await open_database(backend.url, backend.namespace, tmp_path, "runtime", MIGRATIONS)
    first, second = await Ledger.open(first_db), await Ledger.open(second_db)
    buy = Transaction("p1", "2024-03-01", "AAPL", "buy", 1_000_000, 1_000_000, "USD")
    _, after = await first.import_transactions([buy])
    assert second.head() != after  # kept in memory: not read per run
    assert await second.refresh() == after == second.head()
    await first_db.close()
    await second_db.close()
