"""The first start creates one admin with every scope and writes its key 0600, once — even
when two auth processes share the database — and never overwrites `admin.key`."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.auth import api_keys
from services.auth.accounts import Accounts
from services.auth.bootstrap import StaleAdminKey, create_admin_key
from services.auth.store import Store
from services.common.context import SCOPES


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "auth.db")
    yield s
    await s.close()


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


async def test_two_processes_starting_at_once_create_one_admin(tmp_path: Path) -> None:
    # Two connections to one file, as two auth processes have; SQLite's write lock decides.
    first = await Store.open(tmp_path / "auth.db")
    second = await Store.open(tmp_path / "auth.db")
    try:
        results = await asyncio.gather(
            *(create_admin_key(s, tmp_path) for s in [first, second, first, second])
        )
        created = [r for r in results if r is not None]
        assert len(created) == 1
        secret = (tmp_path / "admin.key").read_text().strip()
        principal = await Accounts(second).authenticate(secret)
        assert principal.credential_id == created[0].key_id
        assert len(await first.keys(principal.user_id)) == 1
    finally:
        await first.close()
        await second.close()


async def test_a_stale_admin_key_file_is_not_overwritten(store: Store, tmp_path: Path) -> None:
    (tmp_path / "admin.key").write_text("from another database\n")
    with pytest.raises(StaleAdminKey):
        await create_admin_key(store, tmp_path)
    assert (tmp_path / "admin.key").read_text() == "from another database\n"
    # Nothing was inserted: once the file is gone, the next start creates the admin.
    (tmp_path / "admin.key").unlink()
    assert await create_admin_key(store, tmp_path) is not None  # positive control
