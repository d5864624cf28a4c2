"""The embedded SQLite store: private file, migrations applied once, atomic transactions."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.storage import Database
from tests.harness import ROOT

V1 = "CREATE TABLE items (name TEXT PRIMARY KEY, n INTEGER NOT NULL)"
V2 = "ALTER TABLE items ADD COLUMN note TEXT; CREATE INDEX items_n ON items (n)"


async def test_file_is_private_and_migrations_apply_once(tmp_path: Path) -> None:
    path = tmp_path / "db" / "x.db"
    db = await Database.open(path, [V1])
    await db.execute("INSERT INTO items (name, n) VALUES (?, ?)", ("a", 1))
    await db.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    db = await Database.open(path, [V1, V2])  # V1 must not run again (it would fail)
    await db.execute("UPDATE items SET note = ? WHERE name = ?", ("kept", "a"))
    row = await db.fetchone("SELECT name, n, note FROM items")
    assert row is not None
    assert tuple(row) == ("a", 1, "kept")
    versions = await db.fetchall("SELECT version FROM schema_version ORDER BY version")
    assert [r[0] for r in versions] == [1, 2]
    await db.close()


async def test_a_failed_transaction_leaves_nothing_behind(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "x.db", [V1])

    def two_inserts(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO items (name, n) VALUES ('a', 1)")
        c.execute("INSERT INTO items (name, n) VALUES ('a', 2)")  # primary key clash

    with pytest.raises(sqlite3.IntegrityError):
        await db.run(two_inserts)
    assert await db.fetchall("SELECT * FROM items") == []
    await db.close()


def test_processes_opening_a_new_file_together_migrate_it_once(tmp_path: Path) -> None:
    script = (
        "import asyncio, sys; from pathlib import Path; "
        "from services.common.storage import Database; "
        "asyncio.run(Database.open(Path(sys.argv[1]), "
        "['CREATE TABLE t (x INTEGER)', 'ALTER TABLE t ADD COLUMN y INTEGER']))"
    )
    path = tmp_path / "race.db"
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(path)], cwd=ROOT) for _ in range(4)
    ]
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0]
    with sqlite3.connect(path) as c:
        assert [r[0] for r in c.execute("SELECT version FROM schema_version")] == [1, 2]
