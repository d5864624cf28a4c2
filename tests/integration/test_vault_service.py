"""The token-vault as a real process over mTLS, on SQLite and PostgreSQL: auth stores and
reads secrets, the gateway sees status and drives rotation and rewrap, nobody else gets in,
and every access is audited without the secret's name or value."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from saga.vault.v1 import status_pb2, vault_pb2, vault_pb2_grpc
from services.common.status import describe
from services.vault.store import SecretStore
from tests.conftest import Backend
from tests.harness import Stack, stack_for

PAYLOAD = b"sk-integration-7c1e5d9a0b3f"
NAME = "openai-api-key-for-acme"


@asynccontextmanager
async def running_vault(backend: Backend, tmp_path: Path) -> AsyncIterator[Stack]:
    """The vault alone, on `backend`."""
    async with stack_for(tmp_path, ["vault"], **backend.env()) as stack:
        yield stack


async def outcome(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    """The code and ErrorInfo reason a call ends with (OK, "" on success)."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), describe(error).reason
    return grpc.StatusCode.OK, ""


async def test_auth_stores_reads_lists_and_deletes_secrets(
    backend: Backend, tmp_path: Path
) -> None:
    async with running_vault(backend, tmp_path) as stack, stack.channel_as("auth", "vault") as ch:
        vault = vault_pb2_grpc.VaultServiceStub(ch)
        put = await vault.PutSecret(
            vault_pb2.PutSecretRequest(
                owner="provider:openai",
                name=NAME,
                payload=PAYLOAD,
                metadata={"kind": "api_key"},
                expected_version=0,
            ),
            timeout=5,
        )
        assert put.version == 1
        got = await vault.GetSecret(
            vault_pb2.GetSecretRequest(owner="provider:openai", name=NAME), timeout=5
        )
        assert (got.payload, got.version, dict(got.metadata)) == (PAYLOAD, 1, {"kind": "api_key"})
        assert got.created_at.seconds > 0

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await vault.PutSecret(
                vault_pb2.PutSecretRequest(
                    owner="provider:openai", name=NAME, payload=b"x", expected_version=0
                ),
                timeout=5,
            )
        details = describe(err.value)
        assert err.value.code() == grpc.StatusCode.ABORTED
        assert (details.reason, details.domain) == ("VERSION_CONFLICT", "vault.saga")
        assert details.metadata["currentVersion"] == "1"

        listed = await vault.ListSecrets(
            vault_pb2.ListSecretsRequest(owner="provider:openai"), timeout=5
        )
        assert [(s.name, s.version, dict(s.metadata)) for s in listed.secrets] == [
            (NAME, 1, {"kind": "api_key"})
        ]
        assert PAYLOAD not in listed.SerializeToString()

        assert await outcome(
            vault.PutSecret(
                vault_pb2.PutSecretRequest(owner="o", name="n" * 257, payload=b""), timeout=5
            )
        ) == (grpc.StatusCode.INVALID_ARGUMENT, "SECRET_INVALID")
        await vault.DeleteSecret(
            vault_pb2.DeleteSecretRequest(owner="provider:openai", name=NAME, expected_version=1),
            timeout=5,
        )
        assert await outcome(
            vault.GetSecret(
                vault_pb2.GetSecretRequest(owner="provider:openai", name=NAME), timeout=5
            )
        ) == (grpc.StatusCode.NOT_FOUND, "SECRET_NOT_FOUND")

    log = stack.read_log("vault")
    assert '"serving"' in log  # the log was captured
    assert PAYLOAD.decode() not in log
    assert NAME not in log


async def test_only_auth_reaches_secrets_and_only_the_gateway_manages_keys(
    backend: Backend, tmp_path: Path
) -> None:
    async with running_vault(backend, tmp_path) as stack:
        async with stack.channel_as("gateway", "vault") as ch:
            vault = vault_pb2_grpc.VaultServiceStub(ch)
            assert await outcome(
                vault.GetSecret(vault_pb2.GetSecretRequest(owner="o", name="n"), timeout=5)
            ) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
            assert await outcome(vault.GetStatus(vault_pb2.GetStatusRequest(), timeout=5)) == (
                grpc.StatusCode.OK,
                "",
            )
        async with stack.channel_as("router", "vault") as ch:
            vault = vault_pb2_grpc.VaultServiceStub(ch)
            assert await outcome(
                vault.GetSecret(vault_pb2.GetSecretRequest(owner="o", name="n"), timeout=5)
            ) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
        async with stack.channel_as("auth", "vault") as ch:
            vault = vault_pb2_grpc.VaultServiceStub(ch)
            assert await outcome(vault.RotateKey(vault_pb2.RotateKeyRequest(), timeout=5)) == (
                grpc.StatusCode.PERMISSION_DENIED,
                "CALLER_NOT_ALLOWED",
            )
            assert await outcome(
                vault.GetSecret(vault_pb2.GetSecretRequest(owner="o", name="n"), timeout=5)
            ) == (grpc.StatusCode.NOT_FOUND, "SECRET_NOT_FOUND")


async def twenty_writers_expecting_version_1(
    vaults: list[vault_pb2_grpc.VaultServiceStub],
) -> None:
    """Twenty concurrent PutSecrets of user:u1/refresh expecting version 1, spread over
    `vaults`: exactly one succeeds, the others are VERSION_CONFLICT."""
    results = await asyncio.gather(
        *(
            outcome(
                vaults[i % len(vaults)].PutSecret(
                    vault_pb2.PutSecretRequest(
                        owner="user:u1",
                        name="refresh",
                        payload=f"writer {i}".encode(),
                        expected_version=1,
                    ),
                    timeout=10,
                )
            )
            for i in range(20)
        )
    )
    assert results.count((grpc.StatusCode.OK, "")) == 1
    assert results.count((grpc.StatusCode.ABORTED, "VERSION_CONFLICT")) == 19


async def test_twenty_concurrent_writers_with_one_expected_version_one_wins(
    backend: Backend, tmp_path: Path
) -> None:
    async with running_vault(backend, tmp_path) as stack, stack.channel_as("auth", "vault") as ch:
        vault = vault_pb2_grpc.VaultServiceStub(ch)
        await vault.PutSecret(
            vault_pb2.PutSecretRequest(owner="user:u1", name="refresh", payload=b"v1"), timeout=5
        )
        await twenty_writers_expecting_version_1([vault])
        got = await vault.GetSecret(
            vault_pb2.GetSecretRequest(owner="user:u1", name="refresh"), timeout=5
        )
        assert got.version == 2
        assert got.payload.startswith(b"writer ")


async def test_rotation_and_rewrap_through_the_gateway_identity(
    backend: Backend, tmp_path: Path
) -> None:
    async with running_vault(backend, tmp_path) as stack:
        async with stack.channel_as("auth", "vault") as ch:
            secrets = vault_pb2_grpc.VaultServiceStub(ch)
            for i in range(5):
                await secrets.PutSecret(
                    vault_pb2.PutSecretRequest(owner="o", name=f"s{i}", payload=b"p%d" % i),
                    timeout=5,
                )
            async with stack.channel_as("gateway", "vault") as admin_ch:
                admin = vault_pb2_grpc.VaultServiceStub(admin_ch)
                before = (await admin.GetStatus(vault_pb2.GetStatusRequest(), timeout=5)).status
                assert before.state == status_pb2.VAULT_STATE_SERVING
                old = before.active_key_id
                assert dict(before.rows_by_key) == {old: 5}

                new = (await admin.RotateKey(vault_pb2.RotateKeyRequest(), timeout=5)).key_id
                assert new != old
                # Old rows still read under the old key; new writes use the new one.
                assert (
                    await secrets.GetSecret(vault_pb2.GetSecretRequest(owner="o", name="s0"))
                ).payload == b"p0"
                await secrets.PutSecret(
                    vault_pb2.PutSecretRequest(owner="o", name="s5", payload=b"p5"), timeout=5
                )
                mid = (await admin.GetStatus(vault_pb2.GetStatusRequest(), timeout=5)).status
                assert dict(mid.rows_by_key) == {old: 5, new: 1}
                assert sorted(mid.key_ids_in_use) == sorted([old, new])

                reports = [
                    r async for r in admin.Rewrap(vault_pb2.RewrapRequest(batch_size=2), timeout=30)
                ]
                assert [(r.rows_total, r.rows_done, r.done) for r in reports] == [
                    (5, 2, False),
                    (5, 4, False),
                    (5, 5, False),
                    (5, 5, True),
                ]
                assert {r.active_key_id for r in reports} == {new}
                after = (await admin.GetStatus(vault_pb2.GetStatusRequest(), timeout=5)).status
                assert list(after.key_ids_in_use) == [new]
                assert dict(after.rows_by_key) == {new: 6}
            for i in range(6):
                got = await secrets.GetSecret(
                    vault_pb2.GetSecretRequest(owner="o", name=f"s{i}"), timeout=5
                )
                assert got.payload == b"p%d" % i

        store = await SecretStore.open(backend.url, backend.namespace, tmp_path)
        try:
            audit = await store.db.fetch(
                "SELECT caller, operation, owner, name_hmac, outcome FROM audit"
            )
        finally:
            await store.close()
        operations = {(r["caller"], r["operation"]) for r in audit}
        assert {
            ("auth", "PutSecret"),
            ("auth", "GetSecret"),
            ("gateway", "GetStatus"),
            ("gateway", "RotateKey"),
            ("gateway", "Rewrap"),
        } <= operations
        assert {len(r["name_hmac"]) for r in audit} == {0, 64}  # hex HMACs, never a name
        # Rewrap like every other call: one row, with how it ended.
        assert [(r["caller"], r["outcome"]) for r in audit if r["operation"] == "Rewrap"] == [
            ("gateway", "OK")
        ]
