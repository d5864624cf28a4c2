"""The vault's servicer in process, over a real channel and a real SQLite file: what auth
writes it reads back, a refusal arrives with its reason and domain, every access auth makes
is audited with its outcome, and a caller outside the call matrix is refused. The
process — mTLS, keyring files, sealing, logs — is tests/integration/test_vault_*.py's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from saga.vault.v1 import vault_pb2, vault_pb2_grpc
from services.common.server import Registration
from services.common.status import describe
from services.vault.audit import AuditLog
from services.vault.barrier import Barrier
from services.vault.keyring_sources import FileKeyring
from services.vault.servicer import VaultServicer
from services.vault.store import SecretStore
from tests.inprocess import as_caller, serve

PAYLOAD = b"sk-in-process-5d2c9e"
OWNER = "provider:openai"
NAME = "openai-api-key"


@dataclass
class Vault:
    """The vault servicer as auth reaches it, and its audit log."""

    registration: Registration
    audit: AuditLog


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[Vault]:
    source = FileKeyring(tmp_path / "keyring.json")
    store = await SecretStore.open("", "", tmp_path)
    barrier = await Barrier.open(store, source, source.load())
    audit = AuditLog(store, lambda: barrier.keyring)
    servicer = VaultServicer(barrier, audit, as_caller("auth"), rewrap_batch_size=100)
    try:
        yield Vault(Registration.of(servicer), audit)
    finally:
        await store.close()


async def test_auth_writes_reads_and_is_audited_with_each_outcome(vault: Vault) -> None:
    async with serve("vault", vault.registration, caller="auth") as channel:
        stub = vault_pb2_grpc.VaultServiceStub(channel)
        put = await stub.PutSecret(
            vault_pb2.PutSecretRequest(owner=OWNER, name=NAME, payload=PAYLOAD), timeout=5
        )
        got = await stub.GetSecret(vault_pb2.GetSecretRequest(owner=OWNER, name=NAME), timeout=5)
        assert (put.version, got.payload, got.version) == (1, PAYLOAD, 1)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetSecret(vault_pb2.GetSecretRequest(owner=OWNER, name="absent"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert (describe(err.value).reason, describe(err.value).domain) == (
        "SECRET_NOT_FOUND",
        "vault.saga",
    )
    entries = [(e.caller, e.operation, e.owner, e.outcome) for e in await vault.audit.recent()]
    assert entries == [
        ("auth", "GetSecret", OWNER, "SECRET_NOT_FOUND"),
        ("auth", "GetSecret", OWNER, "OK"),
        ("auth", "PutSecret", OWNER, "OK"),
    ]


async def test_a_caller_outside_the_call_matrix_is_refused(vault: Vault) -> None:
    async with serve("vault", vault.registration, caller="gateway") as channel:
        stub = vault_pb2_grpc.VaultServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetSecret(vault_pb2.GetSecretRequest(owner=OWNER, name=NAME), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert describe(err.value).reason == "CALLER_NOT_ALLOWED"
    # Positive control: the same servicer answers auth.
    async with serve("vault", vault.registration, caller="auth") as channel:
        stub = vault_pb2_grpc.VaultServiceStub(channel)
        listed = await stub.ListSecrets(vault_pb2.ListSecretsRequest(owner=OWNER), timeout=5)
    assert list(listed.secrets) == []
