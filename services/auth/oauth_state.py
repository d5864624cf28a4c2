"""An OAuth token set as auth keeps it in the vault, and how long its access token lives.

The payload is JSON: `refresh_token` (empty for client-credentials tokens), `access_token`,
`expires_at` (Unix seconds, from the endpoint's `expires_in`) and `scopes`. An access token
is trusted to live until the earlier of `expires_at` and its own JWT `exp`; the JWT is read
defensively — no payload, bad base64, bad JSON, no `exp`, a non-numeric or absurd `exp` all
mean "expired", so a token auth cannot date is refreshed rather than handed out.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, field
from typing import Any, TypeGuard

MAX_JWT_CHARS = 16 * 1024


@dataclass(frozen=True)
class OAuthState:
    """One account's (or app's) tokens for one provider."""

    refresh_token: str = ""
    access_token: str = ""
    expires_at: float = 0.0
    scopes: tuple[str, ...] = field(default_factory=tuple)

    def to_payload(self) -> bytes:
        """The vault payload."""
        return json.dumps(
            {
                "refresh_token": self.refresh_token,
                "access_token": self.access_token,
                "expires_at": self.expires_at,
                "scopes": list(self.scopes),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_payload(cls, payload: bytes) -> OAuthState:
        """Parse a vault payload; ValueError when it is not one auth wrote."""
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise ValueError("OAuth payload is not JSON") from None
        if not isinstance(data, dict):
            raise ValueError("OAuth payload is not an object")
        refresh, access = data.get("refresh_token", ""), data.get("access_token", "")
        expires_at, scopes = data.get("expires_at", 0), data.get("scopes", [])
        if not isinstance(refresh, str) or not isinstance(access, str):
            raise ValueError("OAuth payload tokens are not strings")
        if not _finite(expires_at):
            expires_at = 0.0  # an undatable token is an expired one
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            scopes = []
        return cls(refresh, access, float(expires_at), tuple(scopes))

    def expires(self) -> float:
        """When the access token stops being usable (0 when there is none or it is
        malformed)."""
        if not self.access_token:
            return 0.0
        claimed = jwt_expiry(self.access_token)
        if claimed is None:
            return 0.0
        return min(claimed, self.expires_at) if self.expires_at > 0 else claimed


def _finite(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def jwt_expiry(token: str) -> float | None:
    """The `exp` of a JWT-shaped token, read without verifying it (the provider verifies);
    None for anything malformed."""
    if len(token) > MAX_JWT_CHARS:
        return None
    parts = token.split(".")
    if len(parts) != 3 or not parts[1]:
        return None
    body = parts[1]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(claims, dict):
        return None
    exp = claims.get("exp")
    if not _finite(exp):
        return None
    seconds = float(exp)
    return seconds if 0 < seconds < 1e11 else None  # 1e11: year 5138, beyond any real token
