"""Provider credentials (SPEC 3.2): what the router needs to call a provider.

* `api_key` providers: the operator's static key, set with `set_key`, kept in the vault.
* `oauth_user` providers: each user links an account (`link_account` stores the refresh
  token); `credential` returns an access token with at least the buffer of life left,
  refreshed with the OAuth2 `refresh_token` grant when needed (`refresh.TokenRefresher`).
* `oauth_app` providers: an app-only access token from the `client_credentials` grant, the
  client secret being the provider's key in the vault.

Inputs are bounded here; who may act for which user is the servicer's business.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from services.auth.credential import API_KEY, Credential, not_linked
from services.auth.leases import RefreshLeases
from services.auth.oauth_state import OAuthState
from services.auth.refresh import RefreshPolicy, TokenRefresher
from services.auth.secret_store import PROVIDERS_OWNER, SecretStore, oauth_name, user_owner
from services.auth.token_endpoint import TokenEndpoint
from services.common.config import ProviderConfig
from services.common.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound

log = logging.getLogger("saga.auth.providers")

MAX_SECRET_CHARS = 8192
MAX_REFRESH_TOKEN_CHARS = 16384
MAX_SCOPES = 32
MAX_SCOPE_CHARS = 256
MAX_USER_ID_CHARS = 128


def _violation(field: str, description: str, *, reason: str) -> InvalidArgument:
    return InvalidArgument(
        f"{field}: {description}",
        reason=reason,
        field_violations=[FieldViolation(field, description)],
    )


def _check_secret(field: str, value: str, limit: int, *, reason: str) -> None:
    if not value:
        raise _violation(field, "must not be empty", reason=reason)
    if len(value) > limit:
        raise _violation(field, f"at most {limit} characters", reason=reason)
    if any(c.isspace() or not c.isprintable() for c in value):
        raise _violation(
            field, "no whitespace or control characters (a pasted newline?)", reason=reason
        )


def _check_user_id(user_id: str) -> None:
    if not user_id or len(user_id) > MAX_USER_ID_CHARS or not user_id.isprintable():
        raise _violation(
            "user_id", f"a user id of 1 to {MAX_USER_ID_CHARS} characters", reason="USER_ID_INVALID"
        )


def _check_scopes(scopes: Sequence[str]) -> None:
    if len(scopes) > MAX_SCOPES:
        raise _violation("scopes", f"at most {MAX_SCOPES}", reason="OAUTH_SCOPES_INVALID")
    for i, scope in enumerate(scopes):
        if not scope or len(scope) > MAX_SCOPE_CHARS or any(c.isspace() for c in scope):
            raise _violation(
                f"scopes[{i}]",
                f"1 to {MAX_SCOPE_CHARS} characters without spaces",
                reason="OAUTH_SCOPES_INVALID",
            )


class ProviderCredentials:
    """Static keys and linked accounts; OAuth access tokens through a `TokenRefresher`."""

    def __init__(
        self,
        providers: Sequence[ProviderConfig],
        secrets_: SecretStore,
        endpoint: TokenEndpoint,
        leases: RefreshLeases,
        policy: RefreshPolicy,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._providers = {p.name: p for p in providers}
        self._secrets = secrets_
        self._refresher = TokenRefresher(
            secrets_, endpoint, leases, policy, clock=clock, sleep=sleep, jitter=jitter
        )

    def provider(self, name: str) -> ProviderConfig:
        """The configured provider `name`; InvalidArgument UNKNOWN_PROVIDER otherwise."""
        found = self._providers.get(name)
        if found is None:
            raise InvalidArgument(
                "no such provider is configured",
                reason="UNKNOWN_PROVIDER",
                metadata={"provider": name[:64]},
                field_violations=[FieldViolation("provider", "not a configured provider")],
            )
        return found

    @staticmethod
    def _mismatch(provider: ProviderConfig, wanted: str) -> FailedPrecondition:
        return FailedPrecondition(
            f"provider {provider.name!r} is configured with credential "
            f"{provider.credential!r}; this needs {wanted}",
            reason="PROVIDER_CREDENTIAL_MISMATCH",
            metadata={"provider": provider.name, "credential": provider.credential},
        )

    async def set_key(self, provider: str, api_key: str) -> int:
        """Store the operator's key for `provider` (its API key, or its OAuth client
        secret); the vault version written."""
        config = self.provider(provider)
        if config.credential == "none":
            raise self._mismatch(config, "api_key, oauth_app or oauth_user")
        _check_secret("api_key", api_key, MAX_SECRET_CHARS, reason="PROVIDER_KEY_INVALID")
        version = await self._secrets.put(
            PROVIDERS_OWNER,
            provider,
            api_key.encode(),
            {"kind": "api_key" if config.credential == "api_key" else "client_secret"},
            expected_version=None,
        )
        log.info("provider key set", extra={"provider": provider, "version": version})
        return version

    async def link_account(
        self, provider: str, user_id: str, refresh_token: str, scopes: Sequence[str]
    ) -> int:
        """Store `user_id`'s refresh token for `provider` (replacing any earlier link);
        the vault version written."""
        config = self.provider(provider)
        if config.credential != "oauth_user":
            raise self._mismatch(config, "oauth_user")
        _check_user_id(user_id)
        _check_secret(
            "refresh_token", refresh_token, MAX_REFRESH_TOKEN_CHARS, reason="REFRESH_TOKEN_INVALID"
        )
        _check_scopes(scopes)
        state = OAuthState(refresh_token=refresh_token, scopes=tuple(scopes))
        version = await self._secrets.put(
            user_owner(user_id),
            oauth_name(provider),
            state.to_payload(),
            {"kind": "oauth_user", "provider": provider},
            expected_version=None,
        )
        log.info(
            "provider account linked",
            extra={"provider": provider, "user_id": user_id, "version": version},
        )
        return version

    async def credential(self, provider: str, user_id: str) -> Credential:
        """The credential to call `provider` with (for `user_id` when it is an
        oauth_user provider; the caller has checked that it acts for that user)."""
        config = self.provider(provider)
        if config.credential == API_KEY:
            stored = await self._secrets.get(PROVIDERS_OWNER, provider)
            if stored is None:
                raise NotFound(
                    "no API key is set for this provider (SetProviderKey)",
                    reason="PROVIDER_KEY_NOT_SET",
                    metadata={"provider": provider},
                )
            return Credential(API_KEY, stored.payload.decode(), None, stored.version)
        if config.credential == "oauth_user":
            _check_user_id(user_id)
            owner = user_owner(user_id)
        elif config.credential == "oauth_app":
            owner = PROVIDERS_OWNER
        else:
            raise self._mismatch(config, "a credential (it is called without one)")
        name = oauth_name(provider)
        stored = await self._secrets.get(owner, name)
        fresh = self._refresher.fresh(stored)
        if fresh is not None:
            return fresh
        if stored is None and config.credential == "oauth_user":
            raise not_linked(provider, user_id)
        return await self._refresher.refresh(config, owner, name)

    async def close(self) -> None:
        """Cancel refreshes in flight (on shutdown)."""
        await self._refresher.close()
