"""The vault's keyring at start-up, as a real process: a wrong keyring seals it (readiness
NOT_SERVING on the probe port, reads refused, the reason in GetStatus and the logs) while a
keyring file readable by others stops it with exit 78; read-only keyrings refuse RotateKey
with the operator's procedure."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from saga.vault.v1 import status_pb2, vault_pb2, vault_pb2_grpc
from services.common.config import EXIT_CONFIG
from services.common.status import describe
from services.vault.keyring import generate_key
from tests.conftest import Backend
from tests.harness import Stack, stack_for

VAULT = "saga.vault.v1.VaultService"
PAYLOAD = b"refresh-token-5f0c2b7e"


async def outcome(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    """The code and ErrorInfo reason a call ends with (OK, "" on success)."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), describe(error).reason
    return grpc.StatusCode.OK, ""


async def probe(stack: Stack, service: str) -> int:
    """The health status the plaintext probe port reports for `service`."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports['vault'].probe_port}") as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return int(reply.status)


async def read_secret(stack: Stack) -> tuple[grpc.StatusCode, str]:
    async with stack.channel_as("auth", "vault") as ch:
        vault = vault_pb2_grpc.VaultServiceStub(ch)
        return await outcome(
            vault.GetSecret(vault_pb2.GetSecretRequest(owner="user:u", name="t"), timeout=5)
        )


async def vault_status(stack: Stack) -> status_pb2.VaultStatus:
    async with stack.channel_as("gateway", "vault") as ch:
        reply = await vault_pb2_grpc.VaultServiceStub(ch).GetStatus(
            vault_pb2.GetStatusRequest(), timeout=5
        )
    return reply.status


async def test_a_wrong_keyring_seals_the_vault(backend: Backend, tmp_path: Path) -> None:
    keyring = tmp_path / "vault" / "keyring.json"
    async with stack_for(tmp_path, ["vault"], **backend.env()) as stack:
        async with stack.channel_as("auth", "vault") as ch:
            await vault_pb2_grpc.VaultServiceStub(ch).PutSecret(
                vault_pb2.PutSecretRequest(owner="user:u", name="t", payload=PAYLOAD), timeout=5
            )
        # Positive control: the keyring the secret was written with serves it.
        assert await probe(stack, VAULT) == health_pb2.HealthCheckResponse.SERVING
        assert await read_secret(stack) == (grpc.StatusCode.OK, "")
        stack.stop("vault")

        # Another keyring: the vault makes a new one where the old one was.
        keyring.rename(tmp_path / "keyring.saved")
        await stack.start_all(["vault"])  # liveness ("") is SERVING: the process is up
        assert await probe(stack, "") == health_pb2.HealthCheckResponse.SERVING
        assert await probe(stack, VAULT) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await read_secret(stack) == (grpc.StatusCode.FAILED_PRECONDITION, "VAULT_SEALED")
        status = await vault_status(stack)
        assert status.state == status_pb2.VAULT_STATE_SEALED
        assert "canary" in status.sealed_reason
        assert "vault sealed" in stack.read_log("vault")
        stack.stop("vault")

        # The right keyring back: serving again, and the secret is intact.
        (tmp_path / "keyring.saved").replace(keyring)
        await stack.start_all(["vault"])
        assert await probe(stack, VAULT) == health_pb2.HealthCheckResponse.SERVING
        assert (await vault_status(stack)).state == status_pb2.VAULT_STATE_SERVING
        assert await read_secret(stack) == (grpc.StatusCode.OK, "")
        assert PAYLOAD.decode() not in stack.read_log("vault")


async def test_a_keyring_file_readable_by_others_stops_the_vault(tmp_path: Path) -> None:
    keyring = tmp_path / "vault" / "keyring.json"
    async with stack_for(tmp_path, ["vault"]) as stack:  # creates the keyring, 0600
        stack.stop("vault")
        keyring.chmod(0o644)
        process = stack.start("vault")
        assert process.wait(30) == EXIT_CONFIG
        log = stack.read_log("vault")
        assert f"{keyring}: mode 0644 is wider than 0600" in log
        assert f"chmod 600 {keyring}" in log
        assert "Traceback" not in log

        keyring.chmod(0o600)  # positive control: the fix the message names
        await stack.start_all(["vault"])
        assert (await vault_status(stack)).state == status_pb2.VAULT_STATE_SERVING


def _mounted_secret(tmp_path: Path) -> dict[str, str]:
    directory = tmp_path / "mounted-keyring"
    directory.mkdir()
    key = generate_key()
    (directory / key.id).write_text(base64.b64encode(key.material).decode())
    (directory / "active").write_text(key.id)
    return {"SAGA_VAULT__KEYRING": "directory", "SAGA_VAULT__KEYRING_DIR": str(directory)}


def _environment_keys(tmp_path: Path) -> dict[str, str]:
    key = generate_key()
    value = f"{key.id}:{base64.b64encode(key.material).decode()}"
    return {"SAGA_VAULT__KEYRING": "env", "SAGA_VAULT__KEYS": value}


@pytest.mark.parametrize("source", [_mounted_secret, _environment_keys], ids=["directory", "env"])
async def test_a_read_only_keyring_serves_but_refuses_rotation(
    tmp_path: Path, source: Callable[[Path], dict[str, str]]
) -> None:
    env = source(tmp_path)
    async with stack_for(tmp_path, ["vault"], **env) as stack:
        async with stack.channel_as("auth", "vault") as ch:
            vault = vault_pb2_grpc.VaultServiceStub(ch)
            await vault.PutSecret(
                vault_pb2.PutSecretRequest(owner="user:u", name="t", payload=PAYLOAD), timeout=5
            )
        assert await read_secret(stack) == (grpc.StatusCode.OK, "")
        async with stack.channel_as("gateway", "vault") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await vault_pb2_grpc.VaultServiceStub(ch).RotateKey(
                    vault_pb2.RotateKeyRequest(), timeout=5
                )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert describe(err.value).reason == "KEYRING_READ_ONLY"
        assert "restart the vault, then call Rewrap" in str(err.value.details())
        assert not (tmp_path / "vault" / "keyring.json").exists()
        log = stack.read_log("vault")
        assert '"serving"' in log  # the log was captured
        assert all(v.split(":")[-1] not in log for k, v in env.items() if k.endswith("KEYS"))
