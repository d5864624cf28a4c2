"""The gateway's credential handling: bearer parsing, a bounded cache, one verification in
flight per credential."""

from __future__ import annotations

import asyncio

import pytest

from services.common.errors import InvalidArgument, PermissionDenied, Unauthenticated
from services.gateway.authn import CredentialCache, Principal, bearer_credential

ALICE = Principal("usr_a", "default", frozenset({"execute"}), "key_a")


class CountingAuth:
    """Stands in for the network call to auth (the cache's only collaborator)."""

    def __init__(self, delay: float = 0.0, fail: Exception | None = None) -> None:
        self.calls = 0
        self.delay = delay
        self.fail = fail

    async def __call__(self, credential: str) -> Principal:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return ALICE


def test_bearer_parsing() -> None:
    assert bearer_credential("Bearer saga_ak_x") == "saga_ak_x"
    assert bearer_credential("bearer   saga_ak_x ") == "saga_ak_x"
    for bad in (None, "", "Basic abc", "Bearer", "Bearer  "):
        with pytest.raises(Unauthenticated):
            bearer_credential(bad)
    with pytest.raises(InvalidArgument):
        bearer_credential("Bearer " + "x" * 5000)


def test_scope_check() -> None:
    ALICE.require("execute")
    with pytest.raises(PermissionDenied) as err:
        ALICE.require("admin")
    assert err.value.metadata == {"scope": "admin"}


async def test_concurrent_first_requests_share_one_verification() -> None:
    auth = CountingAuth(delay=0.05)
    cache = CredentialCache(auth, ttl=10)
    results = await asyncio.gather(*(cache.principal("k") for _ in range(20)))
    assert results == [ALICE] * 20
    assert auth.calls == 1
    await cache.principal("k")
    assert auth.calls == 1  # cached
    await cache.principal("other")
    assert auth.calls == 2


async def test_entries_expire_after_the_ttl() -> None:
    auth = CountingAuth()
    cache = CredentialCache(auth, ttl=0.05)
    await cache.principal("k")
    await asyncio.sleep(0.08)
    await cache.principal("k")
    assert auth.calls == 2


async def test_failures_are_not_cached_and_reach_every_waiter() -> None:
    auth = CountingAuth(delay=0.02, fail=Unauthenticated("no", reason="CREDENTIAL_UNKNOWN"))
    cache = CredentialCache(auth, ttl=10)
    outcomes = await asyncio.gather(
        *(cache.principal("k") for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, Unauthenticated) for o in outcomes)
    assert auth.calls == 1
    auth.fail = None
    assert await cache.principal("k") == ALICE
    assert auth.calls == 2


async def test_a_cancelled_leader_does_not_fail_its_waiters() -> None:
    auth = CountingAuth(delay=0.1)
    cache = CredentialCache(auth, ttl=10)
    leader = asyncio.ensure_future(cache.principal("k"))
    await asyncio.sleep(0.01)
    waiter = asyncio.ensure_future(cache.principal("k"))
    await asyncio.sleep(0.01)
    leader.cancel()
    assert await waiter == ALICE
