"""Embedded storage: a SQLite file per service under the data directory, with versioned
migrations run at start.

SQLite calls are short and run on a worker thread, one at a time per database (a single
connection behind a lock), so the event loop never blocks on disk. The file is created 0600
and opened in WAL mode with synchronous=FULL: a write that returned is on disk. Each
migration runs in its own transaction and records its version, so a restart applies only
what is new.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class Database:
    """One SQLite database; use `open`, then `run` for work inside a transaction."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, migrations: Sequence[str]) -> Database:
        """Open (creating 0600 if new) and migrate the database at `path`."""

        def connect() -> sqlite3.Connection:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not path.exists():
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            connection.row_factory = sqlite3.Row
            # busy_timeout first: another process may hold the file while this one starts.
            connection.execute("PRAGMA busy_timeout=5000")
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute("PRAGMA foreign_keys=ON")
            _migrate(connection, migrations)
            return connection

        return cls(await asyncio.to_thread(connect))

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(connection)` in one transaction on the worker thread; commit on return,
        roll back if it raises."""

        def transaction() -> T:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                result = work(self._connection)
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")
            return result

        async with self._lock:
            return await asyncio.to_thread(transaction)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Rows of one read query."""
        return await self.run(lambda c: c.execute(sql, params).fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        """The first row of one read query, or None."""
        row: sqlite3.Row | None = await self.run(lambda c: c.execute(sql, params).fetchone())
        return row

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement; the number of rows it changed."""
        return await self.run(lambda c: c.execute(sql, params).rowcount)

    async def close(self) -> None:
        """Close the connection (on shutdown)."""
        async with self._lock:
            await asyncio.to_thread(self._connection.close)


def _migrate(connection: sqlite3.Connection, migrations: Sequence[str]) -> None:
    connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    for version, script in enumerate(migrations, start=1):
        connection.execute("BEGIN IMMEDIATE")
        # Read under the write lock: two processes opening a new file must not both migrate.
        current = connection.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        if version <= (current or 0):
            connection.execute("ROLLBACK")
            continue
        try:
            for statement in script.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
