"""Refresh leases: one holder at a time across replicas, released by its holder only, a
cool-down nobody may take, and expiry for a holder that died."""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.auth.leases import RefreshLeases
from services.common.database import Database
from tests.clock import Clock
from tests.conftest import Backend
from tests.unit.auth.conftest import open_auth_db


async def test_one_holder_at_a_time(db: Database, clock: Clock) -> None:
    leases = RefreshLeases(db, clock)
    assert await leases.take("user:u/oauth:p", "a", 30)
    assert not await leases.take("user:u/oauth:p", "b", 30)
    assert await leases.take("user:v/oauth:p", "b", 30)  # another key is independent
    await leases.release("user:u/oauth:p", "b")  # not b's to release
    assert not await leases.take("user:u/oauth:p", "b", 30)
    await leases.release("user:u/oauth:p", "a")
    assert await leases.take("user:u/oauth:p", "b", 30)


async def test_a_dead_holders_lease_expires(db: Database, clock: Clock) -> None:
    leases = RefreshLeases(db, clock)
    assert await leases.take("k", "a", 30)
    clock.now += 29
    assert not await leases.take("k", "b", 30)
    clock.now += 1
    assert await leases.take("k", "b", 30)


async def test_a_cool_down_is_taken_by_nobody_until_it_ends(db: Database, clock: Clock) -> None:
    leases = RefreshLeases(db, clock)
    assert await leases.take("k", "a", 30)
    await leases.release("k", "a", cool_down=4)
    for holder in ("a", "b"):
        assert not await leases.take("k", holder, 30)
    clock.now += 4
    assert await leases.take("k", "a", 30)


async def test_replicas_racing_get_one_lease(
    backend: Backend, tmp_path: Path, clock: Clock
) -> None:
    dbs = [await open_auth_db(backend, tmp_path) for _ in range(3)]
    try:
        replicas = [RefreshLeases(d, clock) for d in dbs]
        taken = await asyncio.gather(
            *(r.take("k", f"holder{i}", 30) for i, r in enumerate(replicas * 4))
        )
        assert sum(taken) == 1
    finally:
        for d in dbs:
            await d.close()
