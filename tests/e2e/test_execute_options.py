"""What a caller can ask of a run, through the gateway, with all six services as real processes
and LLM providers played by fake HTTP servers (tests/fakes/providers.py), each its own server
so its request count is that provider's alone.

Covered: an allow-list (`allowed_providers`) and `disable_fallback` keep a failing call on the
chosen provider, with that provider's error (controls: without them the call falls back);
skipped providers (an open circuit) said in the run's events with the reason; the run's
`max_cost_micro_usd` refusing before any provider is called and stopping a stream that would
pass it; CUSTOM weights ranking the call; the options' bounds checked at the edge.

"first" is the cheaper provider (ranked first by CHEAPEST), "second" the better one by its
quality prior. Circuits stay shut on the `pair` stack; the circuit test has its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from saga.execution.v1 import common_pb2, options_pb2
from services.common.status import ErrorDetails, describe
from tests.e2e.test_resilience_gateway import (
    KEEP_CIRCUITS_SHUT,
    RANK_FAILING_PROVIDERS,
    Run,
    execute,
    fakes,
    provider_toml,
    usage_by_provider,
)
from tests.fakes.providers import FakeProviders, Script, answer_text
from tests.harness import Stack, metric, stack_for

CHEAPEST = common_pb2.STRATEGY_CHEAPEST
CUSTOM = common_pb2.STRATEGY_CUSTOM
WEIGHTS = options_pb2.StrategyWeights
FIRST_TOKENS, SECOND_TOKENS = 4, 7
"""How many tokens each provider answers (so a text names its author)."""


def two_providers(a: FakeProviders, b: FakeProviders, **fields: Any) -> str:
    """ "first" (cheap, low quality prior) on `a`, "second" (dearer, better) on `b`."""
    return provider_toml(
        "first",
        a,
        "ollama",
        credential="none",
        max_retries=0,
        quality=0.1,
        input_micro_usd_per_mtok=1_000_000,
        output_micro_usd_per_mtok=1_000_000,
        **fields,
    ) + provider_toml(
        "second",
        b,
        "ollama",
        credential="none",
        max_retries=0,
        quality=0.9,
        input_micro_usd_per_mtok=3_000_000,
        output_micro_usd_per_mtok=3_000_000,
        **fields,
    )


@dataclass
class Pair:
    stack: Stack
    a: FakeProviders
    b: FakeProviders

    def counts(self) -> tuple[int, int]:
        return len(self.a.requests()), len(self.b.requests())

    async def execute(self, prompt: str = "what is a saga", **options: Any) -> Run:
        return await execute(self.stack, prompt, **options)


@pytest.fixture(scope="module")
async def pair(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pair]:
    async with fakes(2) as (a, b):
        env = KEEP_CIRCUITS_SHUT | RANK_FAILING_PROVIDERS
        path = tmp_path_factory.mktemp("options")
        async with stack_for(path, config=two_providers(a, b), **env) as stack:
            yield Pair(stack, a, b)


@pytest.fixture
async def healthy(pair: Pair) -> Pair:
    pair.a.defaults["ollama"] = Script(tokens=FIRST_TOKENS)
    pair.b.defaults["ollama"] = Script(tokens=SECOND_TOKENS)
    return pair


def failed_with(run: Run, code: grpc.StatusCode, reason: str) -> ErrorDetails:
    assert run.error is not None, run.kinds()
    described = describe(run.error)
    assert run.error.code() == code, described
    assert described.reason == reason, described
    return described


# --- 1. allow-list and no fallback ----------------------------------------------------------


async def test_an_allow_list_of_one_failing_provider_fails_with_its_error(healthy: Pair) -> None:
    pair = healthy
    # Control: "first" fails, the call falls back to "second".
    before_a, before_b = pair.counts()
    pair.a.script("ollama", Script(fail="server_error"))
    control = await pair.execute(strategy=CHEAPEST)
    assert control.error is None, describe(control.error)
    assert control.switches() == [("first", "second", "PROVIDER_UNAVAILABLE")]
    assert control.provider == "second"
    assert pair.counts() == (before_a + 1, before_b + 1)

    # Only "first" allowed: its failure ends the call and "second" is never called.
    before_a, before_b = pair.counts()
    pair.a.script("ollama", Script(fail="server_error"))
    run = await pair.execute(strategy=CHEAPEST, allowed_providers=["first"])
    failed_with(run, grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    assert run.switches() == []
    assert pair.counts() == (before_a + 1, before_b)

    # Only "second" allowed: it answers although CHEAPEST ranks "first" first.
    before_a, before_b = pair.counts()
    run = await pair.execute(strategy=CHEAPEST, allowed_providers=["second"])
    assert run.provider == "second"
    assert run.text() == answer_text(SECOND_TOKENS)
    assert pair.counts() == (before_a, before_b + 1)


async def test_disable_fallback_fails_with_the_first_providers_error(healthy: Pair) -> None:
    pair = healthy
    before_a, before_b = pair.counts()
    pair.a.script("ollama", Script(fail="server_error"))
    run = await pair.execute(strategy=CHEAPEST, disable_fallback=True)
    failed_with(run, grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    assert pair.counts() == (before_a + 1, before_b)
    # Control: the same failure without the opt-out falls back.
    pair.a.script("ollama", Script(fail="server_error"))
    control = await pair.execute(strategy=CHEAPEST)
    assert control.provider == "second"
    assert pair.counts() == (before_a + 2, before_b + 1)


async def test_an_unknown_allowed_provider_is_refused_naming_the_field(healthy: Pair) -> None:
    before = healthy.counts()
    run = await healthy.execute(allowed_providers=["first", "nope"])
    described = failed_with(run, grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_PROVIDER")
    assert [v.field for v in described.field_violations] == ["allowed_providers"]
    assert healthy.counts() == before


# --- 3. the run's cost limit ----------------------------------------------------------------


async def test_a_cost_limit_no_provider_can_meet_is_refused_before_any_call(
    healthy: Pair,
) -> None:
    pair = healthy
    before = pair.counts()
    run = await pair.execute(max_cost_micro_usd=1)
    described = failed_with(run, grpc.StatusCode.RESOURCE_EXHAUSTED, "COST_LIMIT_EXCEEDED")
    assert described.metadata["limitMicroUsd"] == "1"
    assert [q.subject for q in described.quota_violations] == ["max_cost_micro_usd"]
    assert pair.counts() == before  # no provider was called
    # Control: a limit the answer fits runs and costs what it says, within the limit.
    ok = await pair.execute(strategy=CHEAPEST, max_cost_micro_usd=1000)
    assert ok.completed.cost_micro_usd <= 1000
    assert ok.provider == "first"


async def test_a_stream_that_would_pass_the_cost_limit_is_stopped(healthy: Pair) -> None:
    pair = healthy
    pair.a.script("ollama", Script(tokens=400, interval=0.002))
    before_a, before_b = pair.counts()
    usage_before = await first_output_tokens(pair.stack)
    run = await pair.execute(strategy=CHEAPEST, max_cost_micro_usd=40)
    failed_with(run, grpc.StatusCode.RESOURCE_EXHAUSTED, "COST_LIMIT_EXCEEDED")
    received = run.text()
    assert received  # the caller got the text the limit paid for...
    assert len(received) < len(answer_text(400))  # ...and not the rest
    assert pair.counts() == (before_a + 1, before_b)  # no fallback: the limit is the call's
    # The stopped attempt's tokens are in the ledger all the same.
    deadline = time.monotonic() + 15
    while await first_output_tokens(pair.stack) <= usage_before:
        assert time.monotonic() < deadline, "the stopped attempt never reached the ledger"
        await asyncio.sleep(0.2)


async def first_output_tokens(stack: Stack) -> int:
    reply = await usage_by_provider(stack)
    return sum(r.output_tokens for r in reply.rows if r.provider == "first")


# --- 4. CUSTOM weights ----------------------------------------------------------------------


async def test_custom_weights_rank_the_call(healthy: Pair) -> None:
    pair = healthy
    by_cost = await pair.execute(strategy=CUSTOM, weights=WEIGHTS(cost=1.0))
    assert by_cost.provider == "first"
    by_quality = await pair.execute(strategy=CUSTOM, weights=WEIGHTS(quality=1.0))
    assert by_quality.provider == "second"


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (
            {"strategy": CUSTOM, "weights": WEIGHTS(cost=1e308)},
            "WEIGHTS_INVALID",
        ),
        ({"strategy": CUSTOM, "weights": WEIGHTS()}, "WEIGHTS_INVALID"),
        ({"strategy": CHEAPEST, "weights": WEIGHTS(cost=1)}, "WEIGHTS_INVALID"),
        ({"max_cost_micro_usd": -1}, "OPTION_INVALID"),
        ({"allowed_providers": [f"p{i}" for i in range(65)]}, "OPTION_INVALID"),
    ],
    ids=["huge-weight", "zero-weights", "weights-not-custom", "negative-cost", "many-allowed"],
)
async def test_bad_options_are_refused_at_the_edge(
    healthy: Pair, options: dict[str, Any], reason: str
) -> None:
    before = healthy.counts()
    run = await healthy.execute(**options)
    described = failed_with(run, grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert described.domain == "gateway.saga"
    assert run.events == []  # refused before the run was accepted
    assert healthy.counts() == before


# --- 2. skipped providers are said ----------------------------------------------------------


async def test_an_open_circuit_is_said_in_the_runs_events(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    async with fakes(2) as (a, b):
        env = RANK_FAILING_PROVIDERS | {
            "SAGA_ROUTER__CIRCUIT_CONSECUTIVE_FAILURES": "2",
            "SAGA_ROUTER__CIRCUIT_COOLDOWN_SECONDS": "60",
        }
        path = tmp_path_factory.mktemp("skips")
        async with stack_for(path, config=two_providers(a, b), **env) as stack:
            pair = Pair(stack, a, b)
            a.defaults["ollama"] = Script(fail="server_error")
            # Two failures open "first"'s circuit; each call falls back and says nothing
            # was skipped (control).
            for _ in range(2):
                run = await pair.execute(strategy=CHEAPEST)
                assert run.provider == "second"
                assert "providers_skipped" not in run.kinds()
            before_a, before_b = pair.counts()
            run = await pair.execute(strategy=CHEAPEST)
            assert run.error is None, describe(run.error)
            kinds = run.kinds()
            assert "providers_skipped" in kinds
            assert kinds.index("providers_skipped") < kinds.index("token")
            (event,) = [e for e in run.events if e.WhichOneof("event") == "providers_skipped"]
            skipped = event.providers_skipped
            assert skipped.step_id
            assert [(p.provider, p.reason) for p in skipped.providers] == [
                ("first", "CIRCUIT_OPEN")
            ]
            assert 0 < skipped.providers[0].retry_after_ms <= 60_000
            assert run.provider == "second"
            assert pair.counts() == (before_a, before_b + 1)  # "first" was not called
            # ...and counted, by provider and reason.
            assert await refusals(stack, "first", "CIRCUIT_OPEN") == 1


async def refusals(stack: Stack, provider: str, reason: str) -> float:
    """The router's `saga_router_refusals_total` for `provider` and `reason` (0 if none)."""
    return await metric(
        stack, "router", "saga_router_refusals_total", provider=provider, reason=reason
    )
