"""Operator and usage calls through the gateway: scopes checked at the edge, then relayed to
the owning service with reason and domain intact; sign-up and sign-in limited per address."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from saga.gateway.v1 import (
    account_pb2,
    account_pb2_grpc,
    admin_pb2,
    admin_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)
from saga.vault.v1 import status_pb2
from services.common.status import describe
from tests.e2e.test_execute import bearer, completes, create_key
from tests.harness import Stack, stack_for


async def test_admin_rpcs_need_the_admin_scope(stack: Stack) -> None:
    narrow, _ = await create_key(stack, ["execute"])
    async with stack.gateway_channel() as ch:
        admin = admin_pb2_grpc.AdminServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await admin.ListProviders(
                admin_pb2.ListProvidersRequest(), metadata=bearer(narrow), timeout=10
            )
        assert (err.value.code(), describe(err.value).reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "SCOPE_MISSING",
        )
        listed = await admin.ListProviders(
            admin_pb2.ListProvidersRequest(), metadata=bearer(stack.admin_key()), timeout=10
        )
    assert {p.name for p in listed.providers} == {"sim-fast", "sim-smart"}


async def test_vault_status_is_relayed_to_an_admin(stack: Stack) -> None:
    async with stack.gateway_channel() as ch:
        reply = await admin_pb2_grpc.AdminServiceStub(ch).GetVaultStatus(
            admin_pb2.GetVaultStatusRequest(), metadata=bearer(stack.admin_key()), timeout=10
        )
    assert reply.status.state == status_pb2.VAULT_STATE_SERVING
    assert reply.status.active_key_id


async def test_an_upstream_refusal_keeps_its_reason_and_domain(stack: Stack) -> None:
    async with stack.gateway_channel() as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await admin_pb2_grpc.AdminServiceStub(ch).SetProviderKey(
                admin_pb2.SetProviderKeyRequest(provider="no-such-provider", api_key="sk-x"),
                metadata=bearer(stack.admin_key()),
                timeout=10,
            )
    details = describe(err.value)
    assert details.domain == "auth.saga"
    assert err.value.code() in (
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_usage_of_others_needs_read_all(stack: Stack) -> None:
    # The reader key belongs to the admin user, who has just run something: its own usage
    # must show that run (the outbox ships it in the background: poll, bounded).
    assert await completes(stack, stack.admin_key())
    reader, _ = await create_key(stack, ["usage:read"])
    async with stack.gateway_channel() as ch:
        usage = usage_pb2_grpc.UsageServiceStub(ch)
        for _ in range(100):
            own = await usage.GetUsage(
                usage_pb2.GetUsageRequest(), metadata=bearer(reader), timeout=10
            )
            if own.totals.calls:
                break
            await asyncio.sleep(0.1)
        assert own.totals.calls >= 1
        assert own.totals.output_tokens >= 1
        for request in (
            usage_pb2.GetUsageRequest(all_users=True),
            usage_pb2.GetUsageRequest(user_id="usr_someone_else"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await usage.GetUsage(request, metadata=bearer(reader), timeout=10)
            assert describe(err.value).reason == "SCOPE_MISSING"
        everyone = await usage.GetUsage(
            usage_pb2.GetUsageRequest(all_users=True),
            metadata=bearer(stack.admin_key()),
            timeout=10,
        )
        assert everyone.totals.calls >= own.totals.calls


async def test_sign_in_is_limited_per_client_address(tmp_path: Path) -> None:
    async with stack_for(tmp_path, SAGA_GATEWAY__ACCOUNT_CALLS_PER_MINUTE="3") as limited:
        async with limited.gateway_channel() as ch:
            account = account_pb2_grpc.AccountServiceStub(ch)
            errors = []
            for _ in range(4):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await account.Login(
                        account_pb2.LoginRequest(email="nobody@example.com", password="x" * 12),
                        timeout=10,
                    )
                errors.append(describe(err.value))
        # The first three reach auth (which refuses the unknown account); the fourth is stopped
        # at the edge with RetryInfo and QuotaFailure.
        assert [e.domain for e in errors[:3]] == ["auth.saga"] * 3
        limited_error = errors[3]
        assert (limited_error.reason, limited_error.domain) == ("RATE_LIMITED", "gateway.saga")
        assert limited_error.retry_after is not None
        assert limited_error.retry_after > 0
        assert [q.subject for q in limited_error.quota_violations] == ["address:127.0.0.1"]


async def test_a_key_created_without_scopes_gets_the_callers(stack: Stack) -> None:
    async with stack.gateway_channel() as ch:
        reply = await account_pb2_grpc.AccountServiceStub(ch).CreateApiKey(
            account_pb2.CreateApiKeyRequest(name="all-mine"),
            metadata=bearer(stack.admin_key()),
            timeout=10,
        )
    assert "admin" in reply.info.scopes
    assert "execute" in reply.info.scopes
