"""`SecretStore` over the token-vault's gRPC API (auth is its only reader and writer).

NOT_FOUND becomes None and ABORTED (a lost compare-and-set) `SecretConflict`; any other
failure propagates as the `grpc.aio.AioRpcError` it is, so the guard relays the vault's own
status (e.g. sealed) to auth's caller.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from saga.vault.v1 import vault_pb2, vault_pb2_grpc
from services.auth.secret_store import Secret, SecretConflict

TIMEOUT_SECONDS = 5.0


class VaultSecrets:
    """The vault, as auth uses it."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float = TIMEOUT_SECONDS) -> None:
        self._stub = vault_pb2_grpc.VaultServiceStub(channel)
        self._timeout = timeout

    async def get(self, owner: str, name: str) -> Secret | None:
        """The latest version of (owner, name), or None."""
        try:
            reply = await self._stub.GetSecret(
                vault_pb2.GetSecretRequest(owner=owner, name=name), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return Secret(payload=reply.payload, version=reply.version, metadata=dict(reply.metadata))

    async def put(
        self,
        owner: str,
        name: str,
        payload: bytes,
        metadata: Mapping[str, str],
        expected_version: int | None,
    ) -> int:
        """Write a new version (compare-and-set when `expected_version` is given)."""
        request = vault_pb2.PutSecretRequest(
            owner=owner, name=name, payload=payload, metadata=dict(metadata)
        )
        if expected_version is not None:
            request.expected_version = expected_version
        try:
            reply = await self._stub.PutSecret(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.ABORTED:
                raise SecretConflict(f"{owner}/{name} changed") from None
            raise
        return int(reply.version)

    async def delete(self, owner: str, name: str) -> None:
        """Delete (owner, name) with all its versions, if it exists."""
        try:
            await self._stub.DeleteSecret(
                vault_pb2.DeleteSecretRequest(owner=owner, name=name), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
