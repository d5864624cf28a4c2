"""Retries, fallback, mid-stream continuation and per-provider limits over real processes
(auth, optimizer, router), with sim providers that fail on purpose.

Circuits are kept shut here (test_router_circuits covers them), and the optimizer ranks
failing providers anyway (success-rate floor 0), so `preferred_providers` decides the order.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest

from saga.execution.v1 import records_pb2
from saga.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
from saga.router.v1 import router_pb2, router_pb2_grpc
from services.common.context import ContextSigner, load_private_key
from services.common.status import describe
from services.router.continuation import CONTINUE_INSTRUCTION
from tests.harness import Stack, stack_for
from tests.integration.test_router_reason import (
    NO_CIRCUITS,
    Streamed,
    collapse,
    new_execution_id,
    request,
    stream_reason,
)

PROVIDERS = """
[[providers]]
name = "cheap"
kind = "sim"
model = "sim-cheap"
input_micro_usd_per_mtok = 1_000_000
output_micro_usd_per_mtok = 2_000_000
[providers.sim]
token_interval_ms = 10
tokens = 6

[[providers]]
name = "flaky"
kind = "sim"
model = "sim-flaky"
max_retries = 2
[providers.sim]
token_interval_ms = 10
tokens = 6
fail = "unavailable"
fail_calls = 1

[[providers]]
name = "down"
kind = "sim"
model = "sim-down"
max_retries = 0
[providers.sim]
fail = "unavailable"

[[providers]]
name = "limited"
kind = "sim"
model = "sim-limited"
max_retries = 0
[providers.sim]
fail = "rate_limited"

[[providers]]
name = "refuses"
kind = "sim"
model = "sim-refuses"
[providers.sim]
fail = "invalid_argument"

[[providers]]
name = "cut"
kind = "sim"
model = "sim-cut"
max_retries = 0
input_micro_usd_per_mtok = 3_000_000
output_micro_usd_per_mtok = 5_000_000
[providers.sim]
token_interval_ms = 10
tokens = 6
fail = "unavailable"
fail_after_tokens = 3

[[providers]]
name = "small"
kind = "sim"
model = "sim-small"
context_window = 4000
[providers.sim]
fail = "context_length"

[[providers]]
name = "large"
kind = "sim"
model = "sim-large"
context_window = 200000
[providers.sim]
tokens = 4

[[providers]]
name = "single"
kind = "sim"
model = "sim-single"
max_concurrency = 1
rpm = 600
tpm = 1000000
[providers.sim]
token_interval_ms = 100
tokens = 6
"""

SUCCEEDED, FAILED = 1, 2


def mint_for(stack: Stack, execution_id: str, user_id: str) -> str:
    signer = ContextSigner(load_private_key(stack.data_dir / "keys" / "context.key"), 900)
    return signer.mint(
        execution_id=execution_id,
        user_id=user_id,
        tenant="t1",
        scopes=["execute"],
        credential_id="key_test",
        ttl_seconds=60,
    )


async def call(
    stack: Stack,
    ch: grpc.aio.Channel,
    text: str = "tell me about sagas",
    user: str = "usr_test",
    **options: object,
) -> Streamed:
    exe = new_execution_id()
    req = request(exe, text, **options)
    req.accounting.user_id = user
    return await stream_reason(ch, req, mint_for(stack, exe, user))


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with stack_for(
        tmp_path_factory.mktemp("resilience"),
        ["auth", "optimizer", "router"],
        config=PROVIDERS,
        SAGA_OPTIMIZER__SUCCESS_RATE_FLOOR="0",
        **NO_CIRCUITS,
    ) as s:
        yield s


@pytest.fixture
async def runtime(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with stack.channel_as("runtime", "router") as ch:
        yield ch


async def test_a_transient_failure_is_retried_on_the_same_provider(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    got = await call(stack, runtime, pinned_provider="flaky")  # its first call fails
    assert got.error is None, describe(got.error)
    assert collapse(got.kinds()) == collapse(["attempt", "attempt"] + ["delta"] * 6 + ["final"])
    assert len(got.text().split()) == 6
    assert [(e.attempt.provider, e.attempt.n) for e in got.events[:2]] == [
        ("flaky", 1),
        ("flaky", 2),
    ]
    final = got.events[-1].final
    assert [(a.provider, a.n, a.status, a.error_reason) for a in final.attempts] == [
        ("flaky", 1, FAILED, "PROVIDER_UNAVAILABLE"),
        ("flaky", 2, SUCCEEDED, ""),
    ]
    assert final.provider == "flaky"


@pytest.mark.parametrize(
    ("failing", "reason"),
    [("down", "PROVIDER_UNAVAILABLE"), ("limited", "PROVIDER_RATE_LIMITED")],
)
async def test_a_failing_provider_falls_back_to_the_next(
    stack: Stack, runtime: grpc.aio.Channel, failing: str, reason: str
) -> None:
    got = await call(
        stack,
        runtime,
        "what is a ledger",
        preferred_providers=[failing, "cheap"],
        allow_fallback=True,
    )
    assert got.error is None, describe(got.error)
    assert collapse(got.kinds()) == collapse(
        ["attempt", "switched", "attempt"] + ["delta"] * 6 + ["final"]
    )
    assert len(got.text().split()) == 6
    switched = got.events[1].switched
    assert (switched.from_provider, switched.to_provider, switched.reason) == (
        failing,
        "cheap",
        reason,
    )
    # The text is the second provider's, as it answers this prompt on its own.
    alone = await call(stack, runtime, "what is a ledger", pinned_provider="cheap")
    assert got.text() == alone.text()
    assert got.events[-1].final.provider == "cheap"
    # Negative control: without allow_fallback the failure ends the call.
    refused = await call(stack, runtime, preferred_providers=[failing, "cheap"])
    assert refused.error is not None
    assert describe(refused.error).reason == reason


async def test_an_input_error_stops_the_call(stack: Stack, runtime: grpc.aio.Channel) -> None:
    got = await call(stack, runtime, preferred_providers=["refuses", "cheap"], allow_fallback=True)
    assert got.error is not None
    assert got.error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = describe(got.error)
    assert (details.reason, details.domain) == ("PROVIDER_REJECTED_INPUT", "router.saga")
    assert got.kinds() == ["attempt"]
    # Positive control: the same request reaches an answer where the input is accepted.
    ok = await call(stack, runtime, preferred_providers=["cheap"], allow_fallback=True)
    assert ok.error is None


async def test_a_context_length_error_moves_to_a_larger_window(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    got = await call(stack, runtime, preferred_providers=["small", "large"], allow_fallback=True)
    assert got.error is None, describe(got.error)
    switched = got.events[1].switched
    assert (switched.from_provider, switched.to_provider, switched.reason) == (
        "small",
        "large",
        "PROVIDER_CONTEXT_LENGTH_EXCEEDED",
    )
    assert got.events[-1].final.provider == "large"


async def usage_rows(
    stack: Stack, user: str, expected_calls: int
) -> dict[str, records_pb2.UsageRow]:
    """GetUsage of `user` by provider, once the optimizer has `expected_calls` attempts."""
    async with stack.channel_as("gateway", "optimizer") as ch:
        stub = optimizer_pb2_grpc.OptimizerServiceStub(ch)
        for _ in range(200):
            reply = await stub.GetUsage(
                optimizer_pb2.GetUsageRequest(
                    user_id=user, group_by=[records_pb2.USAGE_DIMENSION_PROVIDER]
                ),
                timeout=5,
            )
            if reply.totals.calls >= expected_calls:
                return {r.provider: r for r in reply.rows}
            await asyncio.sleep(0.05)
    raise AssertionError(f"the optimizer has {reply.totals.calls} calls of {user}")


async def test_a_stream_cut_midway_continues_on_the_next_provider(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    user = "usr_mid_" + secrets.token_hex(4)
    prompt = "tell me about sagas"
    got = await call(
        stack, runtime, prompt, user, preferred_providers=["cut", "cheap"], allow_fallback=True
    )
    assert got.error is None, describe(got.error)
    assert collapse(got.kinds()) == (
        collapse(["attempt"] + ["delta"] * 3 + ["switched", "attempt"] + ["delta"] * 6 + ["final"])
    )
    switched = got.events[4].switched
    assert (switched.from_provider, switched.to_provider, switched.reason) == (
        "cut",
        "cheap",
        "PROVIDER_UNAVAILABLE",
    )
    # One coherent text: what was sent before the cut, then the continuation — which is what
    # cheap answers when asked to continue that partial text (sim is deterministic).
    partial = "".join(e.delta.text for e in got.events[1:4])
    asked = router_pb2.ReasonRequest(
        messages=[
            router_pb2.Message(role=router_pb2.ROLE_USER, content=prompt),
            router_pb2.Message(role=router_pb2.ROLE_ASSISTANT, content=partial),
            router_pb2.Message(role=router_pb2.ROLE_USER, content=CONTINUE_INSTRUCTION),
        ],
        pinned_provider="cheap",
    )
    exe = new_execution_id()
    asked.accounting.execution_id = exe
    continuation = await stream_reason(runtime, asked, mint_for(stack, exe, "usr_test"))
    assert got.text() == partial + continuation.text()
    assert len(got.text().split()) == 3 + 6
    # Usage and cost are the sum over both attempts; the cut one is estimated and flagged.
    final = got.events[-1].final
    cut, rest = final.attempts
    assert (cut.provider, cut.status, cut.usage.estimated) == ("cut", FAILED, True)
    assert (rest.provider, rest.status, rest.usage.estimated) == ("cheap", SUCCEEDED, False)
    assert cut.usage.output_tokens > 0
    assert final.usage.input_tokens == cut.usage.input_tokens + rest.usage.input_tokens
    assert final.usage.output_tokens == cut.usage.output_tokens + rest.usage.output_tokens
    assert final.cost_micro_usd == cut.cost_micro_usd + rest.cost_micro_usd
    assert final.usage.estimated
    # Each attempt is its own outcome in the optimizer's ledger.
    rows = await usage_rows(stack, user, 2)
    assert set(rows) == {"cut", "cheap"}
    for attempt in (cut, rest):
        row = rows[attempt.provider]
        assert (row.calls, row.output_tokens, row.cost_micro_usd) == (
            1,
            attempt.usage.output_tokens,
            attempt.cost_micro_usd,
        )


async def test_max_concurrency_sends_the_overflow_elsewhere_or_refuses_it(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    # "single" holds its one slot for ~600 ms; the others wait 100 ms for it, then move on.
    results = await asyncio.gather(
        *(
            call(stack, runtime, preferred_providers=["single", "cheap"], allow_fallback=True)
            for _ in range(3)
        )
    )
    assert all(r.error is None for r in results), [describe(r.error) for r in results if r.error]
    assert sorted(r.events[-1].final.provider for r in results) == ["cheap", "cheap", "single"]
    # Nowhere else to go: the overflow is refused, before any attempt, with a wait.
    results = await asyncio.gather(
        *(call(stack, runtime, pinned_provider="single") for _ in range(3))
    )
    assert sum(r.error is None for r in results) == 1
    for refused in (r for r in results if r.error is not None):
        assert refused.error is not None
        assert refused.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = describe(refused.error)
        assert (details.reason, details.metadata) == (
            "PROVIDER_LIMIT_REACHED",
            {"provider": "single"},
        )
        assert details.retry_after is not None
        # No attempt: the only event says the provider was skipped, and why.
        assert [e.WhichOneof("event") for e in refused.events] == ["skipped"]
        assert [(p.provider, p.reason) for p in refused.events[0].skipped.providers] == [
            ("single", "PROVIDER_LIMIT_REACHED")
        ]


async def test_list_providers_shows_limits(stack: Stack) -> None:
    async with stack.channel_as("gateway", "router") as ch:
        reply = await router_pb2_grpc.RouterServiceStub(ch).ListProviders(
            router_pb2.ListProvidersRequest(), timeout=5
        )
    single = next(p for p in reply.providers if p.name == "single")
    assert (single.limits.max_concurrency, single.limits.rpm, single.limits.tpm) == (
        1,
        600,
        1000000,
    )
    assert single.limits.first_token_timeout_ms == 30_000
    assert single.limits.idle_timeout_ms == 15_000


async def test_fallbacks_are_counted_in_prometheus(stack: Stack, runtime: grpc.aio.Channel) -> None:
    got = await call(stack, runtime, preferred_providers=["down", "cheap"], allow_fallback=True)
    assert got.error is None
    url = f"http://127.0.0.1:{stack.ports['router'].metrics_port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    line = next(
        line
        for line in text.splitlines()
        if line.startswith("saga_router_fallbacks_total{")
        and 'from="down"' in line
        and 'to="cheap"' in line
        and 'reason="PROVIDER_UNAVAILABLE"' in line
    )
    assert float(line.rsplit(" ", 1)[1]) >= 1
    assert 'saga_router_circuit_state{provider="cheap"} 1.0' in text
