"""The signed request context (SPEC section 2): minted by the gateway, verified by the
services that act for a user.

For every request the gateway mints a short-lived JWT signed with its Ed25519 key (EdDSA,
`kid` in the header), audience `saga-internal`, bound to the execution (or request) id, the
principal and its scopes, expiring with the request's deadline. It travels in the
`saga-context` metadata. The public key is published in auth's JWKS; verifiers fetch it
there (`JwksKeys`) and check the signature, audience, issuer, expiry and — where the request
names one — that the token is bound to the same execution. A stolen service certificate alone
therefore cannot act for another user.

The tokens are standard compact JWS (any JWT library reads them), but minted and checked here
rather than by PyJWT: every call pays a verify in the runtime and again in the router, and
PyJWT's generic path (options, registries, warnings) costs ~3x the Ed25519 signature itself
(~350 µs of ~480 per verify, bench/README.md). Only one shape is accepted: three segments,
header `alg` EdDSA with a known `kid`, the signature checked over the exact signed bytes before
the payload is read, then the claims (required, types, audience, issuer, expiry, issued-at).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.common.errors import PermissionDenied, Unauthenticated
from services.common.pki import write_private

log = logging.getLogger("saga.context")

METADATA_KEY = "saga-context"
AUDIENCE = "saga-internal"
ISSUER = "saga-gateway"
ALGORITHM = "EdDSA"
LEEWAY_SECONDS = 2.0
MAX_TOKEN_CHARS = 4096
"""A context is a few hundred characters; anything longer is refused unread."""
_REQUIRED_CLAIMS = ("exp", "iat", "sub", "exe", "aud", "iss")

SCOPES = ("execute", "sessions", "usage:read", "usage:read:all", "pack:stale", "admin")
"""Every scope a credential may carry (SPEC section 2)."""


@dataclass(frozen=True)
class RequestContext:
    """A verified request context: who the request acts for, and for which execution."""

    execution_id: str
    user_id: str
    tenant: str
    scopes: frozenset[str]
    credential_id: str
    expires_at: float
    token: str

    def has_scope(self, scope: str) -> bool:
        """Whether the principal holds `scope`."""
        return scope in self.scopes


def key_id(public_key: Ed25519PublicKey) -> str:
    """A stable id for a public key: the start of its SHA-256 thumbprint, base64url."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest()[:12]).decode().rstrip("=")


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The JWK (RFC 8037, OKP/Ed25519) of a public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "kid": key_id(public_key),
        "alg": ALGORITHM,
        "use": "sig",
    }


def public_key_from_jwk(jwk: Mapping[str, str]) -> Ed25519PublicKey:
    """The Ed25519 public key of an OKP JWK; ValueError for any other kind."""
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ValueError("not an Ed25519 JWK")
    x = jwk["x"]
    return Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)))


def ensure_context_keys(private_path: Path, public_path: Path) -> None:
    """Create the signing key pair if missing (the private key 0600). The gateway and auth
    both call this at start, so creation is serialised by a lock file and idempotent."""
    if private_path.exists() and public_path.exists():
        return
    private_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(private_path.parent / ".context.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (private_path.exists() and public_path.exists()):
            _new_context_keys(private_path, public_path)


def _new_context_keys(private_path: Path, public_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    write_private(
        private_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The gateway's signing key."""
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The published verification key."""
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(segment: str) -> bytes:
    """A base64url segment's bytes (JWS omits the padding); ValueError when it is not one."""
    if not segment.isascii():
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error as error:
        raise ValueError("not base64url") from error


def _json_object(segment: str) -> dict[str, Any]:
    value = json.loads(_unb64(segment))
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


class ContextSigner:
    """Mints request-context tokens (the gateway)."""

    def __init__(self, private_key: Ed25519PrivateKey, max_ttl_seconds: float) -> None:
        self._key = private_key
        self._kid = key_id(private_key.public_key())
        self._max_ttl = max_ttl_seconds
        header = {"alg": ALGORITHM, "kid": self._kid, "typ": "JWT"}
        self._header = _b64(json.dumps(header, separators=(",", ":")).encode())

    def mint(
        self,
        *,
        execution_id: str,
        user_id: str,
        tenant: str,
        scopes: Iterable[str],
        credential_id: str,
        ttl_seconds: float,
    ) -> str:
        """A token for one request, valid for `ttl_seconds` (capped at the configured max)."""
        now = time.time()
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": user_id,
            "exe": execution_id,
            "ten": tenant,
            "scope": " ".join(sorted(scopes)),
            "cid": credential_id,
            "iat": int(now),
            "exp": now + min(ttl_seconds, self._max_ttl),
        }
        signed = self._header + b"." + _b64(json.dumps(claims, separators=(",", ":")).encode())
        return (signed + b"." + _b64(self._key.sign(signed))).decode()


KeyLookup = Callable[[str], Awaitable[Ed25519PublicKey | None]]
"""Finds the public key for a `kid` (None when unknown)."""


def _invalid(message: str = "invalid request context") -> Unauthenticated:
    return Unauthenticated(message, reason="CONTEXT_INVALID")


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(f"request context claim {name} is not a number")
    return float(value)


class ContextVerifier:
    """Verifies request-context tokens against the keys `lookup` finds."""

    def __init__(self, lookup: KeyLookup) -> None:
        self._lookup = lookup

    async def verify(self, token: str | None, execution_id: str | None = None) -> RequestContext:
        """The verified context; Unauthenticated when missing, forged or expired,
        PermissionDenied when bound to another execution than `execution_id`."""
        if not token:
            raise Unauthenticated("this call needs a request context", reason="CONTEXT_MISSING")
        segments = token.split(".") if len(token) <= MAX_TOKEN_CHARS else ()
        if len(segments) != 3:
            raise _invalid("malformed request context")
        try:
            header = _json_object(segments[0])
            signature = _unb64(segments[2])
        except ValueError:
            raise _invalid("malformed request context") from None
        kid = header.get("kid")
        key = await self._lookup(kid) if isinstance(kid, str) else None
        if key is None or header.get("alg") != ALGORITHM:
            raise _invalid("request context signed by an unknown key")
        try:
            key.verify(signature, f"{segments[0]}.{segments[1]}".encode())
            claims = _json_object(segments[1])
        except (InvalidSignature, ValueError):
            raise _invalid() from None
        context = self._checked(claims, token)
        if execution_id is not None and execution_id != context.execution_id:
            raise PermissionDenied(
                "request context is bound to another execution",
                reason="CONTEXT_MISMATCH",
                metadata={"executionId": execution_id},
            )
        return context

    @staticmethod
    def _checked(claims: Mapping[str, Any], token: str) -> RequestContext:
        """The context of signed `claims`, once they are all there, of the right types, for
        this audience and issuer, and current."""
        missing = [name for name in _REQUIRED_CLAIMS if name not in claims]
        if missing:
            raise _invalid(f"request context lacks {', '.join(missing)}")
        if claims["aud"] != AUDIENCE or claims["iss"] != ISSUER:
            raise _invalid("request context for another audience or issuer")
        expires, issued = _number(claims, "exp"), _number(claims, "iat")
        now = time.time()
        if now >= expires + LEEWAY_SECONDS:
            raise Unauthenticated("request context expired", reason="CONTEXT_EXPIRED")
        if issued > now + LEEWAY_SECONDS:
            raise _invalid("request context issued in the future")
        texts = ("sub", "exe", "ten", "scope", "cid")
        if any(not isinstance(claims.get(name, ""), str) for name in texts):
            raise _invalid("request context claim of the wrong type")
        return RequestContext(
            execution_id=claims["exe"],
            user_id=claims["sub"],
            tenant=claims.get("ten", ""),
            scopes=frozenset(claims.get("scope", "").split()),
            credential_id=claims.get("cid", ""),
            expires_at=expires,
            token=token,
        )


def static_keys(*keys: Ed25519PublicKey) -> KeyLookup:
    """A lookup over a fixed set of keys (auth, which holds them; tests)."""
    by_kid = {key_id(k): k for k in keys}

    async def lookup(kid: str) -> Ed25519PublicKey | None:
        return by_kid.get(kid)

    return lookup


def metadata_token(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The `saga-context` value of a call's invocation metadata."""
    for key, value in metadata or ():
        if key == METADATA_KEY and isinstance(value, str):
            return value
    return None
