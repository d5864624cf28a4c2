"""Users who sign in with a password: Register and Login (SPEC 3.2, OWASP's Authentication
cheat sheet).

Register normalises the email, applies the password policy, hashes, and stores; the hash is
computed before the email is looked up, so a taken email costs the same time as a free one
(the answer itself, ALREADY_EXISTS, is what the contract promises; the gateway limits how
often an address may ask). Login answers every mismatch — unknown email, wrong password, an
account without a password — with the same UNAUTHENTICATED LOGIN_FAILED after the same
argon2 work, counts failures per account, and issues a JWT on success, upgrading the stored
hash first when the configured parameters changed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from services.auth import api_keys
from services.auth.api_keys import User
from services.auth.emails import MAX_EMAIL_LENGTH, normalise_email
from services.auth.passwords import MAX_LENGTH, Passwords, check_policy, normalise_password
from services.auth.store import Store
from services.auth.throttle import LoginThrottle, account_key
from services.auth.tokens import AccessTokens, IssuedToken
from services.common.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    SagaError,
    Unauthenticated,
)

log = logging.getLogger("saga.auth.users")

DEFAULT_TENANT = "default"


def _bounded(email: str, password: str) -> None:
    # Bounds before any work: these lengths can never be a valid account or password.
    if len(email) > 4 * MAX_EMAIL_LENGTH:
        raise InvalidArgument(
            "email too long",
            reason="EMAIL_INVALID",
            field_violations=[FieldViolation("email", f"at most {MAX_EMAIL_LENGTH} characters")],
        )
    if len(password) > 4 * MAX_LENGTH:
        raise InvalidArgument(
            "password too long",
            reason="PASSWORD_TOO_LONG",
            field_violations=[FieldViolation("password", f"at most {MAX_LENGTH} characters")],
        )


class Users:
    """Registration and password login."""

    def __init__(
        self,
        store: Store,
        passwords: Passwords,
        throttle: LoginThrottle,
        tokens: AccessTokens,
        default_scopes: tuple[str, ...],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._passwords = passwords
        self._throttle = throttle
        self._tokens = tokens
        self._default_scopes = default_scopes
        self._clock = clock

    async def register(self, email: str, password: str) -> User:
        """Create a user; InvalidArgument for a bad email or a weak password,
        AlreadyExists EMAIL_TAKEN when the email is registered."""
        _bounded(email, password)
        normalised = normalise_email(email)
        secret = normalise_password(password)
        check_policy(secret, normalised)
        password_hash = await self._passwords.hash(secret)
        user = User(
            user_id=api_keys.new_user_id(),
            tenant=DEFAULT_TENANT,
            created_at=self._clock(),
            email=normalised,
        )
        if not await self._store.add_user(user, self._default_scopes, password_hash):
            raise AlreadyExists("this email is already registered", reason="EMAIL_TAKEN")
        log.info("user registered", extra={"user_id": user.user_id})
        return user

    async def login(self, email: str, password: str) -> IssuedToken:
        """An access token for the account; Unauthenticated LOGIN_FAILED on any mismatch,
        ResourceExhausted LOGIN_THROTTLED while the account is locked."""
        _bounded(email, password)
        try:
            normalised = normalise_email(email)
        except SagaError:
            normalised = email.strip().lower()  # no such account; still throttled and timed
        secret = normalise_password(password)
        account = account_key(normalised)
        attempt = await self._throttle.admit(account)
        found = await self._store.account(normalised)
        stored = found.password_hash if found is not None else None
        verdict = await self._passwords.verify(stored, secret)
        if found is None or stored is None or not verdict.ok:
            await self._throttle.failed(account, attempt)
            log.info(
                "login failed",
                extra={"user_id": found.user.user_id if found else None, "attempt": attempt},
            )
            raise Unauthenticated("wrong email or password", reason="LOGIN_FAILED")
        await self._throttle.succeeded(account)
        user = found.user
        if verdict.needs_rehash:
            upgraded = await self._passwords.hash(secret)
            if await self._store.replace_password_hash(user.user_id, stored, upgraded):
                log.info("password rehashed", extra={"user_id": user.user_id})
        issued = await self._tokens.issue(user.user_id, user.tenant, found.scopes)
        log.info("login", extra={"user_id": user.user_id, "token_id": issued.token_id})
        return issued
