"""Request-context tokens: minted by the gateway's key, refused when forged, expired or bound
to another execution."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.common.context import (
    ContextSigner,
    ContextVerifier,
    key_id,
    public_jwk,
    public_key_from_jwk,
    static_keys,
)
from services.common.errors import PermissionDenied, Unauthenticated

KEY = Ed25519PrivateKey.generate()
VERIFIER = ContextVerifier(static_keys(KEY.public_key()))


def mint(signer_key: Ed25519PrivateKey = KEY, ttl: float = 30, exe: str = "exe-1") -> str:
    return ContextSigner(signer_key, max_ttl_seconds=60).mint(
        execution_id=exe,
        user_id="u1",
        tenant="t1",
        scopes=["execute", "sessions"],
        credential_id="k1",
        ttl_seconds=ttl,
    )


async def test_a_minted_context_verifies_with_its_claims() -> None:
    context = await VERIFIER.verify(mint(), "exe-1")
    assert (context.user_id, context.tenant, context.execution_id) == ("u1", "t1", "exe-1")
    assert context.scopes == {"execute", "sessions"}
    assert context.has_scope("execute")
    assert not context.has_scope("admin")


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "CONTEXT_MISSING"),
        ("not-a-jwt", "CONTEXT_INVALID"),
        (mint(Ed25519PrivateKey.generate()), "CONTEXT_INVALID"),
        (mint(ttl=-30), "CONTEXT_EXPIRED"),
    ],
)
async def test_bad_contexts_are_unauthenticated(token: str | None, reason: str) -> None:
    with pytest.raises(Unauthenticated) as err:
        await VERIFIER.verify(token, "exe-1")
    assert err.value.reason == reason


async def test_forged_signature_under_the_real_kid_is_refused() -> None:
    forger = Ed25519PrivateKey.generate()
    claims = jwt.decode(mint(), options={"verify_signature": False})
    forged = jwt.encode(
        claims, forger, algorithm="EdDSA", headers={"kid": key_id(KEY.public_key())}
    )
    with pytest.raises(Unauthenticated) as err:
        await VERIFIER.verify(forged, "exe-1")
    assert err.value.reason == "CONTEXT_INVALID"


async def test_context_bound_to_another_execution_is_refused() -> None:
    with pytest.raises(PermissionDenied) as err:
        await VERIFIER.verify(mint(exe="exe-2"), "exe-1")
    assert err.value.reason == "CONTEXT_MISMATCH"


def test_ttl_is_capped() -> None:
    claims = jwt.decode(mint(ttl=10_000), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] <= 61


def test_jwk_round_trip() -> None:
    jwk = public_jwk(KEY.public_key())
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("OKP", "Ed25519", "EdDSA")
    assert key_id(public_key_from_jwk(jwk)) == jwk["kid"]


def _signed(claims: dict[str, object], header: dict[str, object] | None = None) -> str:
    """A token signed with the real key over `claims` (PyJWT: another implementation)."""
    headers = {"kid": key_id(KEY.public_key())} | (header or {})
    return jwt.encode(claims, KEY, algorithm="EdDSA", headers=headers)


def _claims(**changes: object) -> dict[str, object]:
    claims = jwt.decode(mint(), options={"verify_signature": False})
    # Built when the module is collected, maybe many minutes before the test runs: these
    # tokens must be refused for what they change, never for having expired meanwhile.
    claims["exp"] = claims["iat"] + 86_400
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.mark.parametrize(
    "token",
    [
        _signed(_claims(aud="someone-else")),
        _signed(_claims(iss="saga-evil")),
        _signed(_claims(exe=None)),
        _signed(_claims(iat=None)),
        _signed(_claims(exp="tomorrow")),
        _signed(_claims(sub=42)),
        _signed(_claims(iat=_claims()["iat"] + 3600)),  # type: ignore[operator]
        # Signed right, but the header says another algorithm: refused before any check.
        jwt.encode(
            _claims(), "s" * 32, algorithm="HS256", headers={"kid": key_id(KEY.public_key())}
        ),
        mint() + ".extra",
        mint().replace(".", ". ", 1),
        "a" * 5000,
    ],
    ids=[
        "aud",
        "iss",
        "no-exe",
        "no-iat",
        "exp-text",
        "sub-number",
        "iat-future",
        "hs256",
        "four-segments",
        "space",
        "too-long",
    ],
)
async def test_tokens_of_the_wrong_shape_or_claims_are_refused(token: str) -> None:
    with pytest.raises(Unauthenticated) as err:
        await VERIFIER.verify(token, "exe-1")
    assert err.value.reason == "CONTEXT_INVALID"


async def test_a_payload_changed_after_signing_is_refused() -> None:
    header, _payload, signature = mint().split(".")
    other = jwt.decode(mint(exe="exe-1"), options={"verify_signature": False})
    other["scope"] = "admin execute"
    forged_payload = jwt.encode(other, KEY, algorithm="EdDSA").split(".")[1]
    with pytest.raises(Unauthenticated) as err:
        await VERIFIER.verify(f"{header}.{forged_payload}.{signature}", "exe-1")
    assert err.value.reason == "CONTEXT_INVALID"


async def test_tokens_are_standard_jws_both_ways() -> None:
    """What the gateway mints, a JWT library verifies; what a JWT library signs with the
    gateway's key, the services accept."""
    claims = jwt.decode(
        mint(),
        KEY.public_key(),
        algorithms=["EdDSA"],
        audience="saga-internal",
        issuer="saga-gateway",
    )
    assert claims["exe"] == "exe-1"
    context = await VERIFIER.verify(_signed(_claims()), "exe-1")
    assert (context.user_id, context.credential_id) == ("u1", "k1")


async def test_expiry_allows_the_leeway_and_no_more() -> None:
    now = time.time()
    await VERIFIER.verify(_signed(_claims(exp=now - 0.5)), "exe-1")
    with pytest.raises(Unauthenticated) as err:
        await VERIFIER.verify(_signed(_claims(exp=now - 5)), "exe-1")
    assert err.value.reason == "CONTEXT_EXPIRED"
