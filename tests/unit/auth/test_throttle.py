"""Failed logins are counted per account in the database: five in a row lock the account
for a delay that grows with each further failure; a success or time forgives; concurrent
guesses get no extra tries; every replica sees the same counters."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.auth.throttle import LoginThrottle, ThrottlePolicy, account_key
from services.common.database import Database
from services.common.errors import ResourceExhausted
from tests.clock import Clock
from tests.conftest import Backend
from tests.unit.auth.conftest import open_auth_db

POLICY = ThrottlePolicy(max_failures=5, lockout=30.0, max_lockout=900.0, window=3600.0)
ACCOUNT = account_key("ada@example.com")


async def fail(throttle: LoginThrottle, account: str = ACCOUNT) -> int:
    attempt = await throttle.admit(account)
    await throttle.failed(account, attempt)
    return attempt


async def locked_for(throttle: LoginThrottle, account: str = ACCOUNT) -> float | None:
    """The RetryInfo delay when the account is locked; None when an attempt is admitted
    (and then counted as a failure)."""
    try:
        await fail(throttle, account)
    except ResourceExhausted as error:
        return error.retry_after if error.reason == "LOGIN_THROTTLED" else -1.0
    return None


def test_the_lock_grows_from_the_fifth_failure_and_is_capped() -> None:
    assert [POLICY.lock_for(n) for n in range(1, 10)] == [0, 0, 0, 0, 30, 60, 120, 240, 480]
    assert POLICY.lock_for(10) == POLICY.lock_for(500) == 900


def test_accounts_are_hashed_not_stored() -> None:
    assert "ada" not in ACCOUNT
    assert account_key("ada@example.com") == ACCOUNT
    assert account_key("bob@example.com") != ACCOUNT


async def test_five_failures_lock_for_a_growing_delay(db: Database, clock: Clock) -> None:
    throttle = LoginThrottle(db, POLICY, clock)
    assert [await fail(throttle) for _ in range(5)] == [1, 2, 3, 4, 5]
    assert await locked_for(throttle) == 30
    clock.now += 29
    assert await locked_for(throttle) == 1
    clock.now += 1  # the lock ended: one more try, which fails and locks for longer
    assert await locked_for(throttle) is None
    assert await locked_for(throttle) == 60
    clock.now += 60
    assert await locked_for(throttle) is None
    assert await locked_for(throttle) == 120


async def test_locked_attempts_do_not_extend_the_lock(db: Database, clock: Clock) -> None:
    throttle = LoginThrottle(db, POLICY, clock)
    for _ in range(5):
        await fail(throttle)
    for _ in range(20):
        assert await locked_for(throttle) == 30
    clock.now += 30
    assert await locked_for(throttle) is None  # the 6th counted attempt, not the 26th
    assert await locked_for(throttle) == 60


async def test_a_success_forgives(db: Database, clock: Clock) -> None:
    throttle = LoginThrottle(db, POLICY, clock)
    for _ in range(4):
        await fail(throttle)
    assert await throttle.admit(ACCOUNT) == 5
    await throttle.succeeded(ACCOUNT)  # the 5th attempt was right
    assert await throttle.admit(ACCOUNT) == 1


async def test_failures_are_forgotten_after_the_window(db: Database, clock: Clock) -> None:
    throttle = LoginThrottle(db, POLICY, clock)
    for _ in range(4):
        await fail(throttle)
    clock.now += POLICY.window + 1
    assert await fail(throttle) == 1


async def test_accounts_are_throttled_separately(db: Database, clock: Clock) -> None:
    throttle = LoginThrottle(db, POLICY, clock)
    for _ in range(5):
        await fail(throttle)
    assert await locked_for(throttle) == 30
    other = account_key("bob@example.com")
    assert await locked_for(throttle, other) is None  # positive control


async def test_a_burst_of_concurrent_guesses_gets_five_tries(db: Database, clock: Clock) -> None:
    throttle = LoginThrottle(db, POLICY, clock)
    outcomes = await asyncio.gather(*(locked_for(throttle) for _ in range(30)))
    assert sum(o is None for o in outcomes) == 5
    assert all(o == 30 for o in outcomes if o is not None)


async def test_replicas_share_the_counters(backend: Backend, tmp_path: Path, clock: Clock) -> None:
    first, second = await open_auth_db(backend, tmp_path), await open_auth_db(backend, tmp_path)
    try:
        replicas = [LoginThrottle(first, POLICY, clock), LoginThrottle(second, POLICY, clock)]
        for i in range(5):
            await fail(replicas[i % 2])
        assert await locked_for(replicas[0]) == 30
        assert await locked_for(replicas[1]) == 30
    finally:
        await first.close()
        await second.close()


async def test_old_rows_are_pruned(db: Database, clock: Clock) -> None:
    throttle = LoginThrottle(db, POLICY, clock)
    for i in range(3):
        await fail(throttle, account_key(f"guess{i}@example.com"))
    clock.now += POLICY.window + 1
    await fail(throttle)  # a failure prunes what is past the window
    assert await db.fetchval("SELECT COUNT(*) FROM login_throttle") == 1


@pytest.mark.parametrize("max_failures", [1, 2])
async def test_small_limits_lock_at_once(db: Database, clock: Clock, max_failures: int) -> None:
    policy = ThrottlePolicy(max_failures=max_failures, lockout=10.0)
    throttle = LoginThrottle(db, policy, clock)
    for _ in range(max_failures):
        assert await locked_for(throttle) is None
    assert await locked_for(throttle) == 10
