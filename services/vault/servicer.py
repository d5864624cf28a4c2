"""`saga.vault.v1.VaultService`: translation between protobuf and the barrier, and the audit
of every call (the calling service comes from its certificate; the secret's name only as an
HMAC; payloads never leave this module except in a GetSecret reply)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from saga.vault.v1 import status_pb2, vault_pb2, vault_pb2_grpc
from services.common.errors import SagaError
from services.common.guard import Identify
from services.vault import bounds
from services.vault.audit import AuditLog
from services.vault.barrier import Barrier
from services.vault.rotation import rewrap, rotate_key, status

T = TypeVar("T")


def _timestamp(micros: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMicroseconds(micros)
    return stamp


class VaultServicer(vault_pb2_grpc.VaultServiceServicer):
    """The vault service (see the module docstring)."""

    def __init__(
        self, barrier: Barrier, audit: AuditLog, identify: Identify, rewrap_batch_size: int
    ) -> None:
        self._barrier = barrier
        self._audit = audit
        self._identify = identify
        self._batch_size = rewrap_batch_size

    async def _audited(
        self, context: Any, operation: str, owner: str, name: str, work: Awaitable[T]
    ) -> T:
        """Run `work` and record the access with its outcome (OK or the error's reason)."""
        caller = self._identify(context) or "unidentified"
        try:
            result = await work
        except SagaError as error:
            await self._audit.record(caller, operation, owner, name, error.reason)
            raise
        except Exception:
            await self._audit.record(caller, operation, owner, name, "INTERNAL")
            raise
        await self._audit.record(caller, operation, owner, name, "OK")
        return result

    async def PutSecret(
        self, request: vault_pb2.PutSecretRequest, context: Any
    ) -> vault_pb2.PutSecretResponse:
        """Write a new version (compare-and-set on `expected_version`)."""
        expected = request.expected_version if request.HasField("expected_version") else None
        version = await self._audited(
            context,
            "PutSecret",
            request.owner,
            request.name,
            self._barrier.put(
                request.owner, request.name, request.payload, dict(request.metadata), expected
            ),
        )
        return vault_pb2.PutSecretResponse(version=version)

    async def GetSecret(
        self, request: vault_pb2.GetSecretRequest, context: Any
    ) -> vault_pb2.GetSecretResponse:
        """Read and decrypt a version (0 = the latest)."""
        secret = await self._audited(
            context,
            "GetSecret",
            request.owner,
            request.name,
            self._barrier.get(request.owner, request.name, request.version),
        )
        return vault_pb2.GetSecretResponse(
            payload=secret.payload,
            version=secret.version,
            metadata=dict(secret.metadata),
            created_at=_timestamp(secret.created_at),
        )

    async def DeleteSecret(
        self, request: vault_pb2.DeleteSecretRequest, context: Any
    ) -> vault_pb2.DeleteSecretResponse:
        """Delete every version (compare-and-set on `expected_version`)."""
        expected = request.expected_version if request.HasField("expected_version") else None
        await self._audited(
            context,
            "DeleteSecret",
            request.owner,
            request.name,
            self._barrier.delete(request.owner, request.name, expected),
        )
        return vault_pb2.DeleteSecretResponse()

    async def ListSecrets(
        self, request: vault_pb2.ListSecretsRequest, context: Any
    ) -> vault_pb2.ListSecretsResponse:
        """A page of an owner's secrets: names, versions and metadata, never payloads."""
        infos, token = await self._audited(
            context,
            "ListSecrets",
            request.owner,
            "",
            self._barrier.list(request.owner, request.page_size, request.page_token),
        )
        return vault_pb2.ListSecretsResponse(
            secrets=[
                vault_pb2.SecretInfo(
                    name=i.name,
                    version=i.version,
                    metadata=dict(i.metadata),
                    updated_at=_timestamp(i.updated_at),
                    key_id=i.key_id,
                )
                for i in infos
            ],
            next_page_token=token,
        )

    async def RotateKey(
        self, request: vault_pb2.RotateKeyRequest, context: Any
    ) -> vault_pb2.RotateKeyResponse:
        """Make a fresh key active (writable keyrings only)."""
        key_id = await self._audited(context, "RotateKey", "", "", rotate_key(self._barrier))
        return vault_pb2.RotateKeyResponse(key_id=key_id)

    async def Rewrap(
        self, request: vault_pb2.RewrapRequest, context: Any
    ) -> AsyncIterator[vault_pb2.RewrapResponse]:
        """Re-encrypt every row under the active key, reporting after each batch."""
        caller = self._identify(context) or "unidentified"
        # Recorded when it starts: a client that disconnects mid-way cancels the handler, and
        # the batches already committed stay done.
        await self._audit.record(caller, "Rewrap", "", "", "STARTED")
        try:
            size = bounds.batch_size(request.batch_size, self._batch_size)
            async for progress in rewrap(self._barrier, size):
                yield vault_pb2.RewrapResponse(
                    rows_total=progress.rows_total,
                    rows_done=progress.rows_done,
                    active_key_id=progress.active_key_id,
                    done=progress.done,
                )
        except SagaError as error:
            await self._audit.record(caller, "Rewrap", "", "", error.reason)
            raise
        await self._audit.record(caller, "Rewrap", "", "", "OK")

    async def GetStatus(
        self, request: vault_pb2.GetStatusRequest, context: Any
    ) -> vault_pb2.GetStatusResponse:
        """Serving or sealed (and why), the active key, and key usage."""
        current = await self._audited(context, "GetStatus", "", "", status(self._barrier))
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
