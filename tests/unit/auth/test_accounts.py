"""API keys over a real store (SQLite and PostgreSQL): authentication outcomes, last-use
throttling, limits, ownership."""

from __future__ import annotations

from collections.abc import Awaitable

import pytest

from services.auth import api_keys
from services.auth.accounts import (
    MAX_KEY_REQUESTS_PER_MINUTE,
    MAX_KEYS_PER_USER,
    TOUCH_INTERVAL_SECONDS,
    Accounts,
)
from services.auth.api_keys import KeyLimits, User
from services.auth.store import Store
from services.common.context import SCOPES
from services.common.database import Database
from services.common.errors import (
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    SagaError,
    Unauthenticated,
)
from tests.clock import Clock
from tests.tamper import changed_at


@pytest.fixture
async def store(db: Database) -> Store:
    s = Store(db)
    for user_id in ("usr_a", "usr_b"):
        await s.add_user(User(user_id=user_id, tenant="default", created_at=0.0))
    return s


async def reason_of(awaitable: Awaitable[object]) -> str:
    try:
        await awaitable
    except SagaError as error:
        return error.reason
    return "OK"


async def test_last_use_is_written_at_most_once_a_minute(store: Store) -> None:
    clock = Clock()
    accounts = Accounts(store, clock)
    secret, _ = await accounts.create("usr_a", "ci", ["execute"], None, held=SCOPES)
    assert (await accounts.keys("usr_a"))[0].last_used_at is None
    await accounts.authenticate(secret)
    first = clock.now
    clock.now += TOUCH_INTERVAL_SECONDS / 2
    await accounts.authenticate(secret)
    assert (await accounts.keys("usr_a"))[0].last_used_at == first
    clock.now += TOUCH_INTERVAL_SECONDS
    await accounts.authenticate(secret)
    assert (await accounts.keys("usr_a"))[0].last_used_at == clock.now


async def test_expiry_is_checked_against_the_clock(store: Store) -> None:
    clock = Clock()
    accounts = Accounts(store, clock)
    secret, _ = await accounts.create("usr_a", "", ["execute"], clock.now + 10, held=SCOPES)
    assert await reason_of(accounts.authenticate(secret)) == "OK"
    clock.now += 10
    assert await reason_of(accounts.authenticate(secret)) == "CREDENTIAL_EXPIRED"
    assert (
        await reason_of(accounts.create("usr_a", "", ["execute"], clock.now, held=SCOPES))
        == "EXPIRY_INVALID"
    )


async def test_credentials_are_refused_with_their_reason(store: Store) -> None:
    accounts = Accounts(store)
    secret, key = await accounts.create("usr_a", "x", ["execute"], None, held=SCOPES)
    assert await reason_of(accounts.authenticate(secret)) == "OK"
    assert await reason_of(accounts.authenticate(api_keys.generate_key())) == ("CREDENTIAL_UNKNOWN")
    assert await reason_of(accounts.authenticate(changed_at(secret, -1))) == "CREDENTIAL_MALFORMED"
    assert await reason_of(accounts.authenticate("a.b.c")) == "CREDENTIAL_UNKNOWN"
    with pytest.raises(InvalidArgument) as err:
        await accounts.authenticate("x" * 4097)
    assert err.value.reason == "CREDENTIAL_TOO_LONG"
    with pytest.raises(Unauthenticated) as unauth:
        await accounts.authenticate("x" * 4096)
    assert unauth.value.reason == "CREDENTIAL_MALFORMED"
    await accounts.revoke("usr_a", key.key_id)
    assert await reason_of(accounts.authenticate(secret)) == "CREDENTIAL_REVOKED"


async def test_a_user_cannot_revoke_or_see_another_users_key(store: Store) -> None:
    accounts = Accounts(store)
    _, key = await accounts.create("usr_a", "x", ["execute"], None, held=SCOPES)
    with pytest.raises(NotFound):
        await accounts.revoke("usr_b", key.key_id)
    assert await accounts.keys("usr_b") == []
    assert (await accounts.revoke("usr_a", key.key_id)).revoked_at is not None
    again = await accounts.revoke("usr_a", key.key_id)  # idempotent, first time kept
    assert again.revoked_at == (await accounts.keys("usr_a"))[0].revoked_at


async def test_live_keys_per_user_are_bounded(store: Store) -> None:
    accounts = Accounts(store)
    keys = [
        (await accounts.create("usr_a", f"k{i}", ["execute"], None, held=SCOPES))[1]
        for i in range(MAX_KEYS_PER_USER)
    ]
    with pytest.raises(ResourceExhausted) as err:
        await accounts.create("usr_a", "one too many", ["execute"], None, held=SCOPES)
    assert err.value.reason == "API_KEY_LIMIT_REACHED"
    assert await reason_of(accounts.create("usr_b", "", ["execute"], None, held=SCOPES)) == "OK"
    await accounts.revoke("usr_a", keys[0].key_id)  # a revoked key frees its slot
    assert await reason_of(accounts.create("usr_a", "", ["execute"], None, held=SCOPES)) == "OK"


async def test_names_are_bounded_and_users_must_exist(store: Store) -> None:
    accounts = Accounts(store)
    assert await reason_of(accounts.create("usr_a", "n" * 101, ["execute"], None, held=SCOPES)) == (
        "NAME_TOO_LONG"
    )
    assert await reason_of(accounts.create("usr_a", "n" * 100, ["execute"], None, held=SCOPES)) == (
        "OK"
    )
    assert await reason_of(accounts.create("usr_zz", "", ["execute"], None, held=SCOPES)) == (
        "USER_NOT_FOUND"
    )


async def test_a_keys_own_limits_are_stored_bounded_and_carried_in_its_principal(
    store: Store,
) -> None:
    accounts = Accounts(store, Clock())
    secret, key = await accounts.create("usr_a", "ci", ["execute"], None, held=SCOPES)
    assert (await accounts.authenticate(secret)).limits == KeyLimits()
    updated = await accounts.set_limits(key.key_id, KeyLimits(30, 2))
    assert updated.limits == KeyLimits(30, 2)
    assert (await accounts.keys("usr_a"))[0].limits == KeyLimits(30, 2)
    assert (await accounts.authenticate(secret)).limits == KeyLimits(30, 2)
    await accounts.set_limits(key.key_id, KeyLimits())  # zeros: back to the defaults
    assert (await accounts.authenticate(secret)).limits == KeyLimits()
    with pytest.raises(InvalidArgument) as bad:
        await accounts.set_limits(key.key_id, KeyLimits(MAX_KEY_REQUESTS_PER_MINUTE + 1, 0))
    assert bad.value.reason == "LIMIT_INVALID"
    assert [v.field for v in bad.value.field_violations] == ["requests_per_minute"]
    assert await reason_of(accounts.set_limits("key_unknown", KeyLimits(1, 1))) == (
        "API_KEY_NOT_FOUND"
    )
