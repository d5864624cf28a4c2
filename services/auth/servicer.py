"""`saga.auth.v1.AuthService`: translation between protobuf and auth's domain modules."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from saga.auth.v1 import auth_pb2, auth_pb2_grpc
from services.auth.jwks import jwks


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """The auth service; RPCs not overridden here answer UNIMPLEMENTED."""

    def __init__(self, published_keys: list[Ed25519PublicKey]) -> None:
        self._published = published_keys

    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: Any
    ) -> auth_pb2.GetJwksResponse:
        """Publish the verification keys (no secret: callable by the gateway, router and
        runtime)."""
        return auth_pb2.GetJwksResponse(keys=[auth_pb2.Jwk(**k) for k in jwks(self._published)])
