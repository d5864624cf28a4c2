"""One storage API over SQLite and PostgreSQL: the same tests run against both."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from services.common.database import PostgresDatabase, enter_wal, open_database
from tests.conftest import PG_URL, Backend, drop_schemas
from tests.fakes.tcp_proxy import TcpProxy
from tests.harness import ROOT

V1 = "CREATE TABLE items (name TEXT PRIMARY KEY, n BIGINT NOT NULL, data BYTEA, ok BOOLEAN)"
V2 = {
    "sqlite": "ALTER TABLE items ADD COLUMN score DOUBLE PRECISION",
    "postgresql": "ALTER TABLE items ADD COLUMN score DOUBLE PRECISION DEFAULT NULL",
}


async def test_values_round_trip_and_placeholders_are_shared(
    backend: Backend, tmp_path: Path
) -> None:
    db = await open_database(backend.url, backend.namespace, tmp_path, "unit", [V1, V2])
    try:
        changed = await db.execute(
            "INSERT INTO items (name, n, data, ok, score) VALUES ($1, $2, $3, $4, $5)",
            "a",
            2**40,
            b"\x00\xff",
            True,
            1.5,
        )
        assert changed == 1
        row = await db.fetchrow("SELECT name, n, data, ok, score FROM items WHERE name = $1", "a")
        assert row is not None
        assert (row["name"], row["n"], bytes(row["data"]), bool(row["ok"]), row["score"]) == (
            "a",
            2**40,
            b"\x00\xff",
            True,
            1.5,
        )
        assert await db.fetchval("SELECT COUNT(*) FROM items WHERE n > $1", 0) == 1
        assert await db.fetchval("SELECT n FROM items WHERE name = $1", "none") is None
    finally:
        await db.close()


async def test_migrations_apply_once_even_when_opened_together(
    backend: Backend, tmp_path: Path
) -> None:
    opened = await asyncio.gather(
        *(open_database(backend.url, backend.namespace, tmp_path, "unit", [V1]) for _ in range(4))
    )
    for db in opened:
        await db.close()
    db = await open_database(backend.url, backend.namespace, tmp_path, "unit", [V1, V2])
    try:
        versions = await db.fetch("SELECT version FROM schema_version ORDER BY version")
        assert [r["version"] for r in versions] == [1, 2]
    finally:
        await db.close()


async def test_a_failed_transaction_leaves_nothing(backend: Backend, tmp_path: Path) -> None:
    db = await open_database(backend.url, backend.namespace, tmp_path, "unit", [V1])
    try:

        async def clash() -> None:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO items (name, n) VALUES ($1, $2)", "a", 1)
                await tx.execute("INSERT INTO items (name, n) VALUES ($1, $2)", "a", 2)

        with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
            await clash()
        assert await db.fetch("SELECT * FROM items") == []
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items (name, n) VALUES ($1, $2)", "a", 1)
        assert await db.fetchval("SELECT n FROM items") == 1
    finally:
        await db.close()


async def test_a_batch_commits_all_its_statements_or_none(backend: Backend, tmp_path: Path) -> None:
    db = await open_database(backend.url, backend.namespace, tmp_path, "unit", [V1])
    try:
        insert = "INSERT INTO items (name, n) VALUES ($1, $2)"
        await db.batch(
            [(insert, ("a", 1)), (insert, ("b", 2)), ("DELETE FROM items WHERE n = $1", (1,))]
        )
        with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
            await db.batch([(insert, ("c", 3)), (insert, ("b", 4))])  # the second one fails
        await db.batch([])
        assert [r["name"] for r in await db.fetch("SELECT name FROM items ORDER BY n")] == ["b"]
    finally:
        await db.close()


async def test_concurrent_transactions_do_not_lose_updates(
    backend: Backend, tmp_path: Path
) -> None:
    db = await open_database(backend.url, backend.namespace, tmp_path, "unit", [V1])
    try:
        await db.execute("INSERT INTO items (name, n) VALUES ($1, $2)", "c", 0)

        async def bump() -> None:
            async with db.transaction() as tx:
                await tx.execute("UPDATE items SET n = n + 1 WHERE name = $1", "c")

        await asyncio.gather(*(bump() for _ in range(20)))
        assert await db.fetchval("SELECT n FROM items WHERE name = $1", "c") == 20
    finally:
        await db.close()


async def test_sqlite_file_is_private(tmp_path: Path) -> None:
    db = await open_database("", "saga", tmp_path, "unit", [V1])
    await db.close()
    assert stat.S_IMODE((tmp_path / "unit.db").stat().st_mode) == 0o600


def test_processes_opening_a_new_database_together_migrate_it_once(
    backend: Backend, tmp_path: Path
) -> None:
    script = (
        "import asyncio, sys; from pathlib import Path; "
        "from services.common.database import enter_wal, open_database; "
        "asyncio.run(open_database(sys.argv[1], sys.argv[2], Path(sys.argv[3]), 'race', "
        "['CREATE TABLE t (x INTEGER)', 'ALTER TABLE t ADD COLUMN y INTEGER']))"
    )
    args = [backend.url, backend.namespace, str(tmp_path)]
    procs = [subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT) for _ in range(4)]
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0]

    async def versions() -> list[int]:
        db = await open_database(backend.url, backend.namespace, tmp_path, "race", [])
        try:
            return [r["version"] for r in await db.fetch("SELECT version FROM schema_version")]
        finally:
            await db.close()

    assert sorted(asyncio.run(versions())) == [1, 2]


async def test_a_cancelled_transaction_does_not_wedge_the_database(
    backend: Backend, tmp_path: Path
) -> None:
    db = await open_database(backend.url, backend.namespace, tmp_path, "unit", [V1])
    try:

        async def slow_writer() -> None:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO items (name, n) VALUES ($1, $2)", "lost", 1)
                await asyncio.sleep(10)

        for delay in (0, 0.001, 0.01, 0.05):
            task = asyncio.ensure_future(slow_writer())
            await asyncio.sleep(delay)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items (name, n) VALUES ($1, $2)", "kept", 2)
        assert [r["name"] for r in await db.fetch("SELECT name FROM items")] == ["kept"]
    finally:
        await db.close()


async def test_a_sqlite_statement_once_begun_commits_though_its_caller_is_cancelled(
    tmp_path: Path,
) -> None:
    """A statement on its own goes to the worker thread in one trip (BEGIN, it, COMMIT): a
    caller cancelled meanwhile does not leave it half done, and the next one still runs."""
    db = await open_database("", "saga", tmp_path, "unit", [V1])
    try:
        task = asyncio.ensure_future(
            db.execute("INSERT INTO items (name, n) VALUES ($1, $2)", "begun", 1)
        )
        await asyncio.sleep(0)  # it holds the lock and is on the worker thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await db.execute("INSERT INTO items (name, n) VALUES ($1, $2)", "next", 2)
        with pytest.raises(sqlite3.IntegrityError):  # a failed statement rolls back alone
            await db.execute("INSERT INTO items (name, n) VALUES ($1, $2)", "next", 3)
        rows = await db.fetch("SELECT name, n FROM items ORDER BY n")
        assert [(r["name"], r["n"]) for r in rows] == [("begun", 1), ("next", 2)]
        assert await db.fetchrow("SELECT n FROM items WHERE name = $1", "none") is None
        assert await db.fetchval("SELECT COUNT(*) FROM items") == 2
    finally:
        await db.close()


def test_connections_switching_one_new_file_to_wal_together_all_succeed(tmp_path: Path) -> None:
    # What every SqliteDatabase.open does first. SQLite refuses one of two racing switches at
    # once ("database is locked": deadlock avoidance, no busy wait); seen as a flaky
    # multi-process test of the runtime's seeding.
    for round_ in range(30):
        path = tmp_path / f"{round_}.db"
        connections = [sqlite3.connect(path, isolation_level=None, check_same_thread=False)]
        connections += [
            sqlite3.connect(path, isolation_level=None, check_same_thread=False) for _ in range(7)
        ]
        ready = threading.Barrier(len(connections))
        errors: list[Exception] = []

        def switch(
            connection: sqlite3.Connection,
            ready: threading.Barrier = ready,
            errors: list[Exception] = errors,
        ) -> None:
            connection.execute("PRAGMA busy_timeout=5000")
            ready.wait()
            try:
                enter_wal(connection)
            except sqlite3.OperationalError as error:
                errors.append(error)

        threads = [threading.Thread(target=switch, args=(c,)) for c in connections]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        modes = {c.execute("PRAGMA journal_mode").fetchone()[0] for c in connections}
        for connection in connections:
            connection.close()
        assert (errors, modes) == ([], {"wal"}), f"round {round_}"


async def test_a_postgresql_ping_says_whether_the_database_answers(tmp_path: Path) -> None:
    real = urlsplit(PG_URL)
    namespace = f"t{secrets.token_hex(6)}"
    async with TcpProxy(real.hostname or "127.0.0.1", real.port or 5432) as proxy:
        url = real._replace(netloc=f"{real.username}@127.0.0.1:{proxy.port}").geturl()
        db = await open_database(url, namespace, tmp_path, "ping", [])
        assert isinstance(db, PostgresDatabase)
        try:
            assert await db.ping(5)
            await proxy.stop()
            assert not await db.ping(5)
            await proxy.start()
            for _ in range(50):  # the pool reconnects by itself
                if await db.ping(5):
                    break
            assert await db.ping(5)
        finally:
            await db.close()
            await drop_schemas(namespace)
