"""What GetProviderCredential answers: a provider's secret, its kind and its life."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.errors import NotFound

API_KEY = "api_key"
OAUTH_ACCESS_TOKEN = "oauth_access_token"  # noqa: S105 (a kind, not a secret)


@dataclass(frozen=True)
class Credential:
    """What the router gets: the secret, what kind it is, until when it works (None for a
    static key), and the vault version it came from."""

    kind: str
    secret: str
    expires_at: float | None
    version: int


def not_linked(provider: str, user_id: str) -> NotFound:
    """The error for a user who linked no account for an oauth_user provider."""
    return NotFound(
        "no account is linked for this provider (LinkProviderAccount)",
        reason="PROVIDER_ACCOUNT_NOT_LINKED",
        metadata={"provider": provider, "userId": user_id[:64]},
    )
