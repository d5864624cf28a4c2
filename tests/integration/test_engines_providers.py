"""The HTTP engines end to end over real processes (vault, auth, optimizer, router), called
as the runtime calls Reason, against the fake providers on loopback:

- an `ollama` provider (no credential): streamed and complete answers with the usage the
  provider reported, billed call for call as the provider counted;
- an `openai` provider with `credential = "api_key"`: the key an operator stored with
  SetProviderKey (auth, in the vault) reaches the provider through GetProviderCredential —
  never through the configuration; without it the call fails with auth's reason intact; a key
  rotated at the provider and in auth is picked up at once (the refused key is dropped and
  fetched again);
- an `ollama` provider that stalls after its first tokens: the idle timeout fails the
  attempt and the answer is continued on the next provider, announced by a Switched event;
- an `ollama` provider with a wrong base_url: PROVIDER_MISCONFIGURED naming the path, not
  retried;
- an `anthropic` provider reporting prompt-cache reads and writes: each priced at its own
  rate, and the ledger (GetUsage) keeps the writes apart with their cost."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest

from saga.auth.v1 import auth_pb2, auth_pb2_grpc
from saga.execution.v1 import common_pb2, records_pb2
from saga.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
from saga.router.v1 import router_pb2, router_pb2_grpc
from services.common.context import ContextSigner, load_private_key
from services.common.status import describe
from services.router.continuation import CONTINUE_INSTRUCTION
from tests.fakes.providers import FakeProviders, Script, answer_text
from tests.harness import Stack, stack_for
from tests.integration.test_router_reason import collapse

PROMPT = "tell me about the saga of the river"  # 8 words, the fake's input count


def config(fake: FakeProviders) -> str:
    return f"""
[router]
circuit_cooldown_seconds = 0.5

[[providers]]
name = "keyed"
kind = "openai"
model = "gpt-fake"
base_url = "{fake.base_url("openai")}"
credential = "api_key"
input_micro_usd_per_mtok = 1_000_000
output_micro_usd_per_mtok = 2_000_000
first_token_timeout_ms = 5000

[[providers]]
name = "local"
kind = "ollama"
model = "llama-fake"
base_url = "{fake.base_url("ollama")}"
credential = "none"
input_micro_usd_per_mtok = 3_000_000
output_micro_usd_per_mtok = 5_000_000
first_token_timeout_ms = 5000

[[providers]]
name = "stalls"
kind = "ollama"
model = "llama-stalls"
base_url = "{fake.base_url("ollama")}"
credential = "none"
first_token_timeout_ms = 5000
idle_timeout_ms = 300
total_timeout_ms = 60000
max_retries = 0

[[providers]]
name = "misrouted"
kind = "ollama"
model = "llama-fake"
base_url = "{fake.url}/ollama/"
credential = "none"

[[providers]]
name = "claude"
kind = "anthropic"
model = "claude-fake"
base_url = "{fake.base_url("anthropic")}"
credential = "api_key"
input_micro_usd_per_mtok = 3_000_000
output_micro_usd_per_mtok = 15_000_000
cached_input_micro_usd_per_mtok = 300_000
cache_write_micro_usd_per_mtok = 3_750_000
first_token_timeout_ms = 5000
"""


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeProviders]:
    async with FakeProviders(api_key="sk-operator-key-one") as f:
        yield f


@pytest.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeProviders
) -> AsyncIterator[Stack]:
    async with stack_for(
        tmp_path_factory.mktemp("engines"),
        ["vault", "auth", "optimizer", "router"],
        config=config(fake),
    ) as s:
        yield s


@pytest.fixture(autouse=True)
def fresh(fake: FakeProviders) -> None:
    fake.reset()


@pytest.fixture
async def runtime(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with stack.channel_as("runtime", "router") as ch:
        yield ch


def mint(stack: Stack, execution_id: str, scopes: tuple[str, ...] = ("execute",)) -> str:
    signer = ContextSigner(load_private_key(stack.data_dir / "keys" / "context.key"), 900)
    return signer.mint(
        execution_id=execution_id,
        user_id="usr_engines",
        tenant="t1",
        scopes=scopes,
        credential_id="key_engines",
        ttl_seconds=60,
    )


@dataclass
class Streamed:
    events: list[router_pb2.ReasonResponse] = field(default_factory=list)
    error: grpc.aio.AioRpcError | None = None

    def kinds(self) -> list[str]:
        return [str(e.WhichOneof("event")) for e in self.events]

    def text(self) -> str:
        return "".join(e.delta.text for e in self.events if e.HasField("delta"))


async def reason(stack: Stack, ch: grpc.aio.Channel, provider: str, **options: object) -> Streamed:
    exe = "exe_" + secrets.token_hex(16)
    req = router_pb2.ReasonRequest(
        messages=[router_pb2.Message(role=router_pb2.ROLE_USER, content=PROMPT)],
        accounting=router_pb2.AccountingContext(
            user_id="usr_engines", execution_id=exe, step_id="answer", pattern_id="chat"
        ),
        pinned_provider=provider,
        **options,  # type: ignore[arg-type]
    )
    out = Streamed()
    call = router_pb2_grpc.RouterServiceStub(ch).Reason(
        req, metadata=(("saga-context", mint(stack, exe)),), timeout=20
    )
    try:
        async for event in call:
            out.events.append(event)
    except grpc.aio.AioRpcError as error:
        out.error = error
    return out


async def set_provider_key(stack: Stack, provider: str, key: str) -> None:
    """What the gateway's AdminService relays for an operator (an admin's context)."""
    async with stack.channel_as("gateway", "auth") as ch:
        await auth_pb2_grpc.AuthServiceStub(ch).SetProviderKey(
            auth_pb2.SetProviderKeyRequest(provider=provider, api_key=key),
            metadata=(("saga-context", mint(stack, "req_" + secrets.token_hex(16), ("admin",))),),
            timeout=10,
        )


async def until_answered(
    stack: Stack, ch: grpc.aio.Channel, provider: str, within: float = 10.0
) -> Streamed:
    """Reason until a call succeeds (a circuit tripped by an earlier failure half-opens
    after the configured cooldown)."""
    deadline = time.monotonic() + within
    while True:
        got = await reason(stack, ch, provider)
        if got.error is None or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.2)


async def test_ollama_streams_through_reason_with_the_usage_it_reported(
    stack: Stack, runtime: grpc.aio.Channel, fake: FakeProviders
) -> None:
    fake.script("ollama", Script(tokens=5, interval=0.02))
    got = await reason(stack, runtime, "local")
    assert got.error is None, describe(got.error)
    assert got.kinds() == ["attempt"] + ["delta"] * 5 + ["final"]
    assert got.text() == answer_text(5)
    final = got.events[-1].final
    (seen,) = fake.requests("ollama")
    assert seen.streamed
    # Billed exactly what the provider counted and reported.
    assert seen.usage == (8, 5, 0)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (8, 5)
    assert not final.usage.estimated
    assert final.cost_micro_usd == round((8 * 3_000_000 + 5 * 5_000_000) / 1_000_000)
    assert (final.provider, final.model) == ("local", "llama-fake")


async def test_ollama_answers_complete_mode_in_one_final(
    stack: Stack, runtime: grpc.aio.Channel, fake: FakeProviders
) -> None:
    got = await reason(stack, runtime, "local", response_mode=common_pb2.RESPONSE_MODE_COMPLETE)
    assert got.error is None, describe(got.error)
    assert got.kinds() == ["attempt", "final"]
    assert got.events[-1].final.text == answer_text(5)
    (seen,) = fake.requests("ollama")
    assert not seen.streamed
    assert got.events[-1].final.usage.output_tokens == seen.tokens == 5


async def test_the_operators_key_reaches_the_provider_through_auth(
    stack: Stack, runtime: grpc.aio.Channel, fake: FakeProviders
) -> None:
    # No key stored yet: auth's refusal reaches the caller whole, the provider is not called.
    missing = await reason(stack, runtime, "keyed")
    assert missing.error is not None
    details = describe(missing.error)
    assert (details.reason, details.domain) == ("PROVIDER_KEY_NOT_SET", "auth.saga")
    assert fake.requests("openai") == []

    await set_provider_key(stack, "keyed", fake.api_key)
    got = await until_answered(stack, runtime, "keyed")
    assert got.error is None, describe(got.error)
    assert got.text() == answer_text(5)
    seen = fake.requests("openai")[-1]
    assert seen.authorized
    assert seen.headers["Authorization"] == f"Bearer {fake.api_key}"
    final = got.events[-1].final
    assert seen.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == seen.usage[:2]
    # The key is the router's secret: never in what the caller sees.
    assert fake.api_key not in str(got.events)


async def test_a_key_rotated_at_the_provider_and_in_auth_is_used_at_once(
    stack: Stack, runtime: grpc.aio.Channel, fake: FakeProviders
) -> None:
    await set_provider_key(stack, "keyed", fake.api_key)
    assert (await until_answered(stack, runtime, "keyed")).error is None
    fake.reset()
    old = fake.api_key
    fake.api_key = "sk-operator-key-two"
    try:
        await set_provider_key(stack, "keyed", fake.api_key)
        # The router still holds the old key (cached for a minute): the provider refuses
        # it, the router drops it, fetches the new one and the same call succeeds.
        got = await reason(stack, runtime, "keyed")
        assert got.error is None, describe(got.error)
        assert [s.authorized for s in fake.requests("openai")] == [False, True]
        assert [e.WhichOneof("event") for e in got.events].count("attempt") == 1
    finally:
        fake.api_key = old
        await set_provider_key(stack, "keyed", old)


async def test_a_stream_that_stalls_mid_answer_continues_on_the_next_provider(
    stack: Stack, runtime: grpc.aio.Channel, fake: FakeProviders
) -> None:
    # Both providers are the fake's ollama format: the first request stalls after two
    # tokens (the connection kept open), the continuation gets a whole answer.
    fake.script("ollama", Script(tokens=6, stall_after=2), Script(tokens=4))
    got = await reason(
        stack, runtime, "", preferred_providers=["stalls", "local"], allow_fallback=True
    )
    assert got.error is None, describe(got.error)
    kinds = got.kinds()
    assert collapse(kinds) == ["attempt", "delta", "switched", "attempt", "delta", "final"]
    switched = got.events[kinds.index("switched")].switched
    assert (switched.from_provider, switched.to_provider, switched.reason) == (
        "stalls",
        "local",
        "PROVIDER_TIMEOUT",
    )
    stalled, continued = fake.requests("ollama")
    assert (stalled.body["model"], stalled.tokens, stalled.completed) == ("llama-stalls", 2, False)
    # The next provider was asked to continue the text the caller already has.
    partial = answer_text(2)
    assert continued.body["messages"][-2:] == [
        {"role": "assistant", "content": partial},
        {"role": "user", "content": CONTINUE_INSTRUCTION},
    ]
    # The fake starts its answer over ("w0 w1 w2 w3 "): the repetition of the partial text is
    # dropped, so the caller reads one text.
    assert got.text() == answer_text(4)
    first, rest = got.events[-1].final.attempts
    assert (first.provider, first.error_reason, first.usage.output_tokens) == (
        "stalls",
        "PROVIDER_TIMEOUT",
        2,
    )
    assert rest.provider == "local"


async def test_a_wrong_base_url_is_a_configuration_error_and_not_retried(
    stack: Stack, runtime: grpc.aio.Channel, fake: FakeProviders
) -> None:
    got = await reason(stack, runtime, "misrouted")
    assert got.error is not None
    details = describe(got.error)
    assert got.error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert details.reason == "PROVIDER_MISCONFIGURED"
    assert details.metadata == {"provider": "misrouted", "urlPath": "/ollama/api/chat"}
    assert got.kinds() == ["attempt"]  # max_retries is 2: a 404 is not retried


async def test_list_providers_shows_the_idle_timeout(stack: Stack) -> None:
    async with stack.channel_as("gateway", "router") as ch:
        reply = await router_pb2_grpc.RouterServiceStub(ch).ListProviders(
            router_pb2.ListProvidersRequest(), timeout=5
        )
    limits = {p.name: p.limits.idle_timeout_ms for p in reply.providers}
    assert (limits["stalls"], limits["local"]) == (300, 15_000)


async def usage_of(stack: Stack, provider: str, calls: int) -> records_pb2.UsageRow:
    """The ledger's row of `provider` for the tests' user, once it counts `calls` attempts."""
    async with stack.channel_as("gateway", "optimizer") as ch:
        stub = optimizer_pb2_grpc.OptimizerServiceStub(ch)
        for _ in range(200):
            reply = await stub.GetUsage(
                optimizer_pb2.GetUsageRequest(
                    user_id="usr_engines", group_by=[records_pb2.USAGE_DIMENSION_PROVIDER]
                ),
                timeout=5,
            )
            row = next((r for r in reply.rows if r.provider == provider), None)
            if row is not None and row.calls >= calls:
                return row
            await asyncio.sleep(0.05)
    raise AssertionError(f"the ledger has no {calls} attempts of {provider}")


async def test_anthropic_cache_writes_are_priced_apart_and_kept_in_the_ledger(
    stack: Stack, runtime: grpc.aio.Channel, fake: FakeProviders
) -> None:
    await set_provider_key(stack, "claude", fake.api_key)
    # 8 input words: 2 read from the cache, 5 written to it, 1 plain; 4 tokens out.
    fake.script("anthropic", Script(tokens=4, cached_tokens=2, cache_write_tokens=5))
    got = await until_answered(stack, runtime, "claude")
    assert got.error is None, describe(got.error)
    final = got.events[-1].final
    usage = final.usage
    assert (usage.input_tokens, usage.cached_tokens, usage.cache_write_tokens) == (8, 2, 5)
    # 1 x 3 + 2 x 0.3 + 5 x 3.75 + 4 x 15 = 82.35 µUSD (writes as input would be 78.6).
    assert final.cost_micro_usd == 82
    assert final.charge_micro_usd == 82  # all_attempts: the caller is charged the cost
    row = await usage_of(stack, "claude", 1)
    assert (row.input_tokens, row.cached_tokens, row.cache_write_tokens) == (8, 2, 5)
    assert (row.cost_micro_usd, row.charge_micro_usd) == (82, 82)
    # The write price is in ListProviders' prices.
    async with stack.channel_as("gateway", "router") as ch:
        reply = await router_pb2_grpc.RouterServiceStub(ch).ListProviders(
            router_pb2.ListProvidersRequest(), timeout=5
        )
    prices = {p.name: p.prices for p in reply.providers}
    assert prices["claude"].cache_write_per_million_micro_usd == 3_750_000
    assert prices["local"].cache_write_per_million_micro_usd == 3_000_000  # its input price
