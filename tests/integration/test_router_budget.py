"""Budgets over real processes: the router reserves a call's maximum cost with the optimizer
before any provider is called — a refusal reaches the caller unchanged and the provider (a
fake Ollama server that counts its requests) is never called —, ranks by CHEAPEST when the
optimizer says the user is near the limit, and fails closed when the optimizer cannot be
asked."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import grpc
import pytest

from saga.execution.v1 import common_pb2
from services.common.status import describe
from tests.fakes.providers import FakeProviders
from tests.harness import Stack, stack_for
from tests.integration.test_router_resilience import call

BUDGET_MICRO_USD = 1000
QUALITY = common_pb2.STRATEGY_QUALITY


@pytest.fixture(scope="module")
async def fakes() -> AsyncIterator[FakeProviders]:
    async with FakeProviders() as f:
        yield f


@pytest.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, fakes: FakeProviders
) -> AsyncIterator[Stack]:
    config = f"""
[budgets]
per_user_micro_usd = {BUDGET_MICRO_USD}
period = "day"
degrade_ratio = 0.5

[[providers]]
name = "local"
kind = "ollama"
model = "ollama-model"
base_url = "{fakes.base_url("ollama")}"
input_micro_usd_per_mtok = 1_000_000
output_micro_usd_per_mtok = 2_000_000
quality = 0.5

[[providers]]
name = "dear"
kind = "sim"
model = "sim-dear"
quality = 0.95
input_micro_usd_per_mtok = 2_000_000
output_micro_usd_per_mtok = 4_000_000

[[providers]]
name = "thrifty"
kind = "sim"
model = "sim-thrifty"
quality = 0.3
input_micro_usd_per_mtok = 500_000
output_micro_usd_per_mtok = 1_000_000
"""
    async with stack_for(
        tmp_path_factory.mktemp("budget"), ["auth", "optimizer", "router"], config=config
    ) as s:
        yield s


@pytest.fixture
async def runtime(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with stack.channel_as("runtime", "router") as ch:
        yield ch


def new_user() -> str:
    return "usr_budget_" + secrets.token_hex(4)


async def test_an_exhausted_budget_refuses_before_any_provider_call(
    stack: Stack, runtime: grpc.aio.Channel, fakes: FakeProviders
) -> None:
    user = new_user()
    fakes.reset()
    # 1000 tokens at 2 micro-USD each could cost twice the budget: refused up front.
    got = await call(stack, runtime, "hello there", user, max_tokens=1000, pinned_provider="local")
    assert got.error is not None
    assert got.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = describe(got.error)
    assert (details.reason, details.domain) == ("BUDGET_EXHAUSTED", "optimizer.saga")
    assert details.quota_violations
    assert got.events == []
    assert fakes.requests() == []
    # Positive control: a call whose maximum fits is answered, by one provider request.
    ok = await call(stack, runtime, "hello there", user, max_tokens=10, pinned_provider="local")
    assert ok.error is None, describe(ok.error)
    assert ok.kinds()[-1] == "final"
    assert len(fakes.requests("ollama")) == 1


async def test_near_the_limit_the_call_is_ranked_cheapest(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    user = new_user()
    # QUALITY ranks "dear" first once the optimizer's snapshot has arrived.
    for _ in range(100):
        first = await call(stack, runtime, "hi", user, max_tokens=10, strategy=QUALITY)
        assert first.error is None, describe(first.error)
        if first.events[0].attempt.provider == "dear":
            break
        await asyncio.sleep(0.1)
    assert first.events[0].attempt.provider == "dear"
    # A reservation that takes the user past half the budget (degrade_ratio 0.5): cheapest.
    # "dear" could charge 4 micro-USD a token: 125 tokens reserve over 500.
    near = await call(stack, runtime, "hi", user, max_tokens=125, strategy=QUALITY)
    assert near.error is None, describe(near.error)
    assert near.events[0].attempt.provider == "thrifty"


async def test_without_the_optimizer_a_budgeted_call_fails_closed(
    stack: Stack, runtime: grpc.aio.Channel, fakes: FakeProviders
) -> None:
    fakes.reset()
    assert await asyncio.to_thread(stack.stop, "optimizer") == 0
    try:
        got = await call(
            stack, runtime, "hello there", new_user(), max_tokens=10, pinned_provider="local"
        )
        assert got.error is not None
        assert got.error.code() == grpc.StatusCode.UNAVAILABLE
        details = describe(got.error)
        assert (details.reason, details.domain) == ("BUDGET_UNAVAILABLE", "router.saga")
        assert details.retry_after is not None
        assert fakes.requests() == []
    finally:
        stack.start("optimizer")
        await stack.wait_serving("optimizer")
    # Positive control: with the optimizer back, the same call is answered.
    for _ in range(100):  # the router's channel reconnects within its backoff
        ok = await call(
            stack, runtime, "hello there", new_user(), max_tokens=10, pinned_provider="local"
        )
        if ok.error is None:
            break
        await asyncio.sleep(0.1)
    assert ok.error is None, describe(ok.error)


async def test_near_the_limit_a_call_preferring_a_cheap_provider_is_admitted(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    user = new_user()
    # 300 tokens: "thrifty" may charge ~300 micro-USD, "local" ~600, "dear" ~1,200 — past the
    # budget of 1,000. The call prefers "thrifty": it fits, and is answered by it; "dear" is
    # passed over (said in the events), never reserved for.
    got = await call(
        stack,
        runtime,
        "hi",
        user,
        max_tokens=300,
        preferred_providers=["thrifty"],
        allow_fallback=True,
    )
    assert got.error is None, describe(got.error)
    attempts = [e.attempt.provider for e in got.events if e.HasField("attempt")]
    assert attempts == ["thrifty"]
    skipped = [
        (s.provider, s.reason)
        for e in got.events
        if e.HasField("skipped")
        for s in e.skipped.providers
    ]
    assert ("dear", "BUDGET_EXHAUSTED") in skipped
    # Control: a call only "dear" may answer would exceed the budget: refused, nothing run.
    over = await call(stack, runtime, "hi", new_user(), max_tokens=300, allowed_providers=["dear"])
    assert over.error is not None
    assert over.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = describe(over.error)
    assert details.reason == "BUDGET_EXHAUSTED"
    assert details.quota_violations
    assert over.events == []
