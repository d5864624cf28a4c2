"""A static provider key, end to end through the gateway with all six real processes: before
an operator sets it, Execute fails with auth's PROVIDER_KEY_NOT_SET and the provider is never
called; only an admin may set it (AdminService.SetProviderKey); then Execute streams the
provider's tokens and the provider saw exactly the stored key. The trace of that first
successful Execute — the router fetching the credential from auth, auth reading it from the
vault, the gateway verifying a caller it has never seen — spans all six services."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import grpc
import pytest

from saga.gateway.v1 import admin_pb2, admin_pb2_grpc, execution_pb2, execution_pb2_grpc
from services.common.status import describe
from tests.e2e.test_execute import bearer, chat, create_key
from tests.fakes.providers import FakeProviders, Script, answer_text
from tests.harness import Stack, stack_for
from tests.otlp import Collector

PROVIDER = "openai-main"
TOKENS = 7
ALL_SIX = {"gateway", "auth", "token-vault", "agent-runtime", "router", "optimizer"}

# A short cooldown: the refused credential (PROVIDER_KEY_NOT_SET) opens the provider's
# circuit at once (services/router/failures.py), and the successful Execute after the key is
# set must not wait the production 30 s for the probe.
COOLDOWN_SECONDS = 0.5


def keyed_config(fake: FakeProviders) -> str:
    """One provider only: OpenAI-compatible, keyed by the operator, at the fake."""
    return f"""
[router]
circuit_cooldown_seconds = {COOLDOWN_SECONDS}

[[providers]]
name = "{PROVIDER}"
kind = "openai"
model = "gpt-4o-mini"
base_url = "{fake.base_url("openai")}"
credential = "api_key"
input_micro_usd_per_mtok = 150_000
output_micro_usd_per_mtok = 600_000
first_token_timeout_ms = 5000
"""


async def execute(stack: Stack, key: str, prompt: str) -> list[execution_pb2.ExecuteResponse]:
    """Every event of one chat Execute through the gateway."""
    async with stack.gateway_channel() as ch:
        return [
            e
            async for e in execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
                chat(prompt), metadata=bearer(key), timeout=60
            )
        ]


async def execute_error(stack: Stack, key: str) -> grpc.aio.AioRpcError:
    """The error an Execute ends with."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await execute(stack, key, "is there a key yet")
    return err.value


async def set_provider_key(stack: Stack, caller_key: str, api_key: str) -> int:
    """AdminService.SetProviderKey through the gateway; the vault version written."""
    async with stack.gateway_channel() as ch:
        reply = await admin_pb2_grpc.AdminServiceStub(ch).SetProviderKey(
            admin_pb2.SetProviderKeyRequest(provider=PROVIDER, api_key=api_key),
            metadata=bearer(caller_key),
            timeout=10,
        )
    return int(reply.version)


async def test_a_provider_key_set_through_the_gateway_reaches_the_provider(
    tmp_path: Path,
) -> None:
    provider_key = f"sk-op-{secrets.token_urlsafe(24)}"
    collector = Collector()
    endpoint = await collector.start()
    fake = FakeProviders(api_key=provider_key)
    await fake.start()
    fake.defaults["openai"] = Script(tokens=TOKENS)
    trace_id = ""
    try:
        async with stack_for(
            tmp_path,
            config=keyed_config(fake),
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",
        ) as stack:
            admin = stack.admin_key()

            # No key yet: auth's reason reaches the client whole; the provider is never called.
            missing = await execute_error(stack, admin)
            details = describe(missing)
            assert (missing.code(), details.reason, details.domain) == (
                grpc.StatusCode.NOT_FOUND,
                "PROVIDER_KEY_NOT_SET",
                "auth.saga",
            )
            assert fake.requests() == []

            # Only an admin may set it: a key with scope execute is refused at the edge ...
            narrow, _ = await create_key(stack, ["execute"])
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await set_provider_key(stack, narrow, provider_key)
            refused = describe(err.value)
            assert (err.value.code(), refused.reason, refused.domain) == (
                grpc.StatusCode.PERMISSION_DENIED,
                "SCOPE_MISSING",
                "gateway.saga",
            )
            # ... and the admin's call succeeds (the positive control).
            assert await set_provider_key(stack, admin, provider_key) >= 1
            assert fake.requests() == []

            # A caller the gateway has never verified, on caches that never held the key.
            fresh, _ = await create_key(stack, ["execute"])
            await asyncio.sleep(COOLDOWN_SECONDS * 2)  # the circuit the missing key opened
            events = await execute(stack, fresh, "now with a key")
            kinds = [e.WhichOneof("event") for e in events]
            assert (kinds[0], kinds[-1]) == ("accepted", "completed")
            text = "".join(e.token.text for e in events if e.WhichOneof("event") == "token")
            assert text == answer_text(TOKENS)
            assert events[-1].completed.outputs["text"] == text
            trace_id = events[0].accepted.trace_id

            # The provider received exactly the stored key, and nothing else.
            seen = fake.requests()
            assert seen
            assert {s.headers.get("Authorization") for s in seen} == {f"Bearer {provider_key}"}
            assert all(s.authorized for s in seen)

            for _ in range(100):  # the optimizer records the outcome after the stream ends
                if {s.service for s in collector.spans if s.trace_id == trace_id} >= ALL_SIX:
                    break
                await asyncio.sleep(0.1)
    finally:
        await collector.stop()
        await fake.stop()

    spans = [s for s in collector.spans if s.trace_id == trace_id]
    assert {s.service for s in spans} == ALL_SIX
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if not s.parent_id]
    assert [r.service for r in roots] == ["gateway"]
    assert all(s.parent_id in ids for s in spans if s.parent_id), "a span's parent is missing"
    names = {(s.service, s.name) for s in spans}
    # The cold paths: the gateway verified the new caller, the router fetched the key from
    # auth, and auth read it from the vault — all inside this one trace.
    assert ("auth", "/saga.auth.v1.AuthService/Authenticate") in names
    assert ("auth", "/saga.auth.v1.AuthService/GetProviderCredential") in names
    assert ("token-vault", "/saga.vault.v1.VaultService/GetSecret") in names
    assert ("router", "/saga.router.v1.RouterService/Reason") in names
