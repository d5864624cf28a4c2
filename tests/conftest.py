"""Shared fixtures: one started six-service stack for the tests that can share it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.harness import Stack


@pytest.fixture(scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """All six services, started once per test session on ephemeral ports."""
    # A short credential cache, so revocation tests need not wait the production 10 s.
    s = Stack.create(tmp_path_factory.mktemp("stack"), SAGA_GATEWAY__CREDENTIAL_CACHE_SECONDS="1")
    try:
        await s.start_all()
        yield s
    finally:
        s.stop_all()
