"""Resilience through the gateway, as a client sees it: all six services as real processes,
LLM providers played by fake HTTP servers on loopback speaking the OpenAI and Ollama wire
formats (tests/fakes/providers.py), every call an Execute of the `chat` pattern.

Covered: fallback on 429 (Retry-After) and on 500, mid-stream fallback with one coherent
text and combined usage, a circuit opening and recovering, a provider alone in its group
tripping and failing fast, a budget refusing before any provider is called, and the usage
ledger matching, call for call, what the fake providers served and reported.

Each fake provider is its own server, so its request count is that provider's alone. The
fakes answer `w0 w1 …`; the two providers of a pair answer different lengths, so a text
says who wrote it. The optimizer's success-rate floor is 0 here, so a provider that failed
stays ranked and only the router's circuits keep it out.

Fallback, mid-stream fallback and the ledger share one stack (`pair`, circuits kept shut);
the ledger test compares the WHOLE ledger with everything the fakes served since that stack
started, so it holds whichever of the module's tests ran before it. Circuits and budgets
need their own configuration, hence their own small stacks.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from saga.execution.v1 import common_pb2, options_pb2, records_pb2
from saga.gateway.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    execution_pb2,
    execution_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)
from saga.router.v1 import providers_pb2
from services.common.status import describe
from tests.e2e.test_execute import bearer, chat
from tests.fakes.providers import FakeProviders, Script, Seen, answer_text
from tests.harness import Stack, stack_for

CHEAPEST = common_pb2.STRATEGY_CHEAPEST
OPEN = providers_pb2.CIRCUIT_STATE_OPEN
CLOSED = providers_pb2.CIRCUIT_STATE_CLOSED

A_TOKENS, B_TOKENS = 4, 7
"""How many tokens each provider of a pair answers (so a text names its author)."""

PRICES = {"cheap": (1_000_000, 2_000_000, 250_000), "backup": (2_000_000, 4_000_000, 500_000)}
"""(input, output, cached input) micro-USD per million tokens of the pair: "cheap" is ranked
first by CHEAPEST."""

COOLDOWN_SECONDS = 1.5
FIRST_TOKEN_TIMEOUT_MS = 2000
"""How long "cheap" of the pair may keep a call waiting for its first token."""

KEEP_CIRCUITS_SHUT = {
    "SAGA_ROUTER__CIRCUIT_CONSECUTIVE_FAILURES": "1000",
    "SAGA_ROUTER__CIRCUIT_MIN_CALLS": "1000",
}
QUICK_CIRCUITS = {
    "SAGA_ROUTER__CIRCUIT_CONSECUTIVE_FAILURES": "2",
    "SAGA_ROUTER__CIRCUIT_COOLDOWN_SECONDS": str(COOLDOWN_SECONDS),
}
RANK_FAILING_PROVIDERS = {"SAGA_OPTIMIZER__SUCCESS_RATE_FLOOR": "0"}


# --- a client's view ------------------------------------------------------------------------


@dataclass
class Run:
    """What a client received from one Execute: its events, and the error that ended it."""

    events: list[execution_pb2.ExecuteResponse]
    error: grpc.aio.AioRpcError | None
    seconds: float

    def kinds(self) -> list[str]:
        return [str(e.WhichOneof("event")) for e in self.events]

    def text(self) -> str:
        return "".join(e.token.text for e in self.events if e.WhichOneof("event") == "token")

    def switches(self) -> list[tuple[str, str, str]]:
        return [
            (s.from_provider, s.to_provider, s.reason)
            for s in (e.provider_switched for e in self.events)
            if s.from_provider
        ]

    def text_before_switch(self) -> str:
        kinds = self.kinds()
        cut = kinds.index("provider_switched")
        return "".join(e.token.text for e in self.events[:cut] if e.WhichOneof("event") == "token")

    @property
    def completed(self) -> Any:
        assert self.error is None, describe(self.error)
        assert self.events[-1].WhichOneof("event") == "completed", self.kinds()
        return self.events[-1].completed

    @property
    def provider(self) -> str:
        """The provider that wrote the final answer (StepCompleted)."""
        steps = [e.step_completed for e in self.events if e.WhichOneof("event") == "step_completed"]
        (step,) = steps
        return str(step.provider)


async def execute(stack: Stack, prompt: str, **options: Any) -> Run:
    """Execute `chat` with the admin key, as a client does."""
    request = chat(prompt)
    request.options.CopyFrom(options_pb2.ExecuteOptions(**options))
    events: list[execution_pb2.ExecuteResponse] = []
    error = None
    started = time.monotonic()
    async with stack.gateway_channel() as ch:
        try:
            async for event in execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
                request, metadata=bearer(stack.admin_key()), timeout=60
            ):
                events.append(event)
        except grpc.aio.AioRpcError as e:
            error = e
    return Run(events, error, time.monotonic() - started)


async def circuits(stack: Stack) -> dict[str, tuple[int, bool]]:
    """(circuit state, healthy) of every provider, from AdminService.ListProviders."""
    async with stack.gateway_channel() as ch:
        reply = await admin_pb2_grpc.AdminServiceStub(ch).ListProviders(
            admin_pb2.ListProvidersRequest(), metadata=bearer(stack.admin_key()), timeout=10
        )
    return {p.name: (p.circuit_state, p.healthy) for p in reply.providers}


async def usage_by_provider(stack: Stack) -> usage_pb2.GetUsageResponse:
    """Everyone's usage grouped by provider, from UsageService.GetUsage."""
    async with stack.gateway_channel() as ch:
        return await usage_pb2_grpc.UsageServiceStub(ch).GetUsage(
            usage_pb2.GetUsageRequest(
                all_users=True, group_by=[records_pb2.USAGE_DIMENSION_PROVIDER]
            ),
            metadata=bearer(stack.admin_key()),
            timeout=10,
        )


# --- what the providers counted -------------------------------------------------------------


def estimated_input(body: dict[str, Any]) -> int:
    """Saga's documented estimate of a prompt the provider did not count: ~4 characters a
    token, message by message (services/router/engines/base.py)."""
    return sum(math.ceil(len(m["content"]) / 4) for m in body["messages"])


def billed(seen: Seen) -> tuple[int, int, int]:
    """(input, output, cached) tokens a request should be billed: what the provider reported; for a
    stream that never reported (cut, or usage omitted), the prompt's estimate and one token
    per streamed chunk (Saga's documented rule, services/router/engines/progress.py; the
    fakes stream one token per chunk); for a refusal, nothing."""
    if seen.usage is not None:
        return seen.usage
    if seen.tokens:
        assert seen.streamed
        return estimated_input(seen.body), seen.tokens, 0
    return 0, 0, 0


def cost(provider: str, input_tokens: int, output_tokens: int, cached: int = 0) -> int:
    """micro-USD, rounded half up, as the price table bills (cached tokens are part of the
    input, at the cached price)."""
    price_in, price_out, price_cached = PRICES[provider]
    micro = (input_tokens - cached) * price_in + cached * price_cached + output_tokens * price_out
    return (micro + 500_000) // 1_000_000


# --- stacks ---------------------------------------------------------------------------------


def provider_toml(name: str, fake: FakeProviders, fmt: str, **fields: Any) -> str:
    """A `[[providers]]` table of kind `fmt` pointing at `fake`."""
    lines = [
        "[[providers]]",
        f'name = "{name}"',
        f'kind = "{fmt}"',
        f'model = "{fmt}-model"',
        f'base_url = "{fake.base_url(fmt)}"',
    ]
    lines += [f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}" for k, v in fields.items()]
    return "\n".join(lines) + "\n"


@asynccontextmanager
async def fakes(count: int) -> AsyncIterator[list[FakeProviders]]:
    """`count` fake provider servers, each on its own port."""
    started: list[FakeProviders] = []
    try:
        for _ in range(count):
            fake = FakeProviders()
            await fake.start()
            started.append(fake)
        yield started
    finally:
        for fake in started:
            await fake.stop()


@dataclass
class Pair:
    """A stack whose chat is answered by "cheap" (OpenAI format, an API key set through
    AdminService) or else "backup" (Ollama format, no credential)."""

    stack: Stack
    a: FakeProviders
    b: FakeProviders
    runs: list[Run] = field(default_factory=list)
    """Every Execute made on this stack, for the ledger's totals."""

    def counts(self) -> tuple[int, int]:
        return len(self.a.requests()), len(self.b.requests())

    async def execute(self, prompt: str, **options: Any) -> Run:
        self.runs.append(await execute(self.stack, prompt, **options))
        return self.runs[-1]


@pytest.fixture(scope="module")
async def pair(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pair]:
    async with fakes(2) as (a, b):
        config = provider_toml(
            "cheap",
            a,
            "openai",
            credential="api_key",
            max_retries=1,
            first_token_timeout_ms=FIRST_TOKEN_TIMEOUT_MS,
            input_micro_usd_per_mtok=PRICES["cheap"][0],
            output_micro_usd_per_mtok=PRICES["cheap"][1],
            cached_input_micro_usd_per_mtok=PRICES["cheap"][2],
        ) + provider_toml(
            "backup",
            b,
            "ollama",
            credential="none",
            input_micro_usd_per_mtok=PRICES["backup"][0],
            output_micro_usd_per_mtok=PRICES["backup"][1],
            cached_input_micro_usd_per_mtok=PRICES["backup"][2],
        )
        env = KEEP_CIRCUITS_SHUT | RANK_FAILING_PROVIDERS
        async with stack_for(tmp_path_factory.mktemp("pair"), config=config, **env) as stack:
            async with stack.gateway_channel() as ch:
                await admin_pb2_grpc.AdminServiceStub(ch).SetProviderKey(
                    admin_pb2.SetProviderKeyRequest(provider="cheap", api_key=a.api_key),
                    metadata=bearer(stack.admin_key()),
                    timeout=10,
                )
            yield Pair(stack, a, b)


@pytest.fixture
async def healthy(pair: Pair) -> Pair:
    """The pair with both providers answering normally."""
    pair.a.defaults["openai"] = Script(tokens=A_TOKENS)
    pair.b.defaults["ollama"] = Script(tokens=B_TOKENS)
    return pair


def assert_answered_by_backup(pair: Pair, run: Run) -> None:
    """The whole answer, its usage and cost are backup's own (the failed attempts billed
    nothing: they produced nothing and reported nothing)."""
    assert run.text() == answer_text(B_TOKENS)
    completed = run.completed
    assert completed.outputs["text"] == run.text()
    assert run.provider == "backup"
    reported = pair.b.requests()[-1].usage
    assert reported is not None
    assert (completed.usage.input_tokens, completed.usage.output_tokens) == reported[:2]
    assert not completed.usage.estimated
    assert completed.cost_micro_usd == cost("backup", *reported)


# --- 1. fallback on 429 and 500 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "status", "reason"),
    [
        # Retry-After 30 s is longer than the router waits (retry_max_backoff 2 s): no retry.
        ([Script(fail="rate_limited", retry_after="30")], 429, "PROVIDER_RATE_LIMITED"),
        # A 500 is retried once on the same provider (max_retries = 1), then falls back.
        ([Script(fail="server_error")] * 2, 500, "PROVIDER_UNAVAILABLE"),
    ],
    ids=["429", "500"],
)
async def test_a_failing_provider_falls_back_to_the_next(
    healthy: Pair, failures: list[Script], status: int, reason: str
) -> None:
    pair = healthy
    # Positive control: healthy, "cheap" is ranked first by CHEAPEST and answers alone.
    ok = await pair.execute("what is a saga", strategy=CHEAPEST)
    assert ok.switches() == []
    assert ok.text() == answer_text(A_TOKENS)
    assert ok.provider == "cheap"
    assert ok.completed.cost_micro_usd > 0

    before_a, before_b = pair.counts()
    pair.a.script("openai", *failures)
    run = await pair.execute("what is a saga", strategy=CHEAPEST)
    assert run.error is None, describe(run.error)
    assert run.switches() == [("cheap", "backup", reason)]
    assert run.kinds().index("provider_switched") < run.kinds().index("token")
    assert_answered_by_backup(pair, run)
    assert pair.counts() == (before_a + len(failures), before_b + 1)
    assert [s.status for s in pair.a.requests()[-len(failures) :]] == [status] * len(failures)


async def test_a_short_retry_after_is_waited_for_on_the_same_provider(healthy: Pair) -> None:
    pair = healthy
    before_a, before_b = pair.counts()
    pair.a.script("openai", Script(fail="rate_limited", retry_after="1"))
    run = await pair.execute("what is a saga", strategy=CHEAPEST)
    assert run.switches() == []
    assert run.text() == answer_text(A_TOKENS)
    assert run.provider == "cheap"
    assert pair.counts() == (before_a + 2, before_b)
    # The retry waited at least the Retry-After the provider sent.
    assert run.seconds >= 1.0


# --- 2. mid-stream fallback -----------------------------------------------------------------


async def test_a_stream_cut_midway_continues_on_the_next_provider(healthy: Pair) -> None:
    pair = healthy
    before_a, before_b = pair.counts()
    pair.a.script("openai", Script(tokens=6, cut_after=3))
    run = await pair.execute("tell me about ledgers", strategy=CHEAPEST)
    assert run.error is None, describe(run.error)
    partial = answer_text(3)
    assert run.switches() == [("cheap", "backup", "PROVIDER_UNAVAILABLE")]
    assert run.text_before_switch() == partial
    # backup was asked to continue from the partial text...
    continued = pair.b.requests()[-1]
    assert [(m["role"], m["content"]) for m in continued.body["messages"]][:2] == [
        ("user", "tell me about ledgers"),
        ("assistant", partial),
    ]
    assert continued.body["messages"][-1]["role"] == "user"
    # ...and started over (the fake always answers w0 w1 …): its repetition of the partial
    # text is dropped, so the client reads one text, each word once.
    assert run.text() == answer_text(B_TOKENS)
    assert run.completed.outputs["text"] == run.text()
    assert run.provider == "backup"
    assert pair.counts() == (before_a + 1, before_b + 1)

    # Usage is the sum over both attempts: the cut one estimated (and the total flagged),
    # backup's as it reported.
    cut = pair.a.requests()[-1]
    assert (cut.tokens, cut.usage, cut.completed) == (3, None, False)
    reported = continued.usage
    assert reported is not None
    assert reported[1] == B_TOKENS  # backup bills every token it produced
    cut_in, cut_out, _ = billed(cut)
    usage = run.completed.usage
    assert usage.estimated
    assert (usage.input_tokens, usage.output_tokens) == (
        cut_in + reported[0],
        cut_out + reported[1],
    )
    assert run.completed.cost_micro_usd == cost("cheap", cut_in, cut_out) + cost(
        "backup", *reported
    )

    # Positive control: without the cut, one provider and reported, unflagged usage.
    whole = await pair.execute("tell me about ledgers", strategy=CHEAPEST)
    assert whole.switches() == []
    assert whole.text() == answer_text(A_TOKENS)
    assert not whole.completed.usage.estimated


# --- 6. the usage ledger matches the providers ----------------------------------------------


def expected_ledger(pair: Pair) -> dict[str, tuple[int, int, int, int, int]]:
    """(calls, input, output, cached, cost) per provider, from what the fakes received and
    sent."""
    out = {}
    for name, fake in (("cheap", pair.a), ("backup", pair.b)):
        counts = [billed(s) for s in fake.requests()]
        out[name] = (
            len(counts),
            sum(c[0] for c in counts),
            sum(c[1] for c in counts),
            sum(c[2] for c in counts),
            sum(cost(name, *c) for c in counts),
        )
    return out


def ledger(reply: usage_pb2.GetUsageResponse) -> dict[str, tuple[int, int, int, int, int]]:
    return {
        r.provider: (r.calls, r.input_tokens, r.output_tokens, r.cached_tokens, r.cost_micro_usd)
        for r in reply.rows
    }


async def test_the_usage_ledger_matches_what_the_providers_counted(healthy: Pair) -> None:
    pair = healthy
    runs = list(await asyncio.gather(*(pair.execute(f"question {i}") for i in range(3))))
    unavailable = "PROVIDER_UNAVAILABLE"
    cases: Iterable[tuple[list[Script], str]] = (  # cheap's answers, and why it is left
        ([Script(fail="rate_limited", retry_after="30")], "PROVIDER_RATE_LIMITED"),
        ([Script(fail="server_error")] * 2, unavailable),  # retried once
        ([Script(tokens=6, cut_after=2)], unavailable),  # connection cut mid-stream
        ([Script(tokens=6, error_after=3)], unavailable),  # an error event mid-stream
        ([Script(tokens=6, malformed_after=2)], unavailable),  # a chunk that does not parse
        ([Script(hang=True)], "PROVIDER_TIMEOUT"),  # no first token in time
        ([Script(tokens=5, usage=False)], ""),  # answered, without usage: estimated
        ([Script(tokens=5, cached_tokens=2)], ""),  # part of the prompt read from cache
    )
    for failures, reason in cases:
        pair.a.script("openai", *failures)
        run = await pair.execute("and the ledger?", preferred_providers=["cheap"])
        assert run.error is None, describe(run.error)
        assert run.switches() == ([("cheap", "backup", reason)] if reason else [])
        runs.append(run)
    for r in runs:  # each client read one whole answer, mid-stream switches included
        assert r.text() == r.completed.outputs["text"]
        assert r.text() in {answer_text(A_TOKENS), answer_text(B_TOKENS), answer_text(5)}

    # Every attempt of every call (this test's and the module's before it) reaches the
    # ledger through the router's outbox, asynchronously: wait for the count, bounded.
    calls = sum(pair.counts())
    reply = await usage_by_provider(pair.stack)
    for _ in range(200):
        if reply.totals.calls >= calls:
            break
        await asyncio.sleep(0.05)
        reply = await usage_by_provider(pair.stack)
    assert ledger(reply) == expected_ledger(pair)
    # Nothing arrives twice later (ids are idempotent): the ledger stays as it is.
    await asyncio.sleep(0.5)
    again = await usage_by_provider(pair.stack)
    assert ledger(again) == expected_ledger(pair)
    assert again.totals.calls == calls
    # What the clients were told they used and spent is what the ledger holds, in all.
    told = [r.completed for r in pair.runs]
    assert again.totals.output_tokens == sum(c.usage.output_tokens for c in told)
    assert again.totals.input_tokens == sum(c.usage.input_tokens for c in told)
    assert again.totals.cached_tokens == sum(c.usage.cached_tokens for c in told) >= 2
    assert again.totals.cost_micro_usd == sum(c.cost_micro_usd for c in told)


# --- 3. a circuit opening and recovering ----------------------------------------------------


async def test_a_circuit_opens_skips_the_provider_and_recovers_after_a_probe(
    tmp_path: Path,
) -> None:
    async with fakes(2) as (a, b):
        config = provider_toml("flaky", a, "ollama", max_retries=0) + provider_toml(
            "steady", b, "ollama"
        )
        a.defaults["ollama"] = Script(tokens=A_TOKENS)
        b.defaults["ollama"] = Script(tokens=B_TOKENS)
        env = QUICK_CIRCUITS | RANK_FAILING_PROVIDERS
        async with stack_for(tmp_path, config=config, **env) as stack:
            order = {"preferred_providers": ["flaky", "steady"]}
            # Positive control: healthy, "flaky" answers and its circuit is closed.
            ok = await execute(stack, "hello", **order)
            assert (ok.text(), ok.switches()) == (answer_text(A_TOKENS), [])
            assert (await circuits(stack))["flaky"] == (CLOSED, True)

            # Two failures in a row (circuit_consecutive_failures = 2) open it; each call
            # falls back to "steady".
            a.defaults["ollama"] = Script(fail="server_error")
            for _ in range(2):
                run = await execute(stack, "hello", **order)
                assert run.switches() == [("flaky", "steady", "PROVIDER_UNAVAILABLE")]
                assert run.text() == answer_text(B_TOKENS)
            assert (await circuits(stack))["flaky"] == (OPEN, False)

            # Open: calls go straight to "steady"; "flaky" is not called any more.
            seen = len(a.requests())
            for _ in range(2):
                run = await execute(stack, "hello", **order)
                assert run.switches() == []
                assert (run.text(), run.provider) == (answer_text(B_TOKENS), "steady")
            assert len(a.requests()) == seen

            # After the cooldown one probe reaches "flaky"; it still fails: open again.
            await asyncio.sleep(COOLDOWN_SECONDS + 0.3)
            run = await execute(stack, "hello", **order)
            assert run.switches() == [("flaky", "steady", "PROVIDER_UNAVAILABLE")]
            assert len(a.requests()) == seen + 1
            assert (await circuits(stack))["flaky"] == (OPEN, False)
            run = await execute(stack, "hello", **order)
            assert (run.switches(), len(a.requests())) == ([], seen + 1)

            # After the next cooldown the probe finds it answering: closed, and used again.
            a.defaults["ollama"] = Script(tokens=A_TOKENS)
            await asyncio.sleep(COOLDOWN_SECONDS + 0.3)
            run = await execute(stack, "hello", **order)
            assert (run.text(), run.switches(), run.provider) == (
                answer_text(A_TOKENS),
                [],
                "flaky",
            )
            assert (await circuits(stack))["flaky"] == (CLOSED, True)
            run = await execute(stack, "hello", **order)
            assert (run.provider, len(a.requests())) == ("flaky", seen + 3)


# --- 4. a provider alone in its group -------------------------------------------------------


async def test_a_lone_provider_trips_fails_fast_and_recovers(tmp_path: Path) -> None:
    async with fakes(1) as (a,):
        config = provider_toml("lonely", a, "ollama", max_retries=0)
        env = QUICK_CIRCUITS | RANK_FAILING_PROVIDERS
        async with stack_for(tmp_path, config=config, **env) as stack:
            # Positive control: healthy, it answers.
            assert (await execute(stack, "hello")).text() == answer_text(5)

            a.defaults["ollama"] = Script(fail="server_error")
            for _ in range(2):
                failed = await execute(stack, "hello")
                assert failed.error is not None
                assert failed.error.code() == grpc.StatusCode.UNAVAILABLE
                assert describe(failed.error).reason == "PROVIDER_UNAVAILABLE"
            seen = len(a.requests())
            assert seen == 3

            # Open: fail fast, say when to come back, and leave the provider alone.
            for _ in range(2):
                refused = await execute(stack, "hello")
                assert refused.error is not None
                assert refused.error.code() == grpc.StatusCode.UNAVAILABLE
                details = describe(refused.error)
                # The runtime names the step and the trace of the run it failed.
                trace_id = details.metadata.pop("traceId")
                assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
                assert (details.reason, details.domain, details.metadata) == (
                    "CIRCUIT_OPEN",
                    "router.saga",
                    {"provider": "lonely", "stepId": "answer"},
                )
                assert details.retry_after is not None
                assert 0 < details.retry_after <= COOLDOWN_SECONDS
                assert "token" not in refused.kinds()
            assert len(a.requests()) == seen
            assert (await circuits(stack))["lonely"] == (OPEN, False)

            # After the cooldown, healthy again: the probe answers and the circuit closes.
            a.defaults["ollama"] = Script()
            await asyncio.sleep(details.retry_after + 0.3)
            recovered = await execute(stack, "hello")
            assert recovered.text() == answer_text(5)
            assert len(a.requests()) == seen + 1
            assert (await circuits(stack))["lonely"] == (CLOSED, True)


# --- 5. budgets -----------------------------------------------------------------------------


def budget_toml(per_user_micro_usd: int, fake: FakeProviders) -> str:
    # The router reserves the prompt plus the default 1024 output tokens at 2 micro-USD
    # each before calling: over 2000 micro-USD.
    return f"[budgets]\nper_user_micro_usd = {per_user_micro_usd}\n\n" + provider_toml(
        "metered",
        fake,
        "ollama",
        input_micro_usd_per_mtok=1_000_000,
        output_micro_usd_per_mtok=2_000_000,
    )


async def test_an_exhausted_budget_refuses_before_any_provider_is_called(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    async with fakes(1) as (fake,):
        tight = budget_toml(1000, fake)
        async with stack_for(tmp_path_factory.mktemp("tight"), config=tight) as stack:
            refused = await execute(stack, "what does this cost")
        assert refused.error is not None
        assert refused.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = describe(refused.error)
        assert (details.reason, details.domain) == ("BUDGET_EXHAUSTED", "optimizer.saga")
        assert details.quota_violations
        assert "token" not in refused.kinds()
        assert fake.requests() == []

        # Positive control: with a budget that covers it, the same Execute is answered.
        roomy = budget_toml(10_000_000, fake)
        async with stack_for(tmp_path_factory.mktemp("roomy"), config=roomy) as stack:
            answered = await execute(stack, "what does this cost")
        assert answered.text() == answer_text(5)
        assert answered.completed.cost_micro_usd > 0
        assert len(fake.requests()) == 1
