"""The JWKS is public at the gateway: any client can verify Saga's tokens offline."""

from __future__ import annotations

from saga.gateway.v1 import account_pb2, account_pb2_grpc
from services.common.context import key_id, load_public_key
from tests.harness import Stack


async def test_jwks_is_served_without_a_credential(stack: Stack) -> None:
    async with stack.gateway_channel() as ch:
        reply = await account_pb2_grpc.AccountServiceStub(ch).GetJwks(
            account_pb2.GetJwksRequest(), timeout=10
        )
    kids = {k.kid for k in reply.keys}
    assert key_id(load_public_key(stack.data_dir / "keys" / "context.pub")) in kids
    assert all((k.kty, k.crv, k.alg) == ("OKP", "Ed25519", "EdDSA") for k in reply.keys)
