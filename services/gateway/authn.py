"""Who is calling the gateway: bearer credentials verified by auth, cached briefly.

A verified credential is reused for at most `gateway.credential_cache_seconds` (≤ 10 s), so a
revoked key stops working within that bound while the hot path makes no call to auth for a
caller it has just seen — and never past the credential's own expiry (an API key's
`expires_at`, a JWT's `exp`, as auth's answer states it): an expired credential stops at
once. Concurrent first requests with the same credential share one call to auth
(`SingleFlight`: a request that gives up does not cancel it for the others). The cache is
keyed by a hash of the credential, never the credential itself.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from services.common.errors import (
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from services.common.singleflight import SingleFlight

MAX_CREDENTIAL_LENGTH = 4096
MAX_CACHED = 10_000


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    user_id: str
    tenant: str
    scopes: frozenset[str]
    credential_id: str
    expires_at: float | None = None
    """When the credential stops being valid (Unix seconds); None when it never expires."""
    requests_per_minute: int = 0
    """The API key's own Execute rate, set by an admin; 0 = the deployment's default."""
    concurrent_executions: int = 0
    """The API key's own concurrency limit, set by an admin; 0 = the deployment's default."""

    def require(self, scope: str, *alternatives: str) -> None:
        """PermissionDenied unless the caller holds `scope` (or one of `alternatives`)."""
        if scope not in self.scopes and not self.scopes.intersection(alternatives):
            raise PermissionDenied(
                f"this call needs the scope {scope!r}",
                reason="SCOPE_MISSING",
                metadata={"scope": scope},
            )


Verify = Callable[[str], Awaitable[Principal]]
"""Asks auth who a credential belongs to (raises what auth raised)."""


def bearer_credential(authorization: str | None) -> str:
    """The credential of an `authorization: Bearer <credential>` value."""
    if not authorization:
        raise Unauthenticated(
            "send `authorization: Bearer <API key or token>`", reason="CREDENTIAL_MISSING"
        )
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise Unauthenticated(
            "the authorization header must be `Bearer <credential>`", reason="CREDENTIAL_MISSING"
        )
    if len(credential) > MAX_CREDENTIAL_LENGTH:
        raise InvalidArgument(
            "credential too long",
            reason="CREDENTIAL_TOO_LONG",
            field_violations=[
                FieldViolation("authorization", f"at most {MAX_CREDENTIAL_LENGTH} characters")
            ],
        )
    return credential


class CredentialCache:
    """Verified credentials for up to `ttl` seconds, never past their own expiry; one
    verification in flight per credential.

    `clock` measures the TTL (monotonic: a wall-clock step cannot stretch it); `wall` is the
    Unix time a credential's expiry is stated in."""

    def __init__(
        self,
        verify: Verify,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._verify = verify
        self._ttl = ttl
        self._clock = clock
        self._wall = wall
        self._entries: dict[bytes, tuple[float, Principal]] = {}
        self._verifying: SingleFlight[bytes, Principal] = SingleFlight("verify-credential")

    async def principal(self, credential: str) -> Principal:
        """The principal of `credential`, from the cache or from auth."""
        key = hashlib.sha256(credential.encode()).digest()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self._clock():
            return entry[1]
        return await self._verifying.run(key, partial(self._verified, key, credential))

    async def _verified(self, key: bytes, credential: str) -> Principal:
        """Ask auth, and keep the answer (here, so it is kept even if every waiter left)."""
        now = self._clock()  # the entry's life counts from before the question
        principal = await self._verify(credential)
        until = now + self._ttl
        if principal.expires_at is not None:
            # The credential's remaining life, moved onto the TTL's clock.
            until = min(until, self._clock() + principal.expires_at - self._wall())
        if until > now:
            if len(self._entries) >= MAX_CACHED:
                self._evict(now)
            self._entries[key] = (until, principal)
        return principal

    def _evict(self, now: float) -> None:
        self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
        if len(self._entries) >= MAX_CACHED:
            self._entries.clear()
