"""The OAuth refresh state machine (SPEC 3.2; the seeds' Entra ID token manager): an access
token with at least the buffer of life left, refreshed at most once at a time.

A refresh, per (owner, provider):

1. One at a time within this replica: concurrent callers share one refresh task
   (`SingleFlight`: it runs on even if they give up, so a rotated refresh token is never
   lost half-way).
2. One at a time across replicas: the task takes a lease row (`RefreshLeases`), then reads
   the vault again — another replica may have refreshed meanwhile, and then its token is
   returned without a call.
3. One call to the token endpoint. On 429 the lease is released with a cool-down and the
   task sleeps out a jittered exponential backoff (at least Retry-After) before trying
   again — at most `max_attempts` calls and `max_wait_seconds` of waiting, then
   RESOURCE_EXHAUSTED PROVIDER_TOKEN_RATE_LIMITED. Every other failure ends the refresh at
   once (see `token_endpoint`).
4. The new access token and the rotated refresh token are written with compare-and-set
   against the version read in 2, and only then returned. If the write fails, or lost to
   a concurrent write whose token is not fresh either, the caller gets UNAVAILABLE
   PROVIDER_TOKEN_NOT_SAVED — never the unsaved token.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from services.auth.credential import OAUTH_ACCESS_TOKEN, Credential, not_linked
from services.auth.leases import RefreshLeases
from services.auth.oauth_state import OAuthState
from services.auth.secret_store import PROVIDERS_OWNER, Secret, SecretConflict, SecretStore
from services.auth.token_endpoint import RateLimited, TokenEndpoint, TokenGrant
from services.common.backoff import Backoff
from services.common.config import ProviderConfig
from services.common.errors import (
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from services.common.singleflight import SingleFlight

log = logging.getLogger("saga.auth.providers")

LEASE_POLL = Backoff(initial=0.02 * 1.5, maximum=0.25 * 1.5, jitter=2 / 3)
"""Pauses between two tries at a lease another replica holds: 20 ms doubling to 250 ms,
jittered ±50 % (the top two thirds of one and a half times that)."""


@dataclass(frozen=True)
class RefreshPolicy:
    """When and how hard to refresh."""

    buffer_seconds: float = 300.0
    max_attempts: int = 5
    backoff_base_seconds: float = 1.0
    max_wait_seconds: float = 31.0
    lease_seconds: float = 30.0

    @property
    def backoff(self) -> Backoff:
        """The wait after a 429: doubling from the base (2^20 times it at most), jittered to
        50-100 %, for at most `max_attempts` calls."""
        base = self.backoff_base_seconds
        return Backoff(initial=base, maximum=base * 2.0**20, max_attempts=self.max_attempts)


class TokenRefresher:
    """Fresh OAuth access tokens for (owner, provider) token sets kept in the vault."""

    def __init__(
        self,
        secrets_: SecretStore,
        endpoint: TokenEndpoint,
        leases: RefreshLeases,
        policy: RefreshPolicy,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._secrets = secrets_
        self._endpoint = endpoint
        self._leases = leases
        self._policy = policy
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._replica = f"{socket.gethostname()[:40]}:{os.getpid()}"
        self._inflight: SingleFlight[tuple[str, str], Credential] = SingleFlight("token-refresh")

    @staticmethod
    def _state(stored: Secret | None) -> OAuthState | None:
        if stored is None:
            return None
        try:
            return OAuthState.from_payload(stored.payload)
        except ValueError:
            log.error("stored OAuth token set unreadable", extra={"version": stored.version})
            return OAuthState()

    def fresh(self, stored: Secret | None) -> Credential | None:
        """The stored access token when it has at least the buffer of life left."""
        state = self._state(stored)
        if stored is None or state is None:
            return None
        expires = state.expires()
        if expires - self._clock() < self._policy.buffer_seconds:
            return None
        return Credential(OAUTH_ACCESS_TOKEN, state.access_token, expires, stored.version)

    async def refresh(self, config: ProviderConfig, owner: str, name: str) -> Credential:
        """A fresh token for (owner, name), shared with every concurrent caller."""
        return await self._inflight.run((owner, name), partial(self._run, config, owner, name))

    async def _run(self, config: ProviderConfig, owner: str, name: str) -> Credential:
        policy = self._policy
        backoff = policy.backoff
        lease = f"{owner}/{name}"
        holder = f"{self._replica}:{secrets.token_hex(4)}"
        give_up_at = self._clock() + policy.max_wait_seconds + 2 * policy.lease_seconds
        attempts, waited = 0, 0.0
        while True:
            await self._take(lease, holder, give_up_at, config.name)
            cool_down = 0.0
            try:
                stored = await self._secrets.get(owner, name)
                fresh = self.fresh(stored)
                if fresh is not None:  # another replica refreshed while we waited
                    return fresh
                state = self._refreshable(config, owner, stored)
                try:
                    grant = await self._endpoint.exchange(
                        config.name, config.oauth_token_url, await self._form(config, state)
                    )
                except RateLimited as limited:
                    attempts += 1
                    cool_down = backoff.delay(attempts, limited.retry_after, self._jitter)
                    spent = waited + cool_down > policy.max_wait_seconds
                    if backoff.exhausted(attempts) or spent:
                        raise self._rate_limited(config.name, owner, attempts, cool_down) from None
                else:
                    return await self._save(config, owner, name, stored, state, grant)
            finally:
                await self._release(lease, holder, cool_down)
            log.info(
                "provider token refresh rate limited; backing off",
                extra={"provider": config.name, "owner": owner, "wait": round(cool_down, 3)},
            )
            await self._sleep(cool_down)
            waited += cool_down

    def _refreshable(self, config: ProviderConfig, owner: str, stored: Secret | None) -> OAuthState:
        """The stored token set to refresh from (a user's must hold a refresh token)."""
        state = self._state(stored)
        if config.credential != "oauth_user":
            return state or OAuthState(scopes=config.oauth_scopes)
        if state is None:
            raise not_linked(config.name, owner.removeprefix("user:"))
        if not state.refresh_token:
            raise FailedPrecondition(
                "the stored account link is unreadable; link the account again",
                reason="REAUTH_REQUIRED",
                metadata={"provider": config.name},
            )
        return state

    @staticmethod
    def _rate_limited(provider: str, owner: str, attempts: int, wait: float) -> ResourceExhausted:
        log.warning(
            "provider token refresh rate limited; giving up",
            extra={"provider": provider, "owner": owner, "attempts": attempts},
        )
        return ResourceExhausted(
            "the provider's token endpoint keeps rate limiting; try later",
            reason="PROVIDER_TOKEN_RATE_LIMITED",
            retry_after=wait,
            metadata={"provider": provider, "attempts": str(attempts)},
        )

    async def _take(self, lease: str, holder: str, give_up_at: float, provider: str) -> None:
        for tries in itertools.count(1):
            if await self._leases.take(lease, holder, self._policy.lease_seconds):
                return
            if self._clock() >= give_up_at:
                raise Unavailable(
                    "another replica has been refreshing this token for too long",
                    reason="PROVIDER_TOKEN_UNAVAILABLE",
                    retry_after=1.0,
                    metadata={"provider": provider},
                )
            await self._sleep(LEASE_POLL.delay(tries, draw=self._jitter))

    async def _release(self, lease: str, holder: str, cool_down: float) -> None:
        try:
            await self._leases.release(lease, holder, cool_down)
        except Exception:  # the lease expires by itself; the refresh's outcome matters more
            log.warning("could not release a refresh lease", exc_info=True)

    async def _form(self, config: ProviderConfig, state: OAuthState) -> dict[str, str]:
        if not config.oauth_token_url or not config.oauth_client_id:
            raise FailedPrecondition(
                "the provider has no oauth_token_url or oauth_client_id configured",
                reason="PROVIDER_OAUTH_NOT_CONFIGURED",
                metadata={"provider": config.name},
            )
        if config.credential == "oauth_user":
            form = {
                "grant_type": "refresh_token",
                "client_id": config.oauth_client_id,
                "refresh_token": state.refresh_token,
            }
        else:
            form = {"grant_type": "client_credentials", "client_id": config.oauth_client_id}
        client_secret = await self._secrets.get(PROVIDERS_OWNER, config.name)
        if client_secret is not None:  # a confidential client
            form["client_secret"] = client_secret.payload.decode()
        elif config.credential == "oauth_app":
            raise NotFound(
                "no client secret is set for this provider (SetProviderKey)",
                reason="PROVIDER_KEY_NOT_SET",
                metadata={"provider": config.name},
            )
        scope = " ".join(state.scopes or config.oauth_scopes)
        if scope:
            form["scope"] = scope
        return form

    async def _save(
        self,
        config: ProviderConfig,
        owner: str,
        name: str,
        stored: Secret | None,
        state: OAuthState,
        grant: TokenGrant,
    ) -> Credential:
        renewed = OAuthState(
            refresh_token=grant.refresh_token or state.refresh_token,
            access_token=grant.access_token,
            expires_at=grant.expires_at or 0.0,
            scopes=state.scopes,
        )
        try:
            version = await self._secrets.put(
                owner,
                name,
                renewed.to_payload(),
                {"kind": config.credential, "provider": config.name},
                expected_version=stored.version if stored is not None else 0,
            )
        except SecretConflict:
            current = self.fresh(await self._secrets.get(owner, name))
            if current is not None:  # a concurrent writer saved a good token: use that one
                return current
            log.warning(
                "refreshed provider token not saved: it changed meanwhile",
                extra={"provider": config.name, "owner": owner},
            )
            raise self._not_saved(config.name) from None
        except Exception as error:
            log.warning(
                "refreshed provider token not saved",
                extra={"provider": config.name, "owner": owner, "error": type(error).__name__},
            )
            raise self._not_saved(config.name) from None
        expires = renewed.expires()
        log.info(
            "provider token refreshed",
            extra={
                "provider": config.name,
                "owner": owner,
                "version": version,
                "expires_in": round(expires - self._clock()),
                "rotated": grant.refresh_token is not None,
            },
        )
        if expires <= self._clock():
            raise Unavailable(
                "the provider issued an access token that cannot be dated (malformed exp)",
                reason="PROVIDER_TOKEN_UNAVAILABLE",
                retry_after=1.0,
                metadata={"provider": config.name},
            )
        return Credential(OAUTH_ACCESS_TOKEN, renewed.access_token, expires, version)

    @staticmethod
    def _not_saved(provider: str) -> Unavailable:
        return Unavailable(
            "the refreshed token could not be saved; retry",
            reason="PROVIDER_TOKEN_NOT_SAVED",
            retry_after=1.0,
            metadata={"provider": provider},
        )

    async def close(self) -> None:
        """Cancel refreshes in flight (on shutdown)."""
        await self._inflight.close()
