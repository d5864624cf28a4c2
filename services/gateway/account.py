"""`saga.gateway.v1.AccountService`: a caller's own API keys, relayed to auth."""

from __future__ import annotations

import grpc

from saga.auth.v1 import auth_pb2, auth_pb2_grpc
from saga.gateway.v1 import account_pb2, account_pb2_grpc
from services.common.errors import QuotaViolation, ResourceExhausted
from services.common.guard import Context
from services.gateway.authn import Principal
from services.gateway.edge import Edge, new_request_id
from services.gateway.limits import Gcra, Limit, client_address

_RELAY_TTL_SECONDS = 30.0


def _sends_credential(context: Context) -> bool:
    """Whether the call carries an `authorization` header (Register works without one)."""
    return any(key == "authorization" for key, _ in context.invocation_metadata() or ())


class AccountServicer(account_pb2_grpc.AccountServiceServicer):
    """Sign-up and sign-in (limited per client address), and the caller's own API keys."""

    def __init__(self, edge: Edge, auth: grpc.aio.Channel, calls_per_minute: int) -> None:
        self._edge = edge
        self._auth = auth_pb2_grpc.AuthServiceStub(auth)
        self._limit = Limit(count=calls_per_minute, period=60.0, burst=calls_per_minute)
        self._per_address = Gcra(self._limit)

    def _admit_address(self, context: Context) -> None:
        address = client_address(context.peer())
        wait = self._per_address.take(address)
        if wait > 0:
            raise ResourceExhausted(
                "too many sign-up or sign-in attempts from this address",
                reason="RATE_LIMITED",
                retry_after=wait,
                metadata={"limit": str(self._limit.count), "period": "60s"},
                quota_violations=[
                    QuotaViolation(
                        f"address:{address}",
                        f"{self._limit.count} Register/Login calls per minute",
                    )
                ],
            )

    async def Register(
        self, request: account_pb2.RegisterRequest, context: Context
    ) -> account_pb2.RegisterResponse:
        """Create a user (auth checks the email, the password policy and who may register).

        A caller who sends a credential is authenticated and its request context relayed, so
        an admin can create accounts while self-registration is closed (auth decides); an
        admin is not held to the per-address sign-up limit, everyone else is."""
        metadata: tuple[tuple[str, str], ...] = ()
        if _sends_credential(context):
            principal, metadata = await self._for_caller(context)
            if "admin" not in principal.scopes:
                self._admit_address(context)
        else:
            self._admit_address(context)
        reply = await self._auth.Register(
            auth_pb2.RegisterRequest(email=request.email, password=request.password),
            metadata=metadata,
        )
        return account_pb2.RegisterResponse(user_id=reply.user_id, email=reply.email)

    async def Login(
        self, request: account_pb2.LoginRequest, context: Context
    ) -> account_pb2.LoginResponse:
        """An access token for email and password (auth throttles failures per account)."""
        self._admit_address(context)
        reply = await self._auth.Login(
            auth_pb2.LoginRequest(email=request.email, password=request.password)
        )
        return account_pb2.LoginResponse(
            access_token=reply.access_token,
            expires_at=reply.expires_at,
            token_type=reply.token_type,
        )

    async def _for_caller(self, context: Context) -> tuple[Principal, tuple[tuple[str, str]]]:
        principal = await self._edge.principal(context)
        metadata = self._edge.context_metadata(principal, new_request_id(), _RELAY_TTL_SECONDS)
        return principal, metadata

    async def GetJwks(
        self, request: account_pb2.GetJwksRequest, context: Context
    ) -> account_pb2.GetJwksResponse:
        """Saga's token verification keys, for anyone (public keys only)."""
        reply = await self._auth.GetJwks(auth_pb2.GetJwksRequest())
        return account_pb2.GetJwksResponse(keys=reply.keys)

    async def CreateApiKey(
        self, request: account_pb2.CreateApiKeyRequest, context: Context
    ) -> account_pb2.CreateApiKeyResponse:
        """A new key for the caller, with at most the caller's scopes (auth enforces it)."""
        principal, metadata = await self._for_caller(context)
        reply = await self._auth.CreateApiKey(
            auth_pb2.CreateApiKeyRequest(
                user_id=principal.user_id,
                name=request.name,
                # Empty = all of the caller's scopes (the contract's default).
                scopes=request.scopes or sorted(principal.scopes),
                expires_at=request.expires_at if request.HasField("expires_at") else None,
            ),
            metadata=metadata,
        )
        return account_pb2.CreateApiKeyResponse(api_key=reply.api_key, info=reply.info)

    async def ListApiKeys(
        self, request: account_pb2.ListApiKeysRequest, context: Context
    ) -> account_pb2.ListApiKeysResponse:
        """The caller's keys (never their secrets)."""
        principal, metadata = await self._for_caller(context)
        reply = await self._auth.ListApiKeys(
            auth_pb2.ListApiKeysRequest(user_id=principal.user_id), metadata=metadata
        )
        return account_pb2.ListApiKeysResponse(keys=reply.keys)

    async def RevokeApiKey(
        self, request: account_pb2.RevokeApiKeyRequest, context: Context
    ) -> account_pb2.RevokeApiKeyResponse:
        """Revoke one of the caller's keys; felt everywhere within the credential cache TTL."""
        principal, metadata = await self._for_caller(context)
        reply = await self._auth.RevokeApiKey(
            auth_pb2.RevokeApiKeyRequest(user_id=principal.user_id, key_id=request.key_id),
            metadata=metadata,
        )
        return account_pb2.RevokeApiKeyResponse(info=reply.info)
