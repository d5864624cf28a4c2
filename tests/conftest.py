"""Shared fixtures: one started six-service stack for the tests that can share it."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from tests.harness import Stack, stack_for

PG_URL = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
"""The PostgreSQL the suite uses (running on every dev machine and in CI: a test that needs
it fails, loudly, when it is not there)."""


@dataclass(frozen=True)
class Backend:
    """Where a test's services keep their state: SQLite files, or PostgreSQL schemas."""

    name: str
    url: str
    namespace: str

    def env(self) -> dict[str, str]:
        """The `SAGA_STORAGE__…` overrides that select this backend for a Stack."""
        return {"SAGA_STORAGE__URL": self.url, "SAGA_STORAGE__NAMESPACE": self.namespace}


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """Each storage backend in turn; PostgreSQL schemas get a unique namespace, dropped after."""
    namespace = f"t{secrets.token_hex(6)}"
    if request.param == "sqlite":
        yield Backend("sqlite", "", namespace)
        return
    yield Backend("postgresql", PG_URL, namespace)
    await drop_schemas(namespace)


async def drop_schemas(namespace: str) -> None:
    """Drop every PostgreSQL schema of a test's `namespace` (`<namespace>_<service>`)."""
    connection = await asyncpg.connect(PG_URL)
    try:
        for row in await connection.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1", f"{namespace}\\_%"
        ):
            await connection.execute(f'DROP SCHEMA "{row["nspname"]}" CASCADE')
    finally:
        await connection.close()


@pytest.fixture(scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """All six services, started once per test session on ephemeral ports."""
    # A short credential cache, so revocation tests need not wait the production 10 s.
    async with stack_for(
        tmp_path_factory.mktemp("stack"), SAGA_GATEWAY__CREDENTIAL_CACHE_SECONDS="1"
    ) as s:
        yield s
