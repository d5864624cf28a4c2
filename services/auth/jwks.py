"""auth's JWKS: the public keys any service or client may verify Saga tokens with — the
gateway's request-context key (SPEC section 2) and auth's own JWT signing keys."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.common.context import public_jwk


def jwks(keys: list[Ed25519PublicKey]) -> list[dict[str, str]]:
    """The JWK of each published key."""
    return [public_jwk(k) for k in keys]
