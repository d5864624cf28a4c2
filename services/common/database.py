"""Persistent storage for every service: SQLite files (the embedded default) or PostgreSQL
(scale-out), chosen by `storage.url` — one API over both.

SQL is written once, PostgreSQL style, with `$1, $2` placeholders (SQLite runs the same text
with `?1, ?2`). Types that both accept: TEXT, BIGINT, INTEGER, DOUBLE PRECISION, BOOLEAN
(0/1 in SQLite), BYTEA (a BLOB in SQLite). A migration that must differ is a mapping
{"sqlite": ..., "postgresql": ...} of one text formatted with the few words that differ
(an identity column, a collation: see `vault/schema.py`), never two copies of a schema.
Migrations are numbered by position, run once each, in order, under a lock, so replicas or
processes starting together never apply one twice; each service keeps its own in
`services/<service>/schema.py`.

* SQLite: `<data_dir>/<service>.db`, created 0600, WAL, synchronous=FULL; one connection per
  process behind a lock, statements on a worker thread (the event loop never blocks on disk).
* PostgreSQL: a pool (asyncpg); each service lives in its own schema
  `<storage.namespace>_<service>`, created on first start.

Use `async with db.transaction() as tx:` for work that must be atomic; `db.fetch…` for a
single statement.

Time: a new table stores an instant as BIGINT microseconds since the Unix epoch (UTC), and a
duration as BIGINT microseconds too. Integers compare, sort and serve as page tokens exactly
alike on both backends (no float rounding, no text to parse), and convert to a protobuf
`Timestamp` without loss (`FromMicroseconds`). `now_micros()` is the wall clock so encoded;
a component with an injected clock (seconds, like `time.time`) stores
`round(clock() * 1_000_000)`. Tables older than this rule keep their encoding (epoch seconds
as DOUBLE PRECISION in auth, the optimizer and the router's outbox; ISO-8601 text and
`expires_at_ms` in the runtime; the vault already follows it): changing a shipped column is
a migration with a reason of its own, not a cleanup.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from services.common.backoff import Backoff
from services.common.errors import Unavailable

Row = dict[str, Any]
Migration = str | Mapping[str, str]
Statement = tuple[str, Sequence[Any]]
"""A statement and its arguments."""

_PLACEHOLDER = re.compile(r"\$(\d+)")
WAL_SWITCH_ATTEMPTS = 40
WAL_SWITCH_BACKOFF = Backoff(initial=0.01, maximum=0.25)  # ~5 s over the attempts
T = TypeVar("T")


class Tx(Protocol):
    """The statements of one transaction."""

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; the number of rows it changed."""
        ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        """All rows of a query."""
        ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        """The first row of a query, or None."""
        ...

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """The first column of the first row, or None."""
        ...


class Database(Protocol):
    """A service's database (see the module docstring)."""

    dialect: str

    def transaction(self) -> Any:
        """`async with db.transaction() as tx:` — commit on exit, roll back on error."""
        ...

    async def execute(self, sql: str, *args: Any) -> int:
        """One statement in its own transaction."""
        ...

    async def batch(self, statements: Sequence[Statement]) -> None:
        """Statements whose results nobody reads, in one transaction (on SQLite, in one trip
        to the worker thread)."""
        ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        """One query in its own transaction."""
        ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        """One query's first row."""
        ...

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """One query's first value."""
        ...

    async def close(self) -> None:
        """Release connections (on shutdown)."""
        ...


def now_micros() -> int:
    """The wall-clock time as stored: integer microseconds since the epoch."""
    return time.time_ns() // 1000


def _script(migration: Migration, dialect: str) -> str:
    return migration if isinstance(migration, str) else migration[dialect]


def _statements(script: str) -> list[str]:
    return [s for s in (part.strip() for part in script.split(";")) if s]


# ------------------------------------------------------------------------------ SQLite


# What a statement's cursor gives each kind of call (read on the worker thread).
def _rowcount(cursor: sqlite3.Cursor) -> int:
    return cursor.rowcount


def _all(cursor: sqlite3.Cursor) -> list[Row]:
    return [dict(r) for r in cursor.fetchall()]


def _first(cursor: sqlite3.Cursor) -> Row | None:
    row = cursor.fetchone()
    return None if row is None else dict(row)


def _value(cursor: sqlite3.Cursor) -> Any:
    row = cursor.fetchone()
    return None if row is None else row[0]


class _SqliteTx:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._c = connection

    async def _run(self, sql: str, args: tuple[Any, ...], read: Callable[[sqlite3.Cursor], T]) -> T:
        return await asyncio.to_thread(lambda: read(self._c.execute(_sqlite(sql), args)))

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._run(sql, args, _rowcount)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._run(sql, args, _all)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._run(sql, args, _first)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._run(sql, args, _value)


async def _to_thread_to_the_end(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn` on a worker thread; if the caller is cancelled meanwhile, still wait for it
    to finish (the thread cannot be stopped) before the cancellation goes on."""
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait([work])
        raise


def _sqlite(sql: str) -> str:
    return _PLACEHOLDER.sub(r"?\1", sql)


def enter_wal(connection: sqlite3.Connection) -> None:
    """Switch a connection's file to WAL, waiting out other processes doing the same.

    Two processes opening a new file together can each hold a shared lock while asking for
    the exclusive one the switch needs; SQLite answers one of them "database is locked" at
    once (deadlock avoidance: the busy timeout does not apply), so the switch is retried."""
    for attempt in range(1, WAL_SWITCH_ATTEMPTS + 1):
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or attempt == WAL_SWITCH_ATTEMPTS:
                raise
            time.sleep(WAL_SWITCH_BACKOFF.delay(attempt))


class SqliteDatabase:
    """The embedded backend."""

    dialect = "sqlite"

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, migrations: Sequence[Migration]) -> SqliteDatabase:
        """Open (creating 0600) and migrate the file at `path`."""

        def connect() -> sqlite3.Connection:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not path.exists():
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            connection.row_factory = sqlite3.Row
            # busy_timeout first: another process may hold the file while this one starts.
            connection.execute("PRAGMA busy_timeout=5000")
            enter_wal(connection)
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute("PRAGMA foreign_keys=ON")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
            for version, migration in enumerate(migrations, start=1):
                connection.execute("BEGIN IMMEDIATE")
                try:
                    # Read under the write lock: processes opening a new file migrate it once.
                    current = connection.execute("SELECT MAX(version) FROM schema_version")
                    if version > (current.fetchone()[0] or 0):
                        for statement in _statements(_script(migration, "sqlite")):
                            connection.execute(statement)
                        connection.execute(
                            "INSERT INTO schema_version (version) VALUES (?)", (version,)
                        )
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")
            return connection

        return cls(await asyncio.to_thread(connect))

    def _begin(self) -> None:
        # A transaction a cancelled caller left open (its statement kept running on the
        # worker thread after the task was cancelled) is rolled back before a new one starts.
        if self._connection.in_transaction:
            self._connection.execute("ROLLBACK")
        self._connection.execute("BEGIN IMMEDIATE")

    def _end(self, statement: str) -> None:
        if self._connection.in_transaction:
            self._connection.execute(statement)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """One transaction (BEGIN IMMEDIATE: writers queue instead of failing). BEGIN,
        COMMIT and ROLLBACK finish even when the caller is cancelled meanwhile."""
        async with self._lock:
            await _to_thread_to_the_end(self._begin)
            try:
                yield _SqliteTx(self._connection)
            except BaseException:
                await _to_thread_to_the_end(self._end, "ROLLBACK")
                raise
            await _to_thread_to_the_end(self._end, "COMMIT")

    # A statement on its own, or a batch: BEGIN, the statements and COMMIT in one trip to a
    # worker thread rather than one each (each trip costs the loop a submit and a wake-up:
    # 11 % of the runtime's CPU in bench/chain.py was thread-pool plumbing). Once begun, it
    # runs to its end even if the caller is cancelled meanwhile, like BEGIN and COMMIT do.

    def _whole(self, work: Callable[[sqlite3.Connection], T]) -> T:
        self._begin()
        try:
            result = work(self._connection)
        except BaseException:
            self._end("ROLLBACK")
            raise
        self._end("COMMIT")
        return result

    async def _in_one_trip(self, work: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            return await _to_thread_to_the_end(self._whole, work)

    async def _statement(
        self, sql: str, args: tuple[Any, ...], read: Callable[[sqlite3.Cursor], T]
    ) -> T:
        return await self._in_one_trip(lambda c: read(c.execute(_sqlite(sql), args)))

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._statement(sql, args, _rowcount)

    async def batch(self, statements: Sequence[Statement]) -> None:
        def run_all(connection: sqlite3.Connection) -> None:
            for sql, args in statements:
                connection.execute(_sqlite(sql), tuple(args))

        if statements:
            await self._in_one_trip(run_all)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._statement(sql, args, _all)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._statement(sql, args, _first)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._statement(sql, args, _value)

    async def close(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._connection.close)


# -------------------------------------------------------------------------- PostgreSQL


class _PgTx:
    def __init__(self, connection: Any) -> None:
        self._c = connection

    async def execute(self, sql: str, *args: Any) -> int:
        status: str = await self._c.execute(sql, *args)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [dict(r) for r in await self._c.fetch(sql, *args)]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row = await self._c.fetchrow(sql, *args)
        return None if row is None else dict(row)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._c.fetchval(sql, *args)


class PostgresDatabase:
    """The scale-out backend: one schema per service in a shared database."""

    dialect = "postgresql"

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str, schema: str, migrations: Sequence[Migration]) -> PostgresDatabase:
        """Connect, create the schema if needed and migrate it (under an advisory lock)."""
        import asyncpg

        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise ValueError(f"invalid schema name {schema!r}")
        setup = await asyncpg.connect(url)
        try:
            # Serialise schema creation and migration across every process on this database.
            await setup.execute("SELECT pg_advisory_lock(hashtext($1))", schema)
            try:
                await setup.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                await setup.execute(
                    f"CREATE TABLE IF NOT EXISTS {schema}.schema_version (version INTEGER NOT NULL)"
                )
                # `schema` matched the identifier pattern above: safe to interpolate.
                current = await setup.fetchval(
                    f"SELECT MAX(version) FROM {schema}.schema_version"  # noqa: S608
                )
                await setup.execute(f"SET search_path TO {schema}")
                for version, migration in enumerate(migrations, start=1):
                    if version <= (current or 0):
                        continue
                    async with setup.transaction():
                        for statement in _statements(_script(migration, "postgresql")):
                            await setup.execute(statement)
                        await setup.execute(
                            "INSERT INTO schema_version (version) VALUES ($1)", version
                        )
            finally:
                await setup.execute("SELECT pg_advisory_unlock(hashtext($1))", schema)
        finally:
            await setup.close()
        pool = await asyncpg.create_pool(
            url, min_size=1, max_size=10, server_settings={"search_path": schema}
        )
        return cls(pool)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection; the database out of reach (refused, cut, restarting) is
        UNAVAILABLE `STORAGE_UNAVAILABLE` — worth retrying — not an internal error. The
        pool reconnects by itself once it is back."""
        import asyncpg

        try:
            async with self._pool.acquire() as connection:
                yield connection
        except (
            OSError,
            asyncpg.PostgresConnectionError,
            asyncpg.ConnectionDoesNotExistError,
            asyncpg.CannotConnectNowError,
        ) as error:
            raise Unavailable(
                "the database is out of reach", reason="STORAGE_UNAVAILABLE"
            ) from error

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """One transaction on a pooled connection."""
        async with self._connection() as connection, connection.transaction():
            yield _PgTx(connection)

    async def execute(self, sql: str, *args: Any) -> int:
        async with self.transaction() as tx:
            return await tx.execute(sql, *args)

    async def batch(self, statements: Sequence[Statement]) -> None:
        if not statements:
            return
        async with self.transaction() as tx:
            for sql, args in statements:
                await tx.execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._connection() as connection:
            return await _PgTx(connection).fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self._connection() as connection:
            return await _PgTx(connection).fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._connection() as connection:
            return await _PgTx(connection).fetchval(sql, *args)

    async def ping(self, within: float) -> bool:
        """Whether the database answers `SELECT 1` within `within` seconds (a probe)."""
        try:
            async with asyncio.timeout(within):
                return bool(await self.fetchval("SELECT 1") == 1)
        except (TimeoutError, Unavailable):
            return False

    async def close(self) -> None:
        await self._pool.close()


async def open_database(
    url: str, namespace: str, data_dir: Path, service: str, migrations: Sequence[Migration]
) -> Database:
    """The database of `service`: PostgreSQL when `url` is a postgresql:// URL, else the
    SQLite file `<data_dir>/<service>.db`."""
    if url.startswith(("postgresql://", "postgres://")):
        return await PostgresDatabase.open(url, f"{namespace}_{service}", migrations)
    return await SqliteDatabase.open(data_dir / f"{service}.db", migrations)
