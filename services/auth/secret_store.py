"""What auth needs from the token-vault, as domain types: versioned secrets with
compare-and-set writes. `services.auth.vault_client` implements it over gRPC.

Owners and names auth uses:

| owner | name | payload |
|---|---|---|
| `providers` | `<provider>` | the operator's API key (or OAuth client secret) |
| `providers` | `oauth:<provider>` | JSON: the app's access token (client credentials) |
| `user:<user_id>` | `oauth:<provider>` | JSON: refresh token, access token, expiry, scopes |
| `auth` | `jwt-signing:<kid>` | a JWT signing key (raw Ed25519 private bytes) |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

PROVIDERS_OWNER = "providers"
AUTH_OWNER = "auth"


def user_owner(user_id: str) -> str:
    """The vault owner of a user's secrets."""
    return f"user:{user_id}"


def oauth_name(provider: str) -> str:
    """The vault name of an OAuth token set for `provider`."""
    return f"oauth:{provider}"


@dataclass(frozen=True)
class Secret:
    """One version of a secret."""

    payload: bytes
    version: int
    metadata: Mapping[str, str] = field(default_factory=dict)


class SecretConflict(Exception):
    """A compare-and-set write lost: the secret's version was not the expected one."""


class SecretStore(Protocol):
    """Versioned secrets (the token-vault)."""

    async def get(self, owner: str, name: str) -> Secret | None:
        """The latest version, or None when there is none."""
        ...

    async def put(
        self,
        owner: str,
        name: str,
        payload: bytes,
        metadata: Mapping[str, str],
        expected_version: int | None,
    ) -> int:
        """Write a new version and return its number. `expected_version`: None writes
        unconditionally, 0 requires that the secret does not exist, n that its version is
        n; SecretConflict otherwise."""
        ...

    async def delete(self, owner: str, name: str) -> None:
        """Delete every version (nothing happens when there is none)."""
        ...
