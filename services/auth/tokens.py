"""JWT access tokens (SPEC 3.2): issued by Login, accepted by Authenticate.

A token is an EdDSA (Ed25519) JWT with `kid` in its header and the claims `iss` saga-auth,
`aud` saga, `sub` (user id), `ten` (tenant), `scope` (space-separated), `iat`, `exp` and
`jti` (its id, reported as the principal's credential id). Verification pins the algorithm
to EdDSA, looks the key up by `kid` among auth's own keys only, and checks audience,
issuer and expiry — so neither `alg: none`, nor an HS256 token keyed with a public key,
nor a gateway request context (audience saga-internal) is accepted as an access token.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jwt

from services.auth.accounts import LATEST_EXPIRY
from services.auth.api_keys import Principal
from services.auth.signing_keys import SigningKeys
from services.common.errors import Unauthenticated

ISSUER = "saga-auth"
AUDIENCE = "saga"
ALGORITHM = "EdDSA"
LEEWAY_SECONDS = 2.0


@dataclass(frozen=True)
class IssuedToken:
    """A signed access token and what the caller may show of it."""

    token: str
    token_id: str
    expires_at: float


def _unknown() -> Unauthenticated:
    return Unauthenticated("unknown credential", reason="CREDENTIAL_UNKNOWN")


class AccessTokens:
    """Issues and verifies access tokens with auth's signing keys."""

    def __init__(
        self, keys: SigningKeys, ttl_seconds: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._keys = keys
        self._ttl = ttl_seconds
        self._clock = clock

    async def issue(self, user_id: str, tenant: str, scopes: Iterable[str]) -> IssuedToken:
        """A token for `user_id` carrying `scopes`, valid for the configured TTL."""
        key = await self._keys.current()
        now = self._clock()
        expires_at = float(int(now + self._ttl))
        token_id = f"jwt_{secrets.token_hex(12)}"
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": user_id,
            "ten": tenant,
            "scope": " ".join(scopes),
            "iat": int(now),
            "exp": int(expires_at),
            "jti": token_id,
        }
        token = jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})
        await self._keys.issued(key, expires_at)
        return IssuedToken(token=token, token_id=token_id, expires_at=expires_at)

    async def verify(self, token: str) -> Principal:
        """Who `token` speaks for; Unauthenticated CREDENTIAL_EXPIRED when it has expired,
        CREDENTIAL_UNKNOWN when auth did not issue it (forged, altered, other audience)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _unknown() from None
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str):
            raise _unknown()
        key = await self._keys.public_key(kid)
        if key is None:
            raise _unknown()
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                # Time claims are checked below against this service's clock.
                options={
                    "require": ["exp", "iat", "sub", "jti", "aud", "iss"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError:
            raise _unknown() from None
        exp, iat = claims["exp"], claims["iat"]
        # Times outside what a protobuf Timestamp holds (exp=1e300, a negative iat) are as
        # malformed as a string: auth never issues them, and they could not be relayed.
        if not all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= LATEST_EXPIRY
            for v in (exp, iat)
        ):
            raise _unknown()
        now = self._clock()
        if iat > now + LEEWAY_SECONDS:
            raise _unknown()
        if exp <= now - LEEWAY_SECONDS:
            raise Unauthenticated(
                "access token expired; log in again",
                reason="CREDENTIAL_EXPIRED",
                metadata={"tokenId": str(claims["jti"])[:64]},
            )
        scope = claims.get("scope", "")
        return Principal(
            user_id=str(claims["sub"]),
            tenant=str(claims.get("ten", "")),
            scopes=tuple(scope.split()) if isinstance(scope, str) else (),
            credential_id=str(claims["jti"]),
            expires_at=float(exp),
            kind="jwt",
        )
