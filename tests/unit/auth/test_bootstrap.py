"""The first start creates one admin with every scope and writes its key 0600, once — even
when two auth processes share the database — and never overwrites `admin.key`."""

from __future__ import annotations

import asyncio
import secrets
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from services.auth import api_keys
from services.auth.accounts import Accounts
from services.auth.api_keys import ApiKey, User
from services.auth.bootstrap import StaleAdminKey, create_admin_key
from services.auth.schema import MIGRATIONS
from services.auth.store import Store
from services.common.context import SCOPES
from services.common.database import Database, open_database
from tests.conftest import PG_URL, Backend
from tests.harness import ROOT
from tests.unit.auth.conftest import open_auth_db


@pytest.fixture
def store(db: Database) -> Store:
    return Store(db)


async def test_first_start_writes_a_private_admin_key_with_every_scope(
    store: Store, tmp_path: Path
) -> None:
    created = await create_admin_key(store, tmp_path)
    assert created is not None
    path = tmp_path / "admin.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    assert api_keys.is_well_formed(secret)
    principal = await Accounts(store).authenticate(secret)
    assert principal.scopes == SCOPES
    assert principal.credential_id == created.key_id
    assert principal.user_id.startswith("usr_admin")
    assert principal.tenant == "default"


async def test_a_second_start_changes_nothing(store: Store, tmp_path: Path) -> None:
    assert await create_admin_key(store, tmp_path) is not None
    before = (tmp_path / "admin.key").read_text()
    assert await create_admin_key(store, tmp_path) is None
    assert (tmp_path / "admin.key").read_text() == before


async def test_two_processes_starting_at_once_create_one_admin(
    backend: Backend, tmp_path: Path
) -> None:
    # Separate connections (PostgreSQL: separate pools) to one database, as separate auth
    # processes have; SQLite's write lock or PostgreSQL's unique bootstrap row decides.
    opened = [await open_auth_db(backend, tmp_path) for _ in range(3)]
    try:
        stores = [Store(db) for db in opened]
        results = await asyncio.gather(*(create_admin_key(s, tmp_path) for s in stores * 2))
        created = [r for r in results if r is not None]
        assert len(created) == 1
        secret = (tmp_path / "admin.key").read_text().strip()
        principal = await Accounts(stores[1]).authenticate(secret)
        assert principal.credential_id == created[0].key_id
        assert len(await stores[0].keys(principal.user_id)) == 1
        assert await opened[2].fetchval("SELECT COUNT(*) FROM users") == 1
    finally:
        for db in opened:
            await db.close()


async def test_a_stale_admin_key_file_is_not_overwritten(store: Store, tmp_path: Path) -> None:
    (tmp_path / "admin.key").write_text("from another database\n")
    with pytest.raises(StaleAdminKey):
        await create_admin_key(store, tmp_path)
    assert (tmp_path / "admin.key").read_text() == "from another database\n"
    # Nothing was inserted: once the file is gone, the next start creates the admin.
    (tmp_path / "admin.key").unlink()
    assert await create_admin_key(store, tmp_path) is not None  # positive control


REPLICA = """
import asyncio, sys
from pathlib import Path
from services.auth.bootstrap import create_admin_key
from services.auth.schema import MIGRATIONS
from services.auth.schema import MIGRATIONS
from services.auth.store import Store
from services.common.database import open_database

async def main(url: str, namespace: str, data_dir: str) -> None:
    db = await open_database(url, namespace, Path(data_dir), "auth", MIGRATIONS)
    try:
        created = await create_admin_key(Store(db), Path(data_dir))
    finally:
        await db.close()
    print("created" if created else "exists")

asyncio.run(main(*sys.argv[1:]))
"""


async def test_replica_processes_on_one_postgresql_create_one_admin(tmp_path: Path) -> None:
    # Real processes, each with its own data directory (as replicas in Kubernetes have),
    # starting together on one PostgreSQL schema.
    namespace = f"t{secrets.token_hex(6)}"
    dirs = [tmp_path / f"replica{i}" for i in range(4)]
    try:
        processes = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                REPLICA,
                PG_URL,
                namespace,
                str(d),
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for d in dirs
        ]
        outputs = [await p.communicate() for p in processes]
        assert all(p.returncode == 0 for p in processes), [err.decode() for _, err in outputs]
        answers = sorted(out.decode().strip() for out, _ in outputs)
        assert answers == ["created", "exists", "exists", "exists"]
        assert sum((d / "admin.key").exists() for d in dirs) == 1
    finally:
        connection = await asyncpg.connect(PG_URL)
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{namespace}_auth" CASCADE')
        finally:
            await connection.close()


async def test_a_database_from_the_first_release_migrates_without_a_second_admin(
    backend: Backend, tmp_path: Path
) -> None:
    # Version 1 only, as the API-key release left it: an admin and its key, no marker.
    old = await open_database(backend.url, backend.namespace, tmp_path, "auth", MIGRATIONS[:1])
    try:
        created = await create_admin_key(_V1Store(old), tmp_path)
    finally:
        await old.close()
    assert created is not None
    secret = (tmp_path / "admin.key").read_text().strip()
    (tmp_path / "admin.key").unlink()  # were it created again, this would be rewritten

    current = await open_auth_db(backend, tmp_path)
    try:
        store = Store(current)
        assert await create_admin_key(store, tmp_path) is None
        assert not (tmp_path / "admin.key").exists()
        assert (await Accounts(store).authenticate(secret)).credential_id == created.key_id
    finally:
        await current.close()


class _V1Store(Store):
    """The first release's first start: users and keys only (no bootstrap marker)."""

    async def create_first_user(
        self, user: User, key: ApiKey, key_hash: str, on_created: Callable[[], None]
    ) -> bool:
        await self._db.execute(
            "INSERT INTO users (user_id, email, tenant, created_at) VALUES ($1, $2, $3, $4)",
            user.user_id,
            None,
            user.tenant,
            user.created_at,
        )
        # The first release's columns (today's Store writes later versions' too).
        await self._db.execute(
            "INSERT INTO api_keys (key_id, user_id, key_hash, prefix, name, scopes, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            key.key_id,
            key.user_id,
            key_hash,
            key.prefix,
            key.name,
            " ".join(key.scopes),
            key.created_at,
        )
        on_created()
        return True
