"""Circuit breakers over real processes: a provider's circuit opens after consecutive
failures — also when it is alone in its group, which then fails fast — shows in
ListProviders and Prometheus, keeps the provider out of fallback chains, and closes again
after the cooldown when its one probe succeeds; an authentication failure opens it at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest

from saga.router.v1 import providers_pb2, router_pb2, router_pb2_grpc
from services.common.status import describe
from tests.harness import Stack, stack_for
from tests.integration.test_router_reason import (
    Streamed,
    mint,
    new_execution_id,
    request,
    stream_reason,
)

PROVIDERS = """
[[providers]]
name = "lonely"
kind = "sim"
model = "sim-lonely"
max_retries = 0
[providers.sim]
token_interval_ms = 5
tokens = 4
fail = "unavailable"
fail_calls = 3

[[providers]]
name = "backup"
kind = "sim"
model = "sim-backup"
[providers.sim]
token_interval_ms = 5
tokens = 4

[[providers]]
name = "locked"
kind = "sim"
model = "sim-locked"
[providers.sim]
fail = "unauthenticated"
"""

COOLDOWN_SECONDS = 1.5
OPEN, CLOSED = providers_pb2.CIRCUIT_STATE_OPEN, providers_pb2.CIRCUIT_STATE_CLOSED


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with stack_for(
        tmp_path_factory.mktemp("circuits"),
        ["auth", "optimizer", "router"],
        config=PROVIDERS,
        SAGA_ROUTER__CIRCUIT_CONSECUTIVE_FAILURES="3",
        SAGA_ROUTER__CIRCUIT_COOLDOWN_SECONDS=str(COOLDOWN_SECONDS),
        SAGA_OPTIMIZER__SUCCESS_RATE_FLOOR="0",
    ) as s:
        yield s


@pytest.fixture
async def runtime(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with stack.channel_as("runtime", "router") as ch:
        yield ch


async def reason(ch: grpc.aio.Channel, stack: Stack, **options: object) -> Streamed:
    exe = new_execution_id()
    return await stream_reason(ch, request(exe, **options), mint(stack, exe))


async def circuits(stack: Stack) -> dict[str, tuple[int, bool]]:
    async with stack.channel_as("gateway", "router") as ch:
        reply = await router_pb2_grpc.RouterServiceStub(ch).ListProviders(
            router_pb2.ListProvidersRequest(), timeout=5
        )
    return {p.name: (p.circuit_state, p.healthy) for p in reply.providers}


async def gauge(stack: Stack, provider: str) -> float:
    url = f"http://127.0.0.1:{stack.ports['router'].metrics_port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    prefix = f'saga_router_circuit_state{{provider="{provider}"}} '
    (line,) = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(line[len(prefix) :])


async def test_a_lone_provider_trips_fails_fast_and_recovers_after_the_cooldown(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    assert (await circuits(stack))["lonely"] == (CLOSED, True)
    for _ in range(3):
        got = await reason(runtime, stack, pinned_provider="lonely")
        assert got.error is not None
        assert describe(got.error).reason == "PROVIDER_UNAVAILABLE"

    # Open: the call fails fast, before any attempt, and says when to come back.
    got = await reason(runtime, stack, pinned_provider="lonely")
    error = got.error
    assert error is not None
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    details = describe(error)
    assert (details.reason, details.domain, details.metadata) == (
        "CIRCUIT_OPEN",
        "router.saga",
        {"provider": "lonely"},
    )
    assert details.retry_after is not None
    assert 0 < details.retry_after <= COOLDOWN_SECONDS
    # No attempt: the only event says the provider was skipped, and why.
    assert [e.WhichOneof("event") for e in got.events] == ["skipped"]
    assert [(p.provider, p.reason) for p in got.events[0].skipped.providers] == [
        ("lonely", "CIRCUIT_OPEN")
    ]
    assert (await circuits(stack))["lonely"] == (OPEN, False)
    assert await gauge(stack, "lonely") == OPEN
    assert await gauge(stack, "backup") == CLOSED

    # Open circuits are left out of fallback chains: the call goes straight to the backup.
    got = await reason(
        runtime, stack, preferred_providers=["lonely", "backup"], allow_fallback=True
    )
    assert got.error is None
    # ...and the caller is told it was skipped, and why, before that attempt.
    assert got.kinds()[:3] == ["skipped", "attempt", "delta"]
    assert [(p.provider, p.reason) for p in got.events[0].skipped.providers] == [
        ("lonely", "CIRCUIT_OPEN")
    ]
    assert got.events[1].attempt.provider == "backup"

    # After the cooldown, one probe; the provider has recovered (only 3 calls failed).
    await asyncio.sleep(details.retry_after + 0.2)
    got = await reason(runtime, stack, pinned_provider="lonely")
    assert got.error is None, describe(got.error)
    assert (await circuits(stack))["lonely"] == (CLOSED, True)
    assert await gauge(stack, "lonely") == CLOSED


async def test_an_auth_failure_opens_the_circuit_at_once_and_moves_on(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    got = await reason(
        runtime, stack, preferred_providers=["locked", "backup"], allow_fallback=True
    )
    assert got.error is None
    assert got.kinds()[:3] == ["attempt", "switched", "attempt"]
    switched = got.events[1].switched
    assert (switched.from_provider, switched.to_provider, switched.reason) == (
        "locked",
        "backup",
        "PROVIDER_AUTH_FAILED",
    )
    assert (await circuits(stack))["locked"] == (OPEN, False)
    refused = await reason(runtime, stack, pinned_provider="locked")
    assert refused.error is not None
    assert describe(refused.error).reason == "CIRCUIT_OPEN"
