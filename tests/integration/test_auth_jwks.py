"""auth publishes the gateway's request-context key in its JWKS, beside its own JWT keys."""

from __future__ import annotations

from saga.auth.v1 import auth_pb2, auth_pb2_grpc
from services.common.context import key_id, load_public_key, public_key_from_jwk
from tests.harness import Stack


async def test_jwks_carries_the_context_public_key(stack: Stack) -> None:
    published = load_public_key(stack.data_dir / "keys" / "context.pub")
    async with stack.channel_as("router", "auth") as ch:
        reply = await auth_pb2_grpc.AuthServiceStub(ch).GetJwks(
            auth_pb2.GetJwksRequest(), timeout=5
        )
    assert reply.keys[0].kid == key_id(published)  # first, then auth's signing keys
    for jwk in reply.keys:
        assert (jwk.kty, jwk.crv, jwk.alg, jwk.use) == ("OKP", "Ed25519", "EdDSA", "sig")
        assert key_id(public_key_from_jwk({"kty": jwk.kty, "crv": jwk.crv, "x": jwk.x})) == (
            jwk.kid
        )
