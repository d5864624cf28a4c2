"""What every gateway RPC does before it relays: authenticate the caller, then mint the signed
request context (SPEC section 2) that the inner services verify."""

from __future__ import annotations

import secrets

import grpc

from saga.auth.v1 import auth_pb2, auth_pb2_grpc
from services.common.config import Config
from services.common.context import METADATA_KEY, ContextSigner
from services.common.guard import Context
from services.gateway.authn import CredentialCache, Principal, bearer_credential


def new_execution_id() -> str:
    """A fresh execution id (`exe_` + 128 random bits)."""
    return f"exe_{secrets.token_hex(16)}"


def new_request_id() -> str:
    """A fresh id for a request that is not an execution (`req_` + 128 random bits)."""
    return f"req_{secrets.token_hex(16)}"


class Edge:
    """Authentication and request contexts, shared by the gateway's servicers."""

    def __init__(self, config: Config, auth: grpc.aio.Channel, signer: ContextSigner) -> None:
        self._config = config
        self._auth = auth_pb2_grpc.AuthServiceStub(auth)
        self._signer = signer
        self._credentials = CredentialCache(self._verify, config.gateway.credential_cache_seconds)

    async def _verify(self, credential: str) -> Principal:
        reply = await self._auth.Authenticate(auth_pb2.AuthenticateRequest(credential=credential))
        p = reply.principal
        return Principal(
            user_id=p.user_id,
            tenant=p.tenant,
            scopes=frozenset(p.scopes),
            credential_id=p.credential_id,
            requests_per_minute=p.limits.requests_per_minute,
            concurrent_executions=p.limits.concurrent_executions,
            # The cache keeps the principal no longer than the credential lives.
            expires_at=p.expires_at.seconds + p.expires_at.nanos / 1e9
            if p.HasField("expires_at")
            else None,
        )

    async def principal(self, context: Context) -> Principal:
        """The authenticated caller of this RPC (Unauthenticated otherwise)."""
        authorization = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                authorization = value
                break
        return await self._credentials.principal(bearer_credential(authorization))

    def deadline(self, context: Context) -> float:
        """Seconds left for this request: the caller's deadline, or the configured default."""
        remaining = context.time_remaining()
        return self._config.gateway.execute_deadline_seconds if remaining is None else remaining

    def context_metadata(
        self, principal: Principal, request_id: str, ttl_seconds: float
    ) -> tuple[tuple[str, str]]:
        """The `saga-context` metadata for one request made for `principal`."""
        token = self._signer.mint(
            execution_id=request_id,
            user_id=principal.user_id,
            tenant=principal.tenant,
            scopes=principal.scopes,
            credential_id=principal.credential_id,
            ttl_seconds=ttl_seconds,
        )
        return ((METADATA_KEY, token),)
