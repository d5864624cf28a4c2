"""The password policy (OWASP / NIST SP 800-63B) and argon2id hashing: OWASP parameters by
default, cheap ones in tests through the configuration, rehash when they change, and a
failure path that verifies even when there is nothing to verify against."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher, Type
from argon2.exceptions import VerifyMismatchError

from services.auth.passwords import (
    OWASP,
    HashParameters,
    Passwords,
    check_policy,
    normalise_password,
)
from services.common.config import AuthConfig, load_config
from services.common.errors import InvalidArgument

CHEAP = HashParameters(memory_kib=64, time_cost=1, parallelism=1)
EMAIL = "ada.lovelace@example.com"


def reason(password: str, email: str = EMAIL) -> str:
    try:
        check_policy(normalise_password(password), email)
    except InvalidArgument as error:
        fields = [v.field for v in error.field_violations]
        return error.reason if fields == ["password"] else f"fields {fields}"
    return "OK"


def test_the_policy_refuses_short_long_trivial_and_email_passwords() -> None:
    assert reason("correct horse") == "OK"  # positive control: 13 characters
    assert reason("x" * 11 + "y") == "OK"  # exactly 12, not all one character
    assert reason("a" * 5 + "b" * 6) == "PASSWORD_TOO_SHORT"  # 11
    assert reason("ab" * 128) == "OK"  # 256
    assert reason("ab" * 128 + "c") == "PASSWORD_TOO_LONG"  # 257
    assert reason("z" * 40) == "PASSWORD_TOO_SIMPLE"
    assert reason(EMAIL) == "PASSWORD_IS_EMAIL"
    assert reason(EMAIL.upper()) == "PASSWORD_IS_EMAIL"
    assert reason("ada.lovelace") == "PASSWORD_IS_EMAIL"  # the local part
    assert reason("ada.lovelace!") == "OK"


def test_every_character_counts_and_unicode_is_normalised() -> None:
    assert reason("🔑" * 11 + "!") == "OK"  # emoji are characters, not bytes
    assert reason("パスワードは長いほうがいい") == "OK"
    # Composed and decomposed accents are the same password after NFKC.
    assert normalise_password("cafe\u0301 au lait!") == normalise_password("café au lait!")


def test_production_parameters_are_owasps() -> None:
    assert (OWASP.memory_kib, OWASP.time_cost, OWASP.parallelism) == (19_456, 2, 1)
    defaults = AuthConfig()
    configured = HashParameters(
        defaults.argon2_memory_kib, defaults.argon2_time_cost, defaults.argon2_parallelism
    )
    assert configured == OWASP


async def test_a_hash_with_production_parameters_encodes_them_and_verifies() -> None:
    passwords = Passwords(OWASP)
    encoded = await passwords.hash("correct horse battery")
    assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert "correct horse" not in encoded
    verdict = await passwords.verify(encoded, "correct horse battery")
    assert (verdict.ok, verdict.needs_rehash) == (True, False)
    assert not (await passwords.verify(encoded, "correct horse batterz")).ok


def test_cheap_test_parameters_come_from_the_environment() -> None:
    config = load_config(
        env={
            "SAGA_AUTH__ARGON2_MEMORY_KIB": "64",
            "SAGA_AUTH__ARGON2_TIME_COST": "1",
        }
    )
    assert (config.auth.argon2_memory_kib, config.auth.argon2_time_cost) == (64, 1)


async def test_hashes_are_salted() -> None:
    passwords = Passwords(CHEAP)
    first, second = await passwords.hash("same password!"), await passwords.hash("same password!")
    assert first != second
    assert (await passwords.verify(first, "same password!")).ok
    assert (await passwords.verify(second, "same password!")).ok


async def test_a_hash_made_with_other_parameters_verifies_and_asks_for_a_rehash() -> None:
    old = await Passwords(HashParameters(128, 1, 1)).hash("an old password")
    current = Passwords(CHEAP)
    verdict = await current.verify(old, "an old password")
    assert (verdict.ok, verdict.needs_rehash) == (True, True)
    fresh = await current.hash("an old password")
    assert (await current.verify(fresh, "an old password")).needs_rehash is False


async def test_the_failure_path_verifies_against_a_dummy_hash() -> None:
    passwords = Passwords(CHEAP)
    assert not (await passwords.verify(None, "anything at all")).ok
    # The dummy is a real argon2id hash with the current parameters: the unknown-account
    # path does the same work as a wrong password.
    dummy = passwords._dummy
    assert dummy.startswith("$argon2id$v=19$m=64,t=1,p=1$")
    with pytest.raises(VerifyMismatchError):
        PasswordHasher(time_cost=1, memory_cost=64, parallelism=1, type=Type.ID).verify(
            dummy, "anything at all"
        )


async def test_a_corrupt_stored_hash_fails_closed() -> None:
    passwords = Passwords(CHEAP)
    assert not (await passwords.verify("not-a-hash", "whatever it is")).ok
    assert not (await passwords.verify("$argon2id$v=19$m=64,t=1,p=1$xx$yy", "whatever")).ok
