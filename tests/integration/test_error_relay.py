"""A status with ErrorInfo, RetryInfo and BadRequest survives a relay through one service to
the next, through the real bootstrap (guard, mTLS, peer channels) on loopback sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from saga.auth.v1 import auth_pb2, auth_pb2_grpc
from saga.vault.v1 import vault_pb2, vault_pb2_grpc
from services.common.config import Config, load_config
from services.common.errors import FailedPrecondition, FieldViolation
from services.common.server import Registration, RunningService, ServiceHost, start_service
from services.common.status import describe
from tests.harness import Stack


class SealedVault(vault_pb2_grpc.VaultServiceServicer):  # type: ignore[misc]
    """A vault whose every write fails with a rich status."""

    async def PutSecret(self, request: Any, context: Any) -> Any:
        raise FailedPrecondition(
            "the vault is sealed",
            reason="VAULT_SEALED",
            metadata={"keyId": "k-2026"},
            retry_after=2.5,
            field_violations=[FieldViolation("payload", "cannot be stored while sealed")],
        )


class RelayingAuth(auth_pb2_grpc.AuthServiceServicer):  # type: ignore[misc]
    """An auth whose SetProviderKey writes to the vault and does not catch its errors."""

    def __init__(self, host: ServiceHost) -> None:
        self.vault = vault_pb2_grpc.VaultServiceStub(host.peers.channel("vault"))

    async def SetProviderKey(self, request: Any, context: Any) -> Any:
        await self.vault.PutSecret(vault_pb2.PutSecretRequest(owner="providers", name="x"))
        return auth_pb2.SetProviderKeyResponse()

    async def Login(self, request: Any, context: Any) -> Any:
        raise RuntimeError("connect failed: postgresql://saga:hunter2@db/auth")


def config_for(stack: Stack) -> Config:
    env = stack.env()
    for service in ("auth", "vault"):
        env[f"SAGA_SERVICES__{service.upper()}__METRICS_PORT"] = "0"
    return load_config(env=env)


async def _vault(host: ServiceHost) -> list[Registration]:
    return [Registration.of(SealedVault())]


async def _auth(host: ServiceHost) -> list[Registration]:
    return [Registration.of(RelayingAuth(host))]


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[tuple[Stack, dict[str, RunningService]]]:
    stack = Stack.create(tmp_path)
    config = config_for(stack)
    running = {
        "vault": await start_service("vault", config, _vault),
        "auth": await start_service("auth", config, _auth),
    }
    try:
        yield stack, running
    finally:
        for service in running.values():
            await service.stop(0)


async def test_upstream_status_reaches_the_caller_intact(
    relay: tuple[Stack, dict[str, RunningService]],
) -> None:
    stack, _ = relay
    async with stack.channel_as("gateway", "auth") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await auth_pb2_grpc.AuthServiceStub(ch).SetProviderKey(
                auth_pb2.SetProviderKeyRequest(), timeout=5
            )
    details = describe(err.value)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == "the vault is sealed"
    assert (details.reason, details.domain) == ("VAULT_SEALED", "vault.saga")
    assert details.metadata == {"keyId": "k-2026"}
    assert details.retry_after == 2.5
    assert details.field_violations == [FieldViolation("payload", "cannot be stored while sealed")]


async def test_a_dead_upstream_is_reported_by_the_service_that_saw_it(
    relay: tuple[Stack, dict[str, RunningService]],
) -> None:
    stack, running = relay
    await running.pop("vault").stop(0)
    async with stack.channel_as("gateway", "auth") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await auth_pb2_grpc.AuthServiceStub(ch).SetProviderKey(
                auth_pb2.SetProviderKeyRequest(), timeout=5
            )
    details = describe(err.value)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (details.reason, details.domain) == ("UPSTREAM_UNAVAILABLE", "auth.saga")


async def test_an_unexpected_exception_is_internal_without_internals(
    relay: tuple[Stack, dict[str, RunningService]],
) -> None:
    stack, _ = relay
    async with stack.channel_as("gateway", "auth") as ch:
        stub = auth_pb2_grpc.AuthServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Login(auth_pb2.LoginRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert (describe(err.value).reason, err.value.details()) == ("INTERNAL", "internal error")
        assert "hunter2" not in str(err.value.trailing_metadata())
        # Positive control: an RPC the servicer never built is UNIMPLEMENTED, not INTERNAL.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetJwks(auth_pb2.GetJwksRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert describe(err.value).reason == "NOT_IMPLEMENTED"
