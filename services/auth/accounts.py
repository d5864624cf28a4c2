"""Credentials as users see them: authenticate a presented API key or access token; create,
list and revoke a user's keys. The caller (the servicer) has already established who acts;
this module decides what that actor may do."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from services.auth import api_keys
from services.auth.api_keys import ApiKey, KeyLimits, Principal
from services.auth.scopes import grantable
from services.auth.store import Store
from services.common.errors import FieldViolation, InvalidArgument, NotFound, Unauthenticated

log = logging.getLogger("saga.auth.keys")

MAX_CREDENTIAL_LENGTH = 4096
MAX_NAME_LENGTH = 100
MAX_KEYS_PER_USER = 100
MAX_KEY_REQUESTS_PER_MINUTE = 1_000_000
MAX_KEY_CONCURRENT = 10_000
TOUCH_INTERVAL_SECONDS = 60.0
"""last_used_at is written at most this often per key, not on every Authenticate."""
LATEST_EXPIRY = 253402300799.0
"""9999-12-31T23:59:59Z, the last instant a protobuf Timestamp can hold."""


class TokenVerifier(Protocol):
    """Verifies access tokens (`services.auth.tokens.AccessTokens`)."""

    async def verify(self, token: str) -> Principal:
        """Who `token` speaks for, or Unauthenticated."""
        ...


class Accounts:
    """Authentication of credentials, and API-key management for their owners."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], float] = time.time,
        tokens: TokenVerifier | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._tokens = tokens

    async def authenticate(self, credential: str) -> Principal:
        """Who `credential` is; Unauthenticated with the reason why not."""
        if len(credential) > MAX_CREDENTIAL_LENGTH:
            raise InvalidArgument(
                "credential too long",
                reason="CREDENTIAL_TOO_LONG",
                field_violations=[
                    FieldViolation("credential", f"at most {MAX_CREDENTIAL_LENGTH} characters")
                ],
            )
        if credential.count(".") == 2:  # a JWT's shape: an access token from Login
            if self._tokens is None:
                raise Unauthenticated("unknown credential", reason="CREDENTIAL_UNKNOWN")
            return await self._tokens.verify(credential)
        if not api_keys.is_well_formed(credential):
            raise Unauthenticated(
                "malformed credential: not a Saga API key (check for a typo)",
                reason="CREDENTIAL_MALFORMED",
            )
        found = await self._store.find_key(api_keys.hash_key(credential))
        if found is None:
            raise Unauthenticated("unknown credential", reason="CREDENTIAL_UNKNOWN")
        key, tenant = found
        now = self._clock()
        if key.revoked_at is not None:
            raise Unauthenticated(
                "credential revoked", reason="CREDENTIAL_REVOKED", metadata={"keyId": key.key_id}
            )
        if key.expires_at is not None and key.expires_at <= now:
            raise Unauthenticated(
                "credential expired", reason="CREDENTIAL_EXPIRED", metadata={"keyId": key.key_id}
            )
        if key.last_used_at is None or now - key.last_used_at >= TOUCH_INTERVAL_SECONDS:
            await self._store.touch(key.key_id, now, TOUCH_INTERVAL_SECONDS)
        return Principal(
            user_id=key.user_id,
            tenant=tenant,
            scopes=key.scopes,
            credential_id=key.key_id,
            expires_at=key.expires_at,
            limits=key.limits,
        )

    async def create(
        self,
        user_id: str,
        name: str,
        scopes: Sequence[str],
        expires_at: float | None,
        *,
        held: Iterable[str],
    ) -> tuple[str, ApiKey]:
        """A new key for `user_id` carrying at most the scopes the actor `held`: the secret
        (returned only here) and its record."""
        if len(name) > MAX_NAME_LENGTH:
            raise InvalidArgument(
                "API key name too long",
                reason="NAME_TOO_LONG",
                field_violations=[FieldViolation("name", f"at most {MAX_NAME_LENGTH} characters")],
            )
        granted = grantable(scopes, held)
        now = self._clock()
        if expires_at is not None and not now < expires_at <= LATEST_EXPIRY:
            raise InvalidArgument(
                "expires_at must be in the future",
                reason="EXPIRY_INVALID",
                field_violations=[
                    FieldViolation("expires_at", "must lie in the future, before year 10000")
                ],
            )
        secret = api_keys.generate_key()
        key = ApiKey(
            key_id=api_keys.new_key_id(),
            user_id=user_id,
            name=name,
            prefix=api_keys.display_prefix(secret),
            scopes=granted,
            created_at=now,
            expires_at=expires_at,
        )
        await self._store.add_key(key, api_keys.hash_key(secret), limit=MAX_KEYS_PER_USER, now=now)
        log.info("api key created", extra={"key_id": key.key_id, "user_id": user_id})
        return secret, key

    async def keys(self, user_id: str) -> list[ApiKey]:
        """`user_id`'s keys, newest first."""
        return await self._store.keys(user_id)

    async def set_limits(self, key_id: str, limits: KeyLimits) -> ApiKey:
        """Set any key's own limits (the caller checked that an admin acts). NotFound when
        no key has that id."""
        violations = [
            FieldViolation(name, f"0 (the default) to {high:,}")
            for name, value, high in (
                ("requests_per_minute", limits.requests_per_minute, MAX_KEY_REQUESTS_PER_MINUTE),
                ("concurrent_executions", limits.concurrent_executions, MAX_KEY_CONCURRENT),
            )
            if not 0 <= value <= high
        ]
        if violations:
            raise InvalidArgument(
                "API key limits out of range", reason="LIMIT_INVALID", field_violations=violations
            )
        key = await self._store.set_limits(key_id, limits)
        if key is None:
            raise NotFound("no such API key", reason="API_KEY_NOT_FOUND")
        log.info(
            "api key limits set",
            extra={
                "key_id": key_id,
                "requests_per_minute": limits.requests_per_minute,
                "concurrent_executions": limits.concurrent_executions,
            },
        )
        return key

    async def revoke(self, user_id: str, key_id: str) -> ApiKey:
        """Revoke one of `user_id`'s keys (idempotent). NotFound when the user owns no such
        key, whether or not another user does."""
        now = self._clock()
        key = await self._store.revoke(user_id, key_id, now)
        if key is None:
            raise NotFound("no such API key", reason="API_KEY_NOT_FOUND")
        if key.revoked_at == now:  # this call revoked it, not an earlier one
            log.info("api key revoked", extra={"key_id": key_id, "user_id": user_id})
        return key
