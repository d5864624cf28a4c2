"""`saga.auth.v1.AuthService`: translation between protobuf and auth's domain modules."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf import timestamp_pb2

from saga.auth.v1 import api_keys_pb2, auth_pb2, auth_pb2_grpc
from services.auth.accounts import Accounts
from services.auth.api_keys import ApiKey
from services.auth.jwks import jwks
from services.common.context import ContextVerifier, RequestContext, metadata_token
from services.common.errors import PermissionDenied


def _timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    whole = int(seconds // 1)
    return timestamp_pb2.Timestamp(seconds=whole, nanos=int((seconds - whole) * 1e9))


def _seconds(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def _info(key: ApiKey) -> api_keys_pb2.ApiKeyInfo:
    return api_keys_pb2.ApiKeyInfo(
        key_id=key.key_id,
        name=key.name,
        prefix=key.prefix,
        scopes=key.scopes,
        created_at=_timestamp(key.created_at),
        expires_at=_timestamp(key.expires_at),
        revoked_at=_timestamp(key.revoked_at),
        last_used_at=_timestamp(key.last_used_at),
    )


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """The auth service; RPCs not overridden here answer UNIMPLEMENTED."""

    def __init__(
        self,
        published_keys: list[Ed25519PublicKey],
        accounts: Accounts,
        contexts: ContextVerifier,
    ) -> None:
        self._published = published_keys
        self._accounts = accounts
        self._contexts = contexts

    async def _acting_for(self, context: Any, user_id: str) -> RequestContext:
        """The verified request context of a call that acts for `user_id`; only that user
        may manage their keys (the gateway's certificate alone is not enough)."""
        verified = await self._contexts.verify(metadata_token(context.invocation_metadata()))
        if verified.user_id != user_id:
            raise PermissionDenied(
                "the request context is for another user",
                reason="CONTEXT_MISMATCH",
                metadata={"userId": user_id[:64]},
            )
        return verified

    async def Authenticate(
        self, request: auth_pb2.AuthenticateRequest, context: Any
    ) -> auth_pb2.AuthenticateResponse:
        """Verify an API key and say who it is."""
        principal = await self._accounts.authenticate(request.credential)
        return auth_pb2.AuthenticateResponse(
            principal=auth_pb2.Principal(
                user_id=principal.user_id,
                tenant=principal.tenant,
                scopes=principal.scopes,
                credential_id=principal.credential_id,
                kind=auth_pb2.CREDENTIAL_KIND_API_KEY,
                expires_at=_timestamp(principal.expires_at),
            )
        )

    async def CreateApiKey(
        self, request: auth_pb2.CreateApiKeyRequest, context: Any
    ) -> auth_pb2.CreateApiKeyResponse:
        """Create a key for the user the request context speaks for."""
        actor = await self._acting_for(context, request.user_id)
        secret, key = await self._accounts.create(
            request.user_id,
            request.name,
            list(request.scopes),
            _seconds(request.expires_at) if request.HasField("expires_at") else None,
            held=actor.scopes,
        )
        return auth_pb2.CreateApiKeyResponse(api_key=secret, info=_info(key))

    async def ListApiKeys(
        self, request: auth_pb2.ListApiKeysRequest, context: Any
    ) -> auth_pb2.ListApiKeysResponse:
        """The caller's keys, without their secrets."""
        await self._acting_for(context, request.user_id)
        keys = await self._accounts.keys(request.user_id)
        return auth_pb2.ListApiKeysResponse(keys=[_info(k) for k in keys])

    async def RevokeApiKey(
        self, request: auth_pb2.RevokeApiKeyRequest, context: Any
    ) -> auth_pb2.RevokeApiKeyResponse:
        """Revoke one of the caller's keys."""
        await self._acting_for(context, request.user_id)
        key = await self._accounts.revoke(request.user_id, request.key_id)
        return auth_pb2.RevokeApiKeyResponse(info=_info(key))

    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: Any
    ) -> auth_pb2.GetJwksResponse:
        """Publish the verification keys (no secret: callable by the gateway, router and
        runtime)."""
        return auth_pb2.GetJwksResponse(keys=[auth_pb2.Jwk(**k) for k in jwks(self._published)])
