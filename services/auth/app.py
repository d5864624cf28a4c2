"""auth's gRPC service, registered with the shared bootstrap."""

from __future__ import annotations

import asyncio
import urllib.parse

from services.auth.accounts import Accounts
from services.auth.bootstrap import create_admin_key
from services.auth.leases import RefreshLeases
from services.auth.passwords import HashParameters, Passwords
from services.auth.provider_credentials import ProviderCredentials
from services.auth.refresh import RefreshPolicy
from services.auth.schema import MIGRATIONS
from services.auth.servicer import AuthParts, AuthServicer
from services.auth.signing_keys import SigningKeys
from services.auth.store import Store
from services.auth.throttle import LoginThrottle, ThrottlePolicy
from services.auth.token_endpoint import TokenEndpoint
from services.auth.tokens import AccessTokens
from services.auth.user_listing import UserListing
from services.auth.users import Users
from services.auth.vault_client import VaultSecrets
from services.common.config import Config, ConfigError, env_name
from services.common.context import (
    SCOPES,
    ContextVerifier,
    ensure_context_keys,
    load_public_key,
    static_keys,
)
from services.common.server import Registration, ServiceHost


def _check(config: Config) -> None:
    """What only auth cares about in the configuration (the bootstrap exits 78 with it)."""
    unknown = [s for s in config.auth.default_scopes if s not in SCOPES]
    if unknown:
        raise ConfigError(
            f"auth.default_scopes: unknown scope {unknown[0]!r}. Fix: use some of "
            f"{', '.join(SCOPES)} in saga.toml or {env_name('auth.default_scopes')}."
        )
    for i, provider in enumerate(config.providers):
        if not provider.credential.startswith("oauth_") or not provider.oauth_token_url:
            continue
        url = urllib.parse.urlsplit(provider.oauth_token_url)
        loopback = url.hostname in ("127.0.0.1", "localhost", "::1")
        if url.scheme != "https" and not (url.scheme == "http" and loopback):
            raise ConfigError(
                f"providers[{i}].oauth_token_url: {provider.name}'s token endpoint must use "
                "https:// (refresh tokens and client secrets are sent to it; http:// only on "
                "loopback). Fix: use the provider's https:// token URL."
            )


async def build(host: ServiceHost) -> list[Registration]:
    """The servicers this process serves."""
    config = host.config
    settings = config.auth
    _check(config)
    private_path, public_path = config.context_key_paths
    if not config.context.public_key_file:
        # Default key location: the key pair is made on first start (by auth or the gateway).
        await asyncio.to_thread(ensure_context_keys, private_path, public_path)
    context_key = await asyncio.to_thread(load_public_key, public_path)

    db = await host.open_database(MIGRATIONS)
    store = Store(db)
    await create_admin_key(store, config.data_path)
    vault = VaultSecrets(host.peers.channel("vault"))
    signing_keys = SigningKeys(
        db,
        vault,
        rotation_seconds=settings.signing_key_rotation_seconds,
        token_ttl_seconds=settings.access_token_ttl_seconds,
    )
    tokens = AccessTokens(signing_keys, settings.access_token_ttl_seconds)
    parameters = HashParameters(
        settings.argon2_memory_kib, settings.argon2_time_cost, settings.argon2_parallelism
    )
    throttle = LoginThrottle(
        db,
        ThrottlePolicy(
            max_failures=settings.login_max_failures,
            lockout=settings.login_lockout_seconds,
            max_lockout=settings.login_lockout_max_seconds,
            window=settings.login_failure_window_seconds,
        ),
    )
    users = Users(
        store,
        await asyncio.to_thread(Passwords, parameters),
        throttle,
        tokens,
        settings.default_scopes,
    )
    # One pooled session for every token endpoint, opened on the first refresh.
    endpoint = TokenEndpoint(None, settings.oauth_request_timeout_seconds)
    providers = ProviderCredentials(
        config.providers,
        vault,
        endpoint,
        RefreshLeases(db),
        RefreshPolicy(
            buffer_seconds=settings.oauth_refresh_buffer_seconds,
            max_attempts=settings.oauth_max_attempts,
            backoff_base_seconds=settings.oauth_backoff_base_seconds,
            max_wait_seconds=settings.oauth_max_wait_seconds,
            lease_seconds=settings.oauth_lease_seconds,
        ),
    )
    # In this order after the servers drained: refreshes in flight, then HTTP, then storage.
    host.on_stop(providers.close)
    host.on_stop(endpoint.close)
    host.on_stop(db.close)
    # auth holds the context public key itself: no JWKS round trip to verify a context.
    parts = AuthParts(
        context_keys=[context_key],
        contexts=ContextVerifier(static_keys(context_key)),
        store=store,
        accounts=Accounts(store, tokens=tokens),
        users=users,
        listing=UserListing(store),
        signing_keys=signing_keys,
        providers=providers,
        self_registration=settings.self_registration,
    )
    return [Registration.of(AuthServicer(parts))]
