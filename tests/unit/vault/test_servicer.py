"""The vault servicer audits every call the same way — one row with the caller and how the
call ended — the Rewrap stream included: done, refused, failed, or abandoned by its client.
Served in process behind the guard (`tests.inprocess.serve`), over a real channel: what auth
writes it reads back, a refusal arrives with its reason and domain, and a caller outside the
call matrix is refused. The process — mTLS, keyring files, sealing, logs — is
tests/integration/test_vault_*.py's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from saga.vault.v1 import vault_pb2, vault_pb2_grpc
from services.common.errors import SagaError
from services.common.server import Registration
from services.common.status import describe
from services.vault.audit import AuditLog
from services.vault.barrier import Barrier
from services.vault.keyring_sources import FileKeyring
from services.vault.servicer import VaultServicer
from services.vault.store import SecretStore
from tests.conftest import Backend
from tests.inprocess import as_caller, serve

CONTEXT = object()  # what grpc would pass; the identify function below names the caller
PAYLOAD = b"sk-in-process-5d2c9e"
OWNER = "provider:openai"
NAME = "openai-api-key"


@dataclass
class Served:
    """A servicer over a fresh vault, called as the gateway."""

    servicer: VaultServicer
    barrier: Barrier
    audit: AuditLog

    async def rows(self) -> list[tuple[str, str, str]]:
        """(caller, operation, outcome) of every audit row, oldest first."""
        return [(e.caller, e.operation, e.outcome) for e in reversed(await self.audit.recent())]

    async def rotated_with_rows(self, rows: int) -> None:
        """`rows` secrets under a key that is then rotated out (so a rewrap has work)."""
        for i in range(rows):
            await self.barrier.put("o", f"s{i}", b"p", {})
        await self.servicer.RotateKey(vault_pb2.RotateKeyRequest(), CONTEXT)


@pytest.fixture
async def served(backend: Backend, tmp_path: Path) -> AsyncIterator[Served]:
    source = FileKeyring(tmp_path / "keyring.json")
    store = await SecretStore.open(backend.url, backend.namespace, tmp_path)
    barrier = await Barrier.open(store, source, source.load())
    audit = AuditLog(store, lambda: barrier.keyring)
    try:
        yield Served(VaultServicer(barrier, audit, lambda _: "gateway", 1), barrier, audit)
    finally:
        await store.close()


async def test_a_rewrap_is_audited_once_with_its_caller_and_outcome(served: Served) -> None:
    await served.rotated_with_rows(2)
    stream = served.servicer.Rewrap(vault_pb2.RewrapRequest(), CONTEXT)
    reports = [r async for r in stream]
    assert [(r.rows_done, r.done) for r in reports] == [(1, False), (2, False), (2, True)]
    assert await served.rows() == [("gateway", "RotateKey", "OK"), ("gateway", "Rewrap", "OK")]


async def test_a_refused_rewrap_is_audited_with_its_reason(served: Served) -> None:
    stream = served.servicer.Rewrap(vault_pb2.RewrapRequest(batch_size=-1), CONTEXT)
    with pytest.raises(SagaError) as refused:
        await anext(stream)
    assert refused.value.reason == "BATCH_SIZE_INVALID"
    assert await served.rows() == [("gateway", "Rewrap", "BATCH_SIZE_INVALID")]


async def test_a_rewrap_that_fails_unexpectedly_is_audited_internal(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(key_id: str) -> int:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(served.barrier.store, "count_not_under", broken)
    with pytest.raises(RuntimeError):
        await anext(served.servicer.Rewrap(vault_pb2.RewrapRequest(), CONTEXT))
    assert await served.rows() == [("gateway", "Rewrap", "INTERNAL")]


async def test_a_rewrap_whose_client_leaves_between_reports_is_audited_cancelled(
    served: Served,
) -> None:
    await served.rotated_with_rows(2)
    stream = served.servicer.Rewrap(vault_pb2.RewrapRequest(), CONTEXT)
    first = await anext(stream)
    await stream.aclose()  # what grpc does with the stream of a client that went away
    assert (first.rows_done, first.done) == (1, False)
    assert (await served.rows())[-1] == ("gateway", "Rewrap", "CANCELLED")


async def test_a_rewrap_cancelled_mid_batch_is_still_audited(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered = asyncio.Event()

    async def stuck(key_id: str) -> int:
        entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    monkeypatch.setattr(served.barrier.store, "count_not_under", stuck)
    handler = asyncio.ensure_future(
        anext(served.servicer.Rewrap(vault_pb2.RewrapRequest(), CONTEXT))
    )
    await entered.wait()
    handler.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handler
    assert await served.rows() == [("gateway", "Rewrap", "CANCELLED")]


async def test_unary_calls_are_audited_by_the_same_rule(served: Served) -> None:
    await served.servicer.PutSecret(
        vault_pb2.PutSecretRequest(owner="o", name="n", payload=b"p"), CONTEXT
    )
    with pytest.raises(SagaError):
        await served.servicer.GetSecret(vault_pb2.GetSecretRequest(owner="o", name="x"), CONTEXT)
    await served.servicer.GetStatus(vault_pb2.GetStatusRequest(), CONTEXT)
    assert await served.rows() == [
        ("gateway", "PutSecret", "OK"),
        ("gateway", "GetSecret", "SECRET_NOT_FOUND"),
        ("gateway", "GetStatus", "OK"),
    ]


def as_auth(served: Served) -> Registration:
    """The same vault's servicer as auth reaches it (auth alone may read and write secrets)."""
    return Registration.of(VaultServicer(served.barrier, served.audit, as_caller("auth"), 1))


async def test_auth_writes_and_reads_over_the_wire_and_a_refusal_keeps_its_reason(
    served: Served,
) -> None:
    async with serve("vault", as_auth(served), caller="auth") as channel:
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
    assert await served.rows() == [
        ("auth", "PutSecret", "OK"),
        ("auth", "GetSecret", "OK"),
        ("auth", "GetSecret", "SECRET_NOT_FOUND"),
    ]


async def test_a_caller_outside_the_call_matrix_is_refused(served: Served) -> None:
    async with serve("vault", Registration.of(served.servicer), caller="gateway") as channel:
        stub = vault_pb2_grpc.VaultServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetSecret(vault_pb2.GetSecretRequest(owner=OWNER, name=NAME), timeout=5)
        # Positive control: what the gateway may call, it gets.
        status = await stub.GetStatus(vault_pb2.GetStatusRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert describe(err.value).reason == "CALLER_NOT_ALLOWED"
    assert status.status.active_key_id == served.barrier.keyring.active_id
