"""Passwords: the policy a new one must meet, and argon2id hashing (OWASP's Password Storage
and Authentication cheat sheets; NIST SP 800-63B).

* Policy: 12 to 256 characters after Unicode NFKC (every character allowed, nothing
  truncated, no composition rules), not one character repeated, not the email address or
  its local part.
* Hashing: argon2id with the configured parameters (OWASP: m=19 MiB, t=2, p=1), a 16-byte
  random salt, on a worker thread (a hash takes tens of milliseconds of CPU and 19 MiB, so
  at most a few run at once). A stored hash made with other parameters verifies as before
  and is reported as needing a rehash.
* Constant-time failure path: `verify(None, password)` (an unknown account) still verifies
  against a dummy hash made with the current parameters, so a caller cannot tell an unknown
  email from a wrong password by the time the answer takes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import unicodedata
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from services.common.errors import FieldViolation, InvalidArgument

log = logging.getLogger("saga.auth.passwords")

MIN_LENGTH = 12
MAX_LENGTH = 256
SALT_BYTES = 16
HASH_BYTES = 32


@dataclass(frozen=True)
class HashParameters:
    """argon2id cost parameters."""

    memory_kib: int
    time_cost: int
    parallelism: int


OWASP = HashParameters(memory_kib=19_456, time_cost=2, parallelism=1)
"""OWASP's recommended argon2id configuration (19 MiB, 2 iterations, 1 lane)."""


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking a password: whether it matched, and whether its stored hash
    should be replaced by one with the current parameters."""

    ok: bool
    needs_rehash: bool = False


def normalise_password(raw: str) -> str:
    """The form that is checked and hashed: NFKC, so the same password typed on another
    keyboard or system (composed or decomposed accents, full-width forms) still matches."""
    return unicodedata.normalize("NFKC", raw)


def _weak(description: str, *, reason: str) -> InvalidArgument:
    return InvalidArgument(
        f"password rejected: {description}",
        reason=reason,
        field_violations=[FieldViolation("password", description)],
    )


def check_policy(password: str, email: str) -> None:
    """InvalidArgument (field `password`) unless `password` (normalised) may be set for the
    account `email` (normalised)."""
    if len(password) < MIN_LENGTH:
        raise _weak(f"at least {MIN_LENGTH} characters", reason="PASSWORD_TOO_SHORT")
    if len(password) > MAX_LENGTH:
        raise _weak(f"at most {MAX_LENGTH} characters", reason="PASSWORD_TOO_LONG")
    if len(set(password)) == 1:
        raise _weak("not one character repeated", reason="PASSWORD_TOO_SIMPLE")
    folded = password.casefold()
    if folded in (email.casefold(), email.rpartition("@")[0].casefold()):
        raise _weak("must not be the email address", reason="PASSWORD_IS_EMAIL")


class Passwords:
    """argon2id hashing and verification with one set of parameters."""

    def __init__(self, parameters: HashParameters, max_concurrent: int = 2) -> None:
        """Blocking (it computes the dummy hash): build it on a worker thread."""
        self.parameters = parameters
        self._hasher = PasswordHasher(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_kib,
            parallelism=parameters.parallelism,
            hash_len=HASH_BYTES,
            salt_len=SALT_BYTES,
            type=Type.ID,
        )
        self._dummy = self._hasher.hash(secrets.token_urlsafe(24))
        self._slots = asyncio.Semaphore(max_concurrent)

    async def hash(self, password: str) -> str:
        """The encoded hash (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) of `password`."""
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> Verdict:
        """Whether `password` matches the `stored` hash; with no stored hash (unknown
        account, or one without a password) a dummy verification runs and it does not."""
        async with self._slots:
            return await asyncio.to_thread(self._verify, stored, password)

    def _verify(self, stored: str | None, password: str) -> Verdict:
        target = self._dummy if stored is None else stored
        try:
            self._hasher.verify(target, password)
        except VerifyMismatchError:
            return Verdict(ok=False)
        except InvalidHashError:
            log.error("a stored password hash is not an argon2 hash")
            return Verdict(ok=False)
        except VerificationError:
            return Verdict(ok=False)
        if stored is None:  # the dummy's password is random and never handed out
            return Verdict(ok=False)
        return Verdict(ok=True, needs_rehash=self._hasher.check_needs_rehash(stored))
