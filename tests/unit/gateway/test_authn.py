"""The gateway's credential handling: bearer parsing, a bounded cache, one verification in
flight per credential."""

from __future__ import annotations

import asyncio

import pytest

from services.common.errors import InvalidArgument, PermissionDenied, Unauthenticated
from services.gateway.authn import CredentialCache, Principal, bearer_credential
from tests.clock import Clock

ALICE = Principal("usr_a", "default", frozenset({"execute"}), "key_a")


class CountingAuth:
    """Stands in for the network call to auth (the cache's only collaborator); with `held`,
    each call waits until `answer` is set, so a test decides when auth replies."""

    def __init__(self, held: bool = False, fail: Exception | None = None) -> None:
        self.calls = 0
        self.answer = asyncio.Event()
        if not held:
            self.answer.set()
        self.fail = fail

    async def __call__(self, credential: str) -> Principal:
        self.calls += 1
        await self.answer.wait()
        if self.fail is not None:
            raise self.fail
        return ALICE


async def ready() -> None:
    """Let every ready task run until it blocks."""
    for _ in range(5):
        await asyncio.sleep(0)


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
    auth = CountingAuth(held=True)
    cache = CredentialCache(auth, ttl=10, clock=Clock())
    crowd = [asyncio.ensure_future(cache.principal("k")) for _ in range(20)]
    await ready()
    auth.answer.set()
    results = await asyncio.gather(*crowd)
    assert results == [ALICE] * 20
    assert auth.calls == 1
    await cache.principal("k")
    assert auth.calls == 1  # cached
    await cache.principal("other")
    assert auth.calls == 2


async def test_entries_expire_after_the_ttl() -> None:
    auth = CountingAuth()
    clock = Clock()
    cache = CredentialCache(auth, ttl=0.05, clock=clock)
    await cache.principal("k")
    clock.now += 0.04
    await cache.principal("k")
    assert auth.calls == 1  # still fresh
    clock.now += 0.04
    await cache.principal("k")
    assert auth.calls == 2


class ExpiringAuth:
    """Auth answering with a principal whose credential expires at `expires_at`."""

    def __init__(self, expires_at: float) -> None:
        self.calls = 0
        self.principal = Principal("usr_a", "default", frozenset({"execute"}), "key_a", expires_at)

    async def __call__(self, credential: str) -> Principal:
        self.calls += 1
        return self.principal


async def test_an_entry_lives_no_longer_than_its_credential() -> None:
    # Expiry is wall time (as auth states it), moved onto the TTL's own (monotonic) clock.
    monotonic, wall = Clock(now=100.0), Clock()

    def elapse(seconds: float) -> None:
        monotonic.advance(seconds)
        wall.advance(seconds)

    auth = ExpiringAuth(wall.now + 3)
    cache = CredentialCache(auth, ttl=10, clock=monotonic, wall=wall)
    await cache.principal("k")
    elapse(2.9)
    await cache.principal("k")
    assert auth.calls == 1  # within the credential's life: cached
    elapse(0.2)  # past its expiry, well inside the 10 s TTL: auth is asked again
    await cache.principal("k")
    assert auth.calls == 2
    await cache.principal("k")  # an answer for an already expired credential is never kept
    assert auth.calls == 3

    counted = CountingAuth()  # a credential without expiry lives the whole TTL
    forever = CredentialCache(counted, ttl=10, clock=monotonic, wall=wall)
    await forever.principal("k")
    elapse(9.9)
    await forever.principal("k")
    assert counted.calls == 1


async def test_failures_are_not_cached_and_reach_every_waiter() -> None:
    auth = CountingAuth(held=True, fail=Unauthenticated("no", reason="CREDENTIAL_UNKNOWN"))
    cache = CredentialCache(auth, ttl=10, clock=Clock())
    crowd = [asyncio.ensure_future(cache.principal("k")) for _ in range(3)]
    await ready()
    auth.answer.set()
    outcomes = await asyncio.gather(*crowd, return_exceptions=True)
    assert all(isinstance(o, Unauthenticated) for o in outcomes)
    assert auth.calls == 1
    auth.fail = None
    assert await cache.principal("k") == ALICE
    assert auth.calls == 2


async def test_a_cancelled_leader_does_not_fail_its_waiters() -> None:
    auth = CountingAuth(held=True)
    cache = CredentialCache(auth, ttl=10, clock=Clock())
    leader = asyncio.ensure_future(cache.principal("k"))
    await ready()
    waiter = asyncio.ensure_future(cache.principal("k"))
    await ready()
    leader.cancel()
    await ready()
    auth.answer.set()
    assert await waiter == ALICE
    assert auth.calls == 1  # the leader's verification went on for its waiter


async def test_a_verification_nobody_waits_for_any_more_is_still_kept() -> None:
    auth = CountingAuth(held=True)
    cache = CredentialCache(auth, ttl=10, clock=Clock())
    gone = asyncio.ensure_future(cache.principal("k"))
    await ready()
    gone.cancel()
    auth.answer.set()
    await ready()
    assert await cache.principal("k") == ALICE
    assert auth.calls == 1
