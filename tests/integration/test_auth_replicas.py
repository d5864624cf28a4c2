"""Two auth processes on one PostgreSQL refresh a user's OAuth token one at a time: 50
concurrent GetProviderCredential calls on an expired token, spread over both, make exactly
one call to the token endpoint — and while one replica waits out a 429, the other does not
call either (the lease is released with a cool-down, never held across the sleep)."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import AsyncIterator

import pytest

from tests.conftest import PG_URL, drop_schemas
from tests.fakes import entra as fake
from tests.fakes.entra import FakeEntra
from tests.harness import Stack, stack_for
from tests.integration.test_auth_provider_credentials import (
    ENV,
    config,
    context,
    credential,
    link,
    new_user,
)


@pytest.fixture(scope="module")
async def entra() -> AsyncIterator[FakeEntra]:
    server = await FakeEntra().start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def replicas(
    entra: FakeEntra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Stack, Stack]]:
    """A vault and an auth process (the first Stack), and a second auth process with its
    own ports and data directory on the same PostgreSQL schema, vault, CA and context key."""
    namespace = f"t{secrets.token_hex(6)}"
    storage = {"SAGA_STORAGE__URL": PG_URL, "SAGA_STORAGE__NAMESPACE": namespace}
    first_dir = tmp_path_factory.mktemp("replica-1")
    try:
        async with stack_for(
            first_dir, ["vault", "auth"], config=config(entra), **ENV, **storage
        ) as first:
            second_dir = tmp_path_factory.mktemp("replica-2")
            for shared in ("pki", "keys"):
                shutil.copytree(first_dir / shared, second_dir / shared)
            async with stack_for(second_dir, [], config=config(entra), **ENV, **storage) as second:
                second.ports["vault"] = first.ports["vault"]
                await second.start_all(["auth"])
                assert not (second_dir / "admin.key").exists()  # one admin for the deployment
                yield first, second
    finally:
        await drop_schemas(namespace)


async def test_fifty_calls_over_two_replicas_make_one_refresh(
    replicas: tuple[Stack, Stack], entra: FakeEntra
) -> None:
    first, second = replicas
    user_id = await new_user(first)
    await link(first, user_id, entra.issue_refresh_token())
    entra.reset()
    entra.script(fake.success(delay=1.0))  # slow, so every call arrives while it is out
    metadata = context(first, user_id)
    replies = await asyncio.gather(
        *(credential((first, second)[i % 2], "copilot", user_id, metadata) for i in range(50))
    )
    assert entra.count == 1
    assert {r.secret for r in replies} == {entra.issued_access_tokens[-1]}
    assert {r.version for r in replies} == {2}  # the link was 1
    # One of them logged the refresh; the other answered from what it saved.
    assert "provider token refreshed" in first.read_log("auth") + second.read_log("auth")


async def test_no_replica_calls_while_another_backs_off(
    replicas: tuple[Stack, Stack], entra: FakeEntra
) -> None:
    first, second = replicas
    user_id = await new_user(first)
    await link(first, user_id, entra.issue_refresh_token())
    entra.reset()
    entra.script(fake.rate_limited("1", delay=0.3), fake.success(delay=0.3))
    metadata = context(first, user_id)
    replies = await asyncio.gather(
        *(credential((first, second)[i % 2], "copilot", user_id, metadata) for i in range(20))
    )
    assert entra.count == 2  # the 429 and the retry after it, from whichever replica
    assert entra.calls[1].at - entra.calls[0].at >= 0.95
    assert {r.secret for r in replies} == {entra.issued_access_tokens[-1]}
