"""Active health checks over real processes: CheckProviders probes each named provider with
a one-token call through its engine and reports ok or the reason a call would fail with;
ListProviders' `healthy` follows the last probe; failed probes open a circuit and a
successful one closes it once half-open; a provider with per-user credentials is skipped;
an operator's key stored through the gateway reaches the provider's probe; the gateway's
AdminService relays CheckProviders to an admin; and with
`router.health_check_interval_seconds` set, probes run on their own — a failing provider
turns unhealthy, then open, without a single user call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from saga.gateway.v1 import admin_pb2, admin_pb2_grpc
from saga.router.v1 import providers_pb2, router_pb2, router_pb2_grpc
from services.common.status import describe
from tests.e2e.test_execute import bearer
from tests.fakes.providers import FakeProviders, Script
from tests.harness import Stack, stack_for

OPEN = providers_pb2.CIRCUIT_STATE_OPEN
CLOSED = providers_pb2.CIRCUIT_STATE_CLOSED
HALF_OPEN = providers_pb2.CIRCUIT_STATE_HALF_OPEN
COOLDOWN_SECONDS = 1.5
OPERATOR_KEY = "sk-health-operator-key"

SIMS = """
[[providers]]
name = "good"
kind = "sim"
model = "sim-good"
[providers.sim]
token_interval_ms = 5

[[providers]]
name = "down"
kind = "sim"
model = "sim-down"
[providers.sim]
fail = "unavailable"

[[providers]]
name = "personal"
kind = "sim"
model = "sim-personal"
credential = "oauth_user"
"""


def config(fake: FakeProviders) -> str:
    return (
        SIMS
        + f"""
[[providers]]
name = "flaky"
kind = "sim"
model = "sim-flaky"
[providers.sim]
fail = "unavailable"
fail_calls = 4

[[providers]]
name = "keyed"
kind = "openai"
model = "gpt-fake"
base_url = "{fake.base_url("openai")}"
credential = "api_key"
"""
    )


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeProviders]:
    async with FakeProviders(api_key=OPERATOR_KEY) as f:
        yield f


@pytest.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeProviders
) -> AsyncIterator[Stack]:
    async with stack_for(
        tmp_path_factory.mktemp("health"),
        config=config(fake),
        SAGA_ROUTER__CIRCUIT_CONSECUTIVE_FAILURES="2",
        SAGA_ROUTER__CIRCUIT_COOLDOWN_SECONDS=str(COOLDOWN_SECONDS),
    ) as s:
        yield s


async def check(stack: Stack, *names: str) -> dict[str, tuple[bool, str]]:
    """CheckProviders as the gateway calls it (its certificate)."""
    async with stack.channel_as("gateway", "router") as ch:
        reply = await router_pb2_grpc.RouterServiceStub(ch).CheckProviders(
            router_pb2.CheckProvidersRequest(providers=names), timeout=20
        )
    return {r.provider: (r.ok, r.error_reason) for r in reply.results}


async def listed(stack: Stack) -> dict[str, tuple[int, bool]]:
    async with stack.channel_as("gateway", "router") as ch:
        reply = await router_pb2_grpc.RouterServiceStub(ch).ListProviders(
            router_pb2.ListProvidersRequest(), timeout=10
        )
    return {p.name: (p.circuit_state, p.healthy) for p in reply.providers}


async def test_a_probe_reports_ok_or_the_reason_and_sets_healthy(stack: Stack) -> None:
    before = await listed(stack)
    assert before["good"] == (CLOSED, True)
    assert before["down"] == (CLOSED, True)  # nothing known of it yet: no call, no probe

    assert await check(stack, "good", "down") == {
        "good": (True, ""),
        "down": (False, "PROVIDER_UNAVAILABLE"),
    }
    after = await listed(stack)
    assert after["good"] == (CLOSED, True)
    assert after["down"] == (CLOSED, False)

    # A failed probe is a failure for the circuit: the second in a row opens it.
    assert await check(stack, "down") == {"down": (False, "PROVIDER_UNAVAILABLE")}
    assert (await listed(stack))["down"] == (OPEN, False)


async def test_a_successful_probe_closes_a_half_open_circuit(stack: Stack) -> None:
    for _ in range(2):  # flaky fails its first four calls: two probes of two calls
        assert await check(stack, "flaky") == {"flaky": (False, "PROVIDER_UNAVAILABLE")}
    assert (await listed(stack))["flaky"] == (OPEN, False)

    # In the cooldown the provider is probed (and answers) but the circuit stays open.
    assert await check(stack, "flaky") == {"flaky": (True, "")}
    assert (await listed(stack))["flaky"] == (OPEN, True)

    await asyncio.sleep(COOLDOWN_SECONDS + 0.2)
    assert (await listed(stack))["flaky"][0] == HALF_OPEN
    assert await check(stack, "flaky") == {"flaky": (True, "")}
    assert (await listed(stack))["flaky"] == (CLOSED, True)


async def test_unknown_names_are_refused(stack: Stack) -> None:
    async with stack.channel_as("gateway", "router") as ch:
        stub = router_pb2_grpc.RouterServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CheckProviders(
                router_pb2.CheckProvidersRequest(providers=["good", "no-such"]), timeout=10
            )
        reply = await stub.CheckProviders(
            router_pb2.CheckProvidersRequest(providers=["good"]), timeout=10
        )
    details = describe(err.value)
    assert (err.value.code(), details.reason, details.domain) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNKNOWN_PROVIDER",
        "router.saga",
    )
    assert "no-such" in details.field_violations[0].description
    assert [(r.provider, r.ok) for r in reply.results] == [("good", True)]


async def test_the_gateway_relays_checks_to_an_admin_with_the_operators_key(
    stack: Stack, fake: FakeProviders
) -> None:
    fake.reset()
    names = ["good", "personal", "keyed"]
    async with stack.gateway_channel() as ch:
        admin = admin_pb2_grpc.AdminServiceStub(ch)
        key = bearer(stack.admin_key())
        first = await admin.CheckProviders(
            admin_pb2.CheckProvidersRequest(providers=names), metadata=key, timeout=20
        )
        # No key stored yet: the probe fails with auth's reason, and the provider is not called.
        assert [(r.provider, r.ok, r.error_reason) for r in first.results] == [
            ("good", True, ""),
            ("personal", False, "SKIPPED_PER_USER_CREDENTIAL"),
            ("keyed", False, "PROVIDER_KEY_NOT_SET"),
        ]
        assert fake.requests("openai") == []

        await admin.SetProviderKey(
            admin_pb2.SetProviderKeyRequest(provider="keyed", api_key=OPERATOR_KEY),
            metadata=key,
            timeout=10,
        )
        second = await admin.CheckProviders(
            admin_pb2.CheckProvidersRequest(providers=["keyed"]), metadata=key, timeout=20
        )
    ((result,),) = [second.results]
    assert (result.provider, result.ok, result.error_reason) == ("keyed", True, "")
    seen = fake.requests("openai")
    assert [s.authorized for s in seen] == [True, True]
    assert [s.body.get("max_tokens") or s.body.get("max_completion_tokens") for s in seen] == [
        1,
        1,
    ]
    assert [s.streamed for s in seen] == [True, False]  # as calls stream, then COMPLETE mode


async def test_a_provider_whose_streams_break_is_not_healthy(
    stack: Stack, fake: FakeProviders
) -> None:
    async with stack.gateway_channel() as ch:
        admin = admin_pb2_grpc.AdminServiceStub(ch)
        key = bearer(stack.admin_key())
        await admin.SetProviderKey(
            admin_pb2.SetProviderKeyRequest(provider="keyed", api_key=OPERATOR_KEY),
            metadata=key,
            timeout=10,
        )
        fake.reset()
        fake.defaults["openai"] = Script(cut_after=0)  # streams cut at once; plain answers work
        try:
            broken = await admin.CheckProviders(
                admin_pb2.CheckProvidersRequest(providers=["keyed"]), metadata=key, timeout=20
            )
        finally:
            fake.defaults["openai"] = Script()
        unhealthy = (await listed(stack))["keyed"][1]
        healthy = await admin.CheckProviders(
            admin_pb2.CheckProvidersRequest(providers=["keyed"]), metadata=key, timeout=20
        )
    ((result,),) = [broken.results]
    assert (result.ok, result.stream.ok, result.complete.ok) == (False, False, True)
    assert result.error_reason == result.stream.error_reason != ""
    assert unhealthy is False
    # Positive control: with whole streams the same provider is healthy in both modes.
    ((control,),) = [healthy.results]
    assert (control.ok, control.stream.ok, control.complete.ok) == (True, True, True)
    assert (await listed(stack))["keyed"][1] is True


# --- periodic probes ----------------------------------------------------------------------


@pytest.fixture(scope="module")
async def periodic(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with stack_for(
        tmp_path_factory.mktemp("health-periodic"),
        ["auth", "optimizer", "router"],
        config=SIMS,
        SAGA_ROUTER__HEALTH_CHECK_INTERVAL_SECONDS="0.3",
        SAGA_ROUTER__CIRCUIT_CONSECUTIVE_FAILURES="3",
    ) as s:
        yield s


async def test_periodic_probes_flip_healthy_and_open_circuits_without_traffic(
    periodic: Stack,
) -> None:
    states: dict[str, tuple[int, bool]] = {}
    for _ in range(300):
        states = await listed(periodic)
        if states["down"] == (OPEN, False):
            break
        await asyncio.sleep(0.1)
    assert states["down"] == (OPEN, False)
    assert states["good"] == (CLOSED, True)
    assert states["personal"] == (CLOSED, True)  # skipped, never judged
    assert "provider probed" in periodic.read_log("router")


async def test_an_empty_list_probes_every_provider_in_order(periodic: Stack) -> None:
    async with periodic.channel_as("gateway", "router") as ch:
        reply = await router_pb2_grpc.RouterServiceStub(ch).CheckProviders(
            router_pb2.CheckProvidersRequest(), timeout=20
        )
    assert [(r.provider, r.ok) for r in reply.results] == [
        ("good", True),
        ("down", False),
        ("personal", False),
    ]
    assert [r.error_reason for r in reply.results[1:]] == [
        # Probed even while its circuit is open (the periodic probes opened it).
        "PROVIDER_UNAVAILABLE",
        "SKIPPED_PER_USER_CREDENTIAL",
    ]


async def test_the_periodic_task_stops_with_the_router(periodic: Stack) -> None:
    assert periodic.stop("router") == 0
