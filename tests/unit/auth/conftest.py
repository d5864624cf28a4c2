"""Fixtures of auth's unit tests: its database on each backend, and a versioned secret store
standing in for the token-vault (another service)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.auth.schema import MIGRATIONS
from services.common.database import Database, open_database
from tests.clock import Clock
from tests.conftest import Backend
from tests.unit.auth.memory_secrets import MemorySecrets


async def open_auth_db(backend: Backend, tmp_path: Path) -> Database:
    """auth's database on `backend` (a new connection or pool each call)."""
    return await open_database(backend.url, backend.namespace, tmp_path, "auth", MIGRATIONS)


@pytest.fixture
async def db(backend: Backend, tmp_path: Path) -> AsyncIterator[Database]:
    """auth's migrated database, on SQLite and on PostgreSQL."""
    database = await open_auth_db(backend, tmp_path)
    yield database
    await database.close()


@pytest.fixture
def clock() -> Clock:
    """A clock the test moves."""
    return Clock()


@pytest.fixture
def vault() -> MemorySecrets:
    """An empty secret store."""
    return MemorySecrets()
