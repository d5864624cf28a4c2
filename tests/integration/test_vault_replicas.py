"""Two token-vault processes on one PostgreSQL, with one keyring (from the environment, as
a mounted secret would give both): they start together, and twenty concurrent writers with
the same expected version, spread over both, make exactly one new version."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from saga.vault.v1 import vault_pb2, vault_pb2_grpc
from tests.conftest import PG_URL, drop_schemas
from tests.harness import Stack, stack_for
from tests.integration.test_vault_service import twenty_writers_expecting_version_1


@pytest.fixture
async def vaults(tmp_path: Path) -> AsyncIterator[Stack]:
    namespace = f"t{secrets.token_hex(6)}"
    key = f"k_{secrets.token_hex(4)}:{base64.b64encode(secrets.token_bytes(32)).decode()}"
    try:
        async with stack_for(
            tmp_path,
            ["vault"],
            replicas={"vault": 2},
            SAGA_STORAGE__URL=PG_URL,
            SAGA_STORAGE__NAMESPACE=namespace,
            SAGA_VAULT__KEYRING="env",
            SAGA_VAULT__KEYS=key,
        ) as stack:
            yield stack
    finally:
        await drop_schemas(namespace)


async def test_compare_and_set_over_two_vaults_lets_one_writer_win(vaults: Stack) -> None:
    async with (
        vaults.channel_as("auth", "vault") as first,
        vaults.channel_as("auth", "vault-2") as second,
    ):
        stubs = [vault_pb2_grpc.VaultServiceStub(ch) for ch in (first, second)]
        await stubs[0].PutSecret(
            vault_pb2.PutSecretRequest(owner="user:u1", name="refresh", payload=b"v1"), timeout=5
        )
        await twenty_writers_expecting_version_1(stubs)
        for stub in stubs:  # both read the one winner
            got = await stub.GetSecret(
                vault_pb2.GetSecretRequest(owner="user:u1", name="refresh"), timeout=5
            )
            assert got.version == 2
            assert got.payload.startswith(b"writer ")
