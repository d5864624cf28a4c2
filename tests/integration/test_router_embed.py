"""The router's Embed over real processes (vault, auth, optimizer, router) against the fake
providers' embeddings endpoints (OpenAI's `/v1/embeddings`, Ollama's `/api/embed`) and the
simulator: vectors in input order, batching, dimensions, usage and cost per attempt into
the optimizer's usage ledger, fallback that redoes every batch on one provider, bounds, and
the capability filter."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import grpc
import pytest

from saga.execution.v1 import records_pb2
from saga.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
from saga.router.v1 import router_pb2, router_pb2_grpc
from services.common.status import describe
from services.router.embedding import BATCH_INPUTS
from tests.e2e.test_resilience_gateway import KEEP_CIRCUITS_SHUT
from tests.fakes.providers import FakeProviders, Script, embedding
from tests.harness import Stack, stack_for
from tests.integration.test_engines_providers import mint, set_provider_key, usage_of


def config(fake: FakeProviders) -> str:
    return f"""
[[providers]]
name = "oai-embed"
kind = "openai"
model = "text-embedding-3-small"
base_url = "{fake.base_url("openai")}"
credential = "api_key"
capabilities = ["embeddings"]
max_retries = 0
input_micro_usd_per_mtok = 20_000_000

[[providers]]
name = "llama-embed"
kind = "ollama"
model = "nomic-embed-text"
base_url = "{fake.base_url("ollama")}"
capabilities = ["embeddings"]
input_micro_usd_per_mtok = 1_000_000

[[providers]]
name = "sim-embed"
kind = "sim"
model = "sim-embed"
capabilities = ["embeddings"]

[[providers]]
name = "chat-only"
kind = "sim"
model = "sim-chat"

[[providers]]
name = "claude"
kind = "anthropic"
model = "claude"
base_url = "{fake.base_url("anthropic")}"
capabilities = ["chat", "embeddings"]
"""


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeProviders]:
    async with FakeProviders(api_key="sk-embed-key") as f:
        yield f


@pytest.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeProviders
) -> AsyncIterator[Stack]:
    async with stack_for(
        tmp_path_factory.mktemp("embed"),
        ["vault", "auth", "optimizer", "router"],
        config=config(fake),
        **KEEP_CIRCUITS_SHUT,
    ) as s:
        await set_provider_key(s, "oai-embed", fake.api_key)
        yield s


@pytest.fixture(autouse=True)
def fresh(fake: FakeProviders) -> None:
    fake.reset()


async def embed(
    stack: Stack, inputs: list[str], **options: object
) -> tuple[router_pb2.EmbedResponse | None, grpc.aio.AioRpcError | None, str]:
    exe = "exe_" + secrets.token_hex(16)
    req = router_pb2.EmbedRequest(
        inputs=inputs,
        accounting=router_pb2.AccountingContext(
            user_id="usr_engines", execution_id=exe, step_id="embed", pattern_id="rag"
        ),
        **options,  # type: ignore[arg-type]
    )
    async with stack.channel_as("runtime", "router") as ch:
        try:
            reply = await router_pb2_grpc.RouterServiceStub(ch).Embed(
                req, metadata=(("saga-context", mint(stack, exe)),), timeout=20
            )
        except grpc.aio.AioRpcError as error:
            return None, error, exe
    return reply, None, exe


def vectors(reply: router_pb2.EmbedResponse) -> list[list[float]]:
    assert [e.index for e in reply.embeddings] == list(range(len(reply.embeddings)))
    return [list(e.values) for e in reply.embeddings]


@pytest.mark.parametrize(("provider", "fmt"), [("oai-embed", "openai"), ("llama-embed", "ollama")])
async def test_vectors_come_in_input_order_with_usage_and_cost(
    stack: Stack, fake: FakeProviders, provider: str, fmt: str
) -> None:
    texts = ["one", "two words", "three little words"]
    reply, error, _ = await embed(stack, texts, pinned_provider=provider, dimensions=6)
    assert error is None, describe(error)
    assert reply is not None
    assert vectors(reply) == [embedding(t, 6) for t in texts]
    assert (reply.provider, reply.usage.input_tokens, reply.usage.output_tokens) == (
        provider,
        6,
        0,
    )
    price = 20 if fmt == "openai" else 1  # micro-USD a token
    assert reply.cost_micro_usd == 6 * price
    body = fake.requests(fmt)[-1].body
    assert body["input"] == texts
    assert body["dimensions"] == 6


async def test_many_inputs_go_in_batches_each_an_accounted_attempt(
    stack: Stack, fake: FakeProviders
) -> None:
    texts = [f"text number {i}" for i in range(BATCH_INPUTS * 2 + 5)]
    before = await ledger_row(stack, "oai-embed")
    reply, error, _ = await embed(stack, texts, pinned_provider="oai-embed")
    assert error is None, describe(error)
    assert reply is not None
    assert vectors(reply) == [embedding(t, 4) for t in texts]
    assert [len(r.body["input"]) for r in fake.requests("openai")] == [
        BATCH_INPUTS,
        BATCH_INPUTS,
        5,
    ]
    assert [a.n for a in reply.attempts] == [1, 2, 3]
    assert reply.usage.input_tokens == 3 * len(texts)
    # Each batch reaches the optimizer's usage ledger, with its tokens and cost.
    calls = before.calls + 3
    after = await usage_of(stack, "oai-embed", calls)
    assert after.calls == calls
    assert after.input_tokens - before.input_tokens == 3 * len(texts)
    assert after.cost_micro_usd - before.cost_micro_usd == reply.cost_micro_usd


async def ledger_row(stack: Stack, provider: str) -> records_pb2.UsageRow:
    """The ledger's row of `provider` as it stands (an empty one before any call), once the
    outbox shipped every attempt the router holds (an earlier test's outcome may still be on
    its way: the outbox ships in rounds)."""
    async with stack.channel_as("gateway", "router") as ch:
        router = router_pb2_grpc.RouterServiceStub(ch)
        for _ in range(200):
            listed = await router.ListProviders(router_pb2.ListProvidersRequest(), timeout=5)
            if listed.outbox.backlog == 0 and listed.outbox.in_flight == 0:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the router's outbox never emptied: {listed.outbox}")
    async with stack.channel_as("gateway", "optimizer") as ch:
        reply = await optimizer_pb2_grpc.OptimizerServiceStub(ch).GetUsage(
            optimizer_pb2.GetUsageRequest(
                user_id="usr_engines", group_by=[records_pb2.USAGE_DIMENSION_PROVIDER]
            ),
            timeout=5,
        )
    return next((r for r in reply.rows if r.provider == provider), records_pb2.UsageRow())


async def test_a_failed_batch_falls_back_and_every_batch_is_redone_on_one_provider(
    stack: Stack, fake: FakeProviders
) -> None:
    texts = [f"t {i}" for i in range(BATCH_INPUTS + 1)]
    fake.script("openai", Script(), Script(fail="server_error"))
    reply, error, _ = await embed(
        stack, texts, preferred_providers=["oai-embed", "llama-embed"], allow_fallback=True
    )
    assert error is None, describe(error)
    assert reply is not None
    assert reply.provider == "llama-embed"
    assert [(a.provider, a.status, a.error_reason) for a in reply.attempts] == [
        ("oai-embed", 1, ""),
        ("oai-embed", 2, "PROVIDER_UNAVAILABLE"),
        ("llama-embed", 1, ""),
        ("llama-embed", 1, ""),
    ]
    assert len(fake.requests("ollama")) == 2, "every batch redone on the fallback"
    assert len(vectors(reply)) == len(texts)
    # Without fallback the failure is the call's.
    fake.script("openai", Script(fail="server_error"))
    _, failed, _ = await embed(stack, texts, pinned_provider="oai-embed")
    assert failed is not None
    assert describe(failed).reason == "PROVIDER_UNAVAILABLE"


async def test_the_simulator_embeds_deterministically(stack: Stack) -> None:
    first, _, _ = await embed(stack, ["a saga", "a ledger"], pinned_provider="sim-embed")
    again, _, _ = await embed(stack, ["a saga"], pinned_provider="sim-embed", dimensions=16)
    assert first is not None
    assert again is not None
    assert vectors(first)[0] == vectors(again)[0]
    assert vectors(first)[0] != vectors(first)[1]
    assert len(vectors(first)[0]) == 16


async def test_only_providers_that_can_embed_are_candidates(stack: Stack) -> None:
    reply, error, _ = await embed(stack, ["x"], preferred_providers=["chat-only", "sim-embed"])
    assert error is None, describe(error)
    assert reply is not None
    assert reply.provider != "chat-only"
    for pinned in ("chat-only", "claude"):
        _, refused, _ = await embed(stack, ["x"], pinned_provider=pinned)
        assert refused is not None
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert describe(refused).reason == "NO_CAPABLE_PROVIDER"


async def test_bounds_name_their_field(stack: Stack) -> None:
    cases: list[tuple[list[str], dict[str, object], str]] = [
        ([], {}, "inputs"),
        (["x"] * 2049, {}, "inputs"),
        (["ok", "  "], {}, "inputs[1]"),
        (["x" * 40_000], {}, "inputs[0]"),
        (["x"], {"dimensions": 9000}, "dimensions"),
    ]
    for inputs, options, field_ in cases:
        _, error, _ = await embed(stack, inputs, **options)
        assert error is not None
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = describe(error)
        assert (details.reason, [v.field for v in details.field_violations]) == (
            "EMBED_INPUT_INVALID",
            [field_],
        )
    _, limited, _ = await embed(
        stack, ["many words here"] * 100, pinned_provider="oai-embed", max_cost_micro_usd=1
    )
    assert limited is not None
    assert describe(limited).reason == "COST_LIMIT_EXCEEDED"
