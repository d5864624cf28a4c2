"""`saga.vault.v1.VaultService`: translation between protobuf and the barrier, and the audit
of every call — one row each, the Rewrap stream included, written when the call ends (the
calling service comes from its certificate; the secret's name only as an HMAC; payloads never
leave this module except in a GetSecret reply)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from saga.vault.v1 import status_pb2, vault_pb2, vault_pb2_grpc
from services.common.errors import SagaError
from services.common.guard import Context, Identify
from services.common.timestamps import from_micros
from services.vault import bounds
from services.vault.audit import AuditLog
from services.vault.barrier import Barrier
from services.vault.rotation import rewrap, rotate_key, status


class VaultServicer(vault_pb2_grpc.VaultServiceServicer):
    """The vault service (see the module docstring)."""

    def __init__(
        self, barrier: Barrier, audit: AuditLog, identify: Identify, rewrap_batch_size: int
    ) -> None:
        self._barrier = barrier
        self._audit = audit
        self._identify = identify
        self._batch_size = rewrap_batch_size

    @asynccontextmanager
    async def _audited(
        self, context: Context, operation: str, owner: str = "", name: str = ""
    ) -> AsyncIterator[None]:
        """Record the access once it ends, with its outcome: OK, the error's reason,
        CANCELLED (the caller went away mid-way; what was committed stays done) or INTERNAL.
        Unary calls and the Rewrap stream alike: one audit row per call."""
        caller = self._identify(context) or "unidentified"
        outcome = "INTERNAL"
        try:
            yield
            outcome = "OK"
        except SagaError as error:
            outcome = error.reason
            raise
        except (asyncio.CancelledError, GeneratorExit):
            # GeneratorExit: grpc closes a stream whose client disconnected between reports.
            outcome = "CANCELLED"
            raise
        finally:
            # Shielded: the row of a cancelled call is still written.
            await asyncio.shield(self._audit.record(caller, operation, owner, name, outcome))

    async def PutSecret(
        self, request: vault_pb2.PutSecretRequest, context: Context
    ) -> vault_pb2.PutSecretResponse:
        """Write a new version (compare-and-set on `expected_version`)."""
        expected = request.expected_version if request.HasField("expected_version") else None
        async with self._audited(context, "PutSecret", request.owner, request.name):
            version = await self._barrier.put(
                request.owner, request.name, request.payload, dict(request.metadata), expected
            )
        return vault_pb2.PutSecretResponse(version=version)

    async def GetSecret(
        self, request: vault_pb2.GetSecretRequest, context: Context
    ) -> vault_pb2.GetSecretResponse:
        """Read and decrypt a version (0 = the latest)."""
        async with self._audited(context, "GetSecret", request.owner, request.name):
            secret = await self._barrier.get(request.owner, request.name, request.version)
        return vault_pb2.GetSecretResponse(
            payload=secret.payload,
            version=secret.version,
            metadata=dict(secret.metadata),
            created_at=from_micros(secret.created_at),
        )

    async def DeleteSecret(
        self, request: vault_pb2.DeleteSecretRequest, context: Context
    ) -> vault_pb2.DeleteSecretResponse:
        """Delete every version (compare-and-set on `expected_version`)."""
        expected = request.expected_version if request.HasField("expected_version") else None
        async with self._audited(context, "DeleteSecret", request.owner, request.name):
            await self._barrier.delete(request.owner, request.name, expected)
        return vault_pb2.DeleteSecretResponse()

    async def ListSecrets(
        self, request: vault_pb2.ListSecretsRequest, context: Context
    ) -> vault_pb2.ListSecretsResponse:
        """A page of an owner's secrets: names, versions and metadata, never payloads."""
        async with self._audited(context, "ListSecrets", request.owner):
            infos, token = await self._barrier.list(
                request.owner, request.page_size, request.page_token
            )
        return vault_pb2.ListSecretsResponse(
            secrets=[
                vault_pb2.SecretInfo(
                    name=i.name,
                    version=i.version,
                    metadata=dict(i.metadata),
                    updated_at=from_micros(i.updated_at),
                    key_id=i.key_id,
                )
                for i in infos
            ],
            next_page_token=token,
        )

    async def RotateKey(
        self, request: vault_pb2.RotateKeyRequest, context: Context
    ) -> vault_pb2.RotateKeyResponse:
        """Make a fresh key active (writable keyrings only)."""
        async with self._audited(context, "RotateKey"):
            key_id = await rotate_key(self._barrier)
        return vault_pb2.RotateKeyResponse(key_id=key_id)

    async def Rewrap(
        self, request: vault_pb2.RewrapRequest, context: Context
    ) -> AsyncIterator[vault_pb2.RewrapResponse]:
        """Re-encrypt every row under the active key, reporting after each batch."""
        async with self._audited(context, "Rewrap"):
            size = bounds.batch_size(request.batch_size, self._batch_size)
            async for progress in rewrap(self._barrier, size):
                yield vault_pb2.RewrapResponse(
                    rows_total=progress.rows_total,
                    rows_done=progress.rows_done,
                    active_key_id=progress.active_key_id,
                    done=progress.done,
                )

    async def GetStatus(
        self, request: vault_pb2.GetStatusRequest, context: Context
    ) -> vault_pb2.GetStatusResponse:
        """Serving or sealed (and why), the active key, and key usage."""
        async with self._audited(context, "GetStatus"):
            current = await status(self._barrier)
        return vault_pb2.GetStatusResponse(
            status=status_pb2.VaultStatus(
                state=(
                    status_pb2.VAULT_STATE_SEALED
                    if current.sealed_reason
                    else status_pb2.VAULT_STATE_SERVING
                ),
                sealed_reason=current.sealed_reason,
                active_key_id=current.active_key_id,
                key_ids_in_use=list(current.key_ids_in_use),
                rows_by_key=dict(current.rows_by_key),
            )
        )
