"""Register and Login over the real store, throttle, hashing and token issuer: normalised
emails, the password policy, one answer for every login mismatch, throttling, rehash on
login when the parameters changed, and a JWT that Authenticate accepts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.auth.accounts import Accounts
from services.auth.api_keys import User
from services.auth.passwords import HashParameters, Passwords
from services.auth.schema import MIGRATIONS
from services.auth.signing_keys import SigningKeys
from services.auth.store import Store
from services.auth.throttle import LoginThrottle, ThrottlePolicy
from services.auth.tokens import AccessTokens
from services.auth.users import Users
from services.common.database import Database, open_database
from services.common.errors import (
    AlreadyExists,
    InvalidArgument,
    ResourceExhausted,
    SagaError,
    Unauthenticated,
)
from tests.clock import Clock
from tests.conftest import Backend
from tests.unit.auth.memory_secrets import MemorySecrets

CHEAP = HashParameters(memory_kib=64, time_cost=1, parallelism=1)
SCOPES = ("execute", "sessions", "usage:read")
PASSWORD = "correct horse battery staple"  # noqa: S105 (a test password)


def users_with(
    db: Database, vault: MemorySecrets, clock: Clock, parameters: HashParameters = CHEAP
) -> Users:
    keys = SigningKeys(db, vault, rotation_seconds=86_400, token_ttl_seconds=900, clock=clock)
    return Users(
        Store(db),
        Passwords(parameters),
        LoginThrottle(db, ThrottlePolicy(max_failures=5, lockout=30), clock),
        AccessTokens(keys, 900, clock),
        SCOPES,
        clock,
    )


@pytest.fixture
def users(db: Database, vault: MemorySecrets, clock: Clock) -> Users:
    return users_with(db, vault, clock)


async def outcome(call: object) -> str:
    try:
        await call  # type: ignore[misc]
    except SagaError as error:
        return error.reason
    return "OK"


async def test_register_then_login_gives_a_token_authenticate_accepts(
    users: Users, db: Database, vault: MemorySecrets, clock: Clock
) -> None:
    user = await users.register("  Ada@Example.COM ", PASSWORD)
    assert user.email == "ada@example.com"
    assert user.user_id.startswith("usr_")
    issued = await users.login("Ada@EXAMPLE.com", PASSWORD)
    keys = SigningKeys(db, vault, rotation_seconds=86_400, token_ttl_seconds=900, clock=clock)
    accounts = Accounts(Store(db), clock, tokens=AccessTokens(keys, 900, clock))
    principal = await accounts.authenticate(issued.token)
    assert (principal.user_id, principal.kind, principal.scopes) == (user.user_id, "jwt", SCOPES)
    assert principal.credential_id == issued.token_id
    assert issued.expires_at == int(clock.now + 900)


async def test_the_password_is_stored_as_an_argon2id_hash_only(users: Users, db: Database) -> None:
    await users.register("ada@example.com", PASSWORD)
    stored = await db.fetchval(
        "SELECT password_hash FROM users WHERE email = $1", "ada@example.com"
    )
    assert stored.startswith("$argon2id$v=19$m=64,t=1,p=1$")
    assert PASSWORD not in stored


async def test_a_taken_email_is_already_exists_after_normalising(users: Users) -> None:
    await users.register("ada@example.com", PASSWORD)
    with pytest.raises(AlreadyExists) as err:
        await users.register(" ada@EXAMPLE.com", "another good password")
    assert err.value.reason == "EMAIL_TAKEN"
    assert await outcome(users.register("bob@example.com", PASSWORD)) == "OK"  # control
    # The first password still works: nothing was overwritten.
    assert await outcome(users.login("ada@example.com", PASSWORD)) == "OK"


async def test_emails_differing_only_in_case_are_one_account(users: Users) -> None:
    await users.register("Alice@example.com", PASSWORD)
    assert await outcome(users.register("alice@example.com", "another good password")) == (
        "EMAIL_TAKEN"
    )
    assert await outcome(users.register("ALICE@Example.com", PASSWORD)) == "EMAIL_TAKEN"
    assert await outcome(users.register("alicia@example.com", PASSWORD)) == "OK"  # control
    assert await outcome(users.login("aLiCe@example.com", PASSWORD)) == "OK"


async def test_concurrent_registrations_of_one_email_create_one_user(
    users: Users, db: Database
) -> None:
    results = await asyncio.gather(
        *(users.register("race@example.com", PASSWORD) for _ in range(5)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if isinstance(r, BaseException))
    assert await db.fetchval("SELECT COUNT(*) FROM users WHERE email = $1", "race@example.com") == 1


async def test_bad_emails_and_weak_passwords_are_invalid(users: Users) -> None:
    with pytest.raises(InvalidArgument) as err:
        await users.register("not-an-email", PASSWORD)
    assert err.value.reason == "EMAIL_INVALID"
    assert await outcome(users.register("ada@example.com", "short")) == "PASSWORD_TOO_SHORT"
    assert await outcome(users.register("ada@example.com", "ada@example.com")) == (
        "PASSWORD_IS_EMAIL"
    )
    assert await outcome(users.register("ada@example.com", "x" * 5000)) == "PASSWORD_TOO_LONG"
    assert await outcome(users.register("a" * 5000, PASSWORD)) == "EMAIL_INVALID"
    assert await outcome(users.register("ada@example.com", PASSWORD)) == "OK"


async def test_every_login_mismatch_gives_the_same_answer(users: Users, db: Database) -> None:
    # A user without a password (like the first-start admin).
    await Store(db).add_user(User("usr_nopass", "default", 0.0, "nopass@example.com"), SCOPES, None)
    await users.register("ada@example.com", PASSWORD)
    answers = []
    for email, password in [
        ("ada@example.com", PASSWORD + "!"),  # wrong password
        ("nobody@example.com", PASSWORD),  # unknown email
        ("not an email", PASSWORD),  # unusable email
        ("nopass@example.com", ""),  # an account without a password
    ]:
        with pytest.raises(Unauthenticated) as err:
            await users.login(email, password)
        answers.append((err.value.reason, err.value.message, err.value.metadata))
    assert len(set(map(repr, answers))) == 1
    assert answers[0][0] == "LOGIN_FAILED"
    assert await outcome(users.login("ada@example.com", PASSWORD)) == "OK"  # positive control


async def test_failed_logins_throttle_the_account_not_the_user_base(
    users: Users, clock: Clock
) -> None:
    await users.register("ada@example.com", PASSWORD)
    await users.register("bob@example.com", PASSWORD)
    for _ in range(5):
        assert await outcome(users.login("ada@example.com", "wrong password!")) == "LOGIN_FAILED"
    with pytest.raises(ResourceExhausted) as err:
        await users.login("ada@example.com", PASSWORD)  # even the right password waits
    assert err.value.reason == "LOGIN_THROTTLED"
    assert err.value.retry_after == 30
    assert await outcome(users.login("bob@example.com", PASSWORD)) == "OK"  # another account
    clock.now += 30
    assert await outcome(users.login("ada@example.com", PASSWORD)) == "OK"
    # The success forgave: five more failures are needed to lock again.
    for _ in range(4):
        assert await outcome(users.login("ada@example.com", "wrong password!")) == "LOGIN_FAILED"
    assert await outcome(users.login("ada@example.com", PASSWORD)) == "OK"


async def test_unknown_emails_are_throttled_too(users: Users) -> None:
    # Otherwise a lock would reveal which emails are registered.
    for _ in range(5):
        assert await outcome(users.login("ghost@example.com", PASSWORD)) == "LOGIN_FAILED"
    assert await outcome(users.login("ghost@example.com", PASSWORD)) == "LOGIN_THROTTLED"


async def test_login_rehashes_when_the_parameters_changed(
    db: Database, vault: MemorySecrets, clock: Clock
) -> None:
    old = users_with(db, vault, clock, HashParameters(memory_kib=32, time_cost=1, parallelism=1))
    await old.register("ada@example.com", PASSWORD)
    query = "SELECT password_hash FROM users WHERE email = $1"
    before = await db.fetchval(query, "ada@example.com")
    assert before.startswith("$argon2id$v=19$m=32,t=1,p=1$")

    current = users_with(db, vault, clock)  # a deployment with new parameters
    assert await outcome(current.login("ada@example.com", "wrong password!")) == "LOGIN_FAILED"
    assert await db.fetchval(query, "ada@example.com") == before  # no rehash on failure
    await current.login("ada@example.com", PASSWORD)
    after = await db.fetchval(query, "ada@example.com")
    assert after.startswith("$argon2id$v=19$m=64,t=1,p=1$")
    await current.login("ada@example.com", PASSWORD)
    assert await db.fetchval(query, "ada@example.com") == after  # once only


async def test_inputs_are_bounded(users: Users) -> None:
    assert await outcome(users.login("a" * 5000, PASSWORD)) == "EMAIL_INVALID"
    assert await outcome(users.login("ada@example.com", "p" * 5000)) == "PASSWORD_TOO_LONG"


async def test_stored_emails_are_lowered_by_migration_unless_that_would_merge_accounts(
    backend: Backend, tmp_path: Path
) -> None:
    before = await open_database(backend.url, backend.namespace, tmp_path, "auth", MIGRATIONS[:2])
    for user_id, email in [
        ("usr_bob", "Bob@example.com"),
        ("usr_carol1", "Carol@example.com"),
        ("usr_carol2", "CAROL@example.com"),
        ("usr_dan", "dan@example.com"),
    ]:
        await before.execute(
            "INSERT INTO users (user_id, email, created_at) VALUES ($1, $2, 0)", user_id, email
        )
    await before.close()
    after = await open_database(backend.url, backend.namespace, tmp_path, "auth", MIGRATIONS)
    try:
        rows = await after.fetch("SELECT user_id, email FROM users ORDER BY user_id")
    finally:
        await after.close()
    assert {r["user_id"]: r["email"] for r in rows} == {
        "usr_bob": "bob@example.com",
        "usr_carol1": "Carol@example.com",  # two accounts once lowered: left for an operator
        "usr_carol2": "CAROL@example.com",
        "usr_dan": "dan@example.com",
    }
