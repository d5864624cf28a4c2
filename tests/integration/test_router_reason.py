"""The router's Reason over real processes (auth, optimizer, router on loopback, mTLS),
called as the runtime calls it: streaming from sim, request-context checks, input bounds,
injected provider failures and fallback, ranking from the optimizer's snapshot, outcomes.

Circuits are kept shut here (thresholds out of reach): these tests call the failing
providers repeatedly; test_router_circuits covers the breaker."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from saga.execution.v1 import common_pb2
from saga.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
from saga.router.v1 import providers_pb2, router_pb2, router_pb2_grpc
from services.common.context import (
    AUDIENCE,
    ISSUER,
    ContextSigner,
    key_id,
    load_private_key,
)
from services.common.status import describe
from tests.harness import Stack, stack_for

PROVIDERS = """
[[providers]]
name = "smart"
kind = "sim"
model = "sim-smart"
quality = 0.95
latency_ms = 900
ttft_ms = 150
input_micro_usd_per_mtok = 3_000_000
output_micro_usd_per_mtok = 15_000_000
[providers.sim]
token_interval_ms = 40
tokens = 6

[[providers]]
name = "cheap"
kind = "sim"
model = "sim-cheap"
quality = 0.4
latency_ms = 300
ttft_ms = 50
input_micro_usd_per_mtok = 1_000_000
output_micro_usd_per_mtok = 2_000_000
[providers.sim]
token_interval_ms = 40
tokens = 6

[[providers]]
name = "down"
kind = "sim"
model = "sim-down"
quality = 0.1
input_micro_usd_per_mtok = 20_000_000
output_micro_usd_per_mtok = 40_000_000
max_retries = 0
[providers.sim]
fail = "unavailable"

[[providers]]
name = "cut"
kind = "sim"
model = "sim-cut"
quality = 0.1
input_micro_usd_per_mtok = 20_000_000
output_micro_usd_per_mtok = 40_000_000
max_retries = 0
[providers.sim]
token_interval_ms = 10
tokens = 6
fail = "unavailable"
fail_after_tokens = 3
"""

NO_CIRCUITS = {
    "SAGA_ROUTER__CIRCUIT_CONSECUTIVE_FAILURES": "1000000",
    "SAGA_ROUTER__CIRCUIT_MIN_CALLS": "1000000",
}
"""Environment that keeps every circuit closed, for tests that fail providers on purpose."""

CHEAPEST = common_pb2.STRATEGY_CHEAPEST
QUALITY = common_pb2.STRATEGY_QUALITY


def new_execution_id() -> str:
    return "exe_" + secrets.token_hex(16)


def mint(stack: Stack, execution_id: str, ttl: float = 60.0) -> str:
    signer = ContextSigner(load_private_key(stack.data_dir / "keys" / "context.key"), 900)
    return signer.mint(
        execution_id=execution_id,
        user_id="usr_test",
        tenant="t1",
        scopes=["execute"],
        credential_id="key_test",
        ttl_seconds=ttl,
    )


def request(
    execution_id: str, text: str = "tell me about sagas", **options: object
) -> router_pb2.ReasonRequest:
    return router_pb2.ReasonRequest(
        messages=[router_pb2.Message(role=router_pb2.ROLE_USER, content=text)],
        accounting=router_pb2.AccountingContext(
            user_id="usr_test", execution_id=execution_id, step_id="answer", pattern_id="chat"
        ),
        **options,  # type: ignore[arg-type]
    )


def collapse(kinds: list[str]) -> list[str]:
    """Event kinds with each run of deltas as one: the router may merge deltas for a reader
    that is slower than the provider (coalescing), so their count is not fixed."""
    return [k for i, k in enumerate(kinds) if k != "delta" or i == 0 or kinds[i - 1] != "delta"]


@dataclass
class Streamed:
    """What a client saw of one Reason stream, with arrival times."""

    events: list[router_pb2.ReasonResponse] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    error: grpc.aio.AioRpcError | None = None

    def kinds(self) -> list[str]:
        return [str(e.WhichOneof("event")) for e in self.events]

    def text(self) -> str:
        return "".join(e.delta.text for e in self.events if e.WhichOneof("event") == "delta")

    def delta_times(self) -> list[float]:
        return [t for e, t in zip(self.events, self.times, strict=True) if e.HasField("delta")]


async def stream_reason(
    ch: grpc.aio.Channel,
    req: router_pb2.ReasonRequest,
    token: str | None,
    metadata: tuple[tuple[str, str], ...] = (),
) -> Streamed:
    if token is not None:
        metadata = (*metadata, ("saga-context", token))
    out = Streamed()
    call = router_pb2_grpc.RouterServiceStub(ch).Reason(req, metadata=metadata, timeout=15)
    try:
        async for event in call:
            out.events.append(event)
            out.times.append(time.monotonic())
    except grpc.aio.AioRpcError as error:
        out.error = error
    return out


async def first_attempt(ch: grpc.aio.Channel, stack: Stack, **options: object) -> str:
    """The provider the router tries first for a call with `options`."""
    exe = new_execution_id()
    call = router_pb2_grpc.RouterServiceStub(ch).Reason(
        request(exe, **options), metadata=(("saga-context", mint(stack, exe)),), timeout=15
    )
    first = await call.read()
    call.cancel()
    assert isinstance(first, router_pb2.ReasonResponse)
    return first.attempt.provider


async def eventually_first(
    ch: grpc.aio.Channel, stack: Stack, expected: str, within: float = 20.0, **options: object
) -> None:
    deadline = time.monotonic() + within
    seen = ""
    while time.monotonic() < deadline:
        seen = await first_attempt(ch, stack, **options)
        if seen == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"router still picks {seen!r}, not {expected!r}, after {within} s")


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with stack_for(
        tmp_path_factory.mktemp("router"),
        ["auth", "optimizer", "router"],
        config=PROVIDERS,
        **NO_CIRCUITS,
    ) as s:
        yield s


@pytest.fixture
async def runtime(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with stack.channel_as("runtime", "router") as ch:
        yield ch


async def test_tokens_stream_as_the_engine_produces_them(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    exe = new_execution_id()
    got = await stream_reason(
        runtime, request(exe, "one two three", pinned_provider="cheap"), mint(stack, exe)
    )
    assert got.error is None, describe(got.error)
    assert collapse(got.kinds()) == collapse(["attempt"] + ["delta"] * 6 + ["final"])
    assert len(got.text().split()) == 6
    assert (got.events[0].attempt.provider, got.events[0].attempt.n) == ("cheap", 1)
    # 6 tokens 40 ms apart: spread over >= 200 ms at the source, so >= 150 ms at the client
    # unless the router buffered them.
    deltas = got.delta_times()
    assert deltas[-1] - deltas[0] >= 0.15
    final = got.events[-1].final
    assert final.text == ""
    assert (final.usage.input_tokens, final.usage.output_tokens) == (3, 6)
    assert final.usage.total_tokens == 9
    # cheap: 1 USD per million input tokens, 2 per million output: 1 and 2 micro-USD each.
    assert final.cost_micro_usd == 3 * 1 + 6 * 2
    assert (final.provider, final.model) == ("cheap", "sim-cheap")
    assert final.finish_reason == 1  # FINISH_REASON_STOP
    assert final.price_table_version.startswith("prices-")
    assert final.latency_ms >= 190
    assert [(a.provider, a.n, a.status) for a in final.attempts] == [("cheap", 1, 1)]


async def test_same_prompt_same_text_other_prompt_other_text(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    texts = []
    for prompt in ("what is a ledger", "what is a ledger", "what is a pricing pack"):
        exe = new_execution_id()
        got = await stream_reason(
            runtime, request(exe, prompt, pinned_provider="cheap"), mint(stack, exe)
        )
        assert got.error is None
        texts.append(got.text())
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]
    assert len(texts[0].split()) == 6


async def test_complete_mode_sends_one_final_with_the_whole_text(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    exe = new_execution_id()
    streamed = await stream_reason(runtime, request(exe, pinned_provider="cheap"), mint(stack, exe))
    exe = new_execution_id()
    complete = await stream_reason(
        runtime,
        request(exe, pinned_provider="cheap", response_mode=common_pb2.RESPONSE_MODE_COMPLETE),
        mint(stack, exe),
    )
    assert complete.kinds() == ["attempt", "final"]
    assert complete.events[-1].final.text == streamed.text()
    assert complete.events[-1].final.usage.output_tokens == 6


async def test_max_tokens_caps_the_answer(stack: Stack, runtime: grpc.aio.Channel) -> None:
    exe = new_execution_id()
    got = await stream_reason(
        runtime, request(exe, pinned_provider="cheap", max_tokens=2), mint(stack, exe)
    )
    assert got.kinds() == ["attempt", "delta", "delta", "final"]
    assert got.events[-1].final.finish_reason == 2  # FINISH_REASON_LENGTH


def forged(stack: Stack, execution_id: str) -> str:
    """Signed with another Ed25519 key, under the real key's id."""
    real_kid = key_id(load_private_key(stack.data_dir / "keys" / "context.key").public_key())
    now = time.time()
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "usr_test",
        "exe": execution_id,
        "scope": "execute",
        "iat": int(now),
        "exp": now + 60,
    }
    return jwt.encode(
        claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": real_kid}
    )


@pytest.mark.parametrize(
    ("case", "code", "expected"),
    [
        ("missing", grpc.StatusCode.UNAUTHENTICATED, "CONTEXT_MISSING"),
        ("forged", grpc.StatusCode.UNAUTHENTICATED, "CONTEXT_INVALID"),
        ("expired", grpc.StatusCode.UNAUTHENTICATED, "CONTEXT_EXPIRED"),
        ("other execution", grpc.StatusCode.PERMISSION_DENIED, "CONTEXT_MISMATCH"),
    ],
)
async def test_a_bad_request_context_is_refused(
    stack: Stack, runtime: grpc.aio.Channel, case: str, code: grpc.StatusCode, expected: str
) -> None:
    exe = new_execution_id()
    token = {
        "missing": None,
        "forged": forged(stack, exe),
        "expired": mint(stack, exe, ttl=-30),
        "other execution": mint(stack, new_execution_id()),
    }[case]
    got = await stream_reason(runtime, request(exe, pinned_provider="cheap"), token)
    assert got.error is not None
    assert got.error.code() == code
    details = describe(got.error)
    assert (details.reason, details.domain) == (expected, "router.saga")
    assert got.events == []
    # Positive control: the same request with a valid context streams.
    ok = await stream_reason(runtime, request(exe, pinned_provider="cheap"), mint(stack, exe))
    assert ok.error is None
    assert ok.kinds()[-1] == "final"


async def test_an_empty_prompt_is_invalid_argument_naming_messages(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    exe = new_execution_id()
    got = await stream_reason(runtime, request(exe, "   "), mint(stack, exe))
    assert got.error is not None
    assert got.error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = describe(got.error)
    assert (details.reason, details.domain) == ("PROMPT_EMPTY", "router.saga")
    assert [v.field for v in details.field_violations] == ["messages"]
    # Positive control: a prompt with words is answered.
    ok = await stream_reason(
        runtime, request(exe, "hello", pinned_provider="cheap"), mint(stack, exe)
    )
    assert ok.error is None


async def test_bad_options_name_their_field(stack: Stack, runtime: grpc.aio.Channel) -> None:
    exe = new_execution_id()
    cases = [
        ({"max_tokens": -1}, "MAX_TOKENS_INVALID", "max_tokens"),
        ({"max_tokens": 40_000}, "MAX_TOKENS_INVALID", "max_tokens"),
        ({"pinned_provider": "nobody"}, "UNKNOWN_PROVIDER", "pinned_provider"),
    ]
    for options, reason_, field_ in cases:
        got = await stream_reason(runtime, request(exe, **options), mint(stack, exe))
        assert got.error is not None
        assert got.error.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = describe(got.error)
        assert details.reason == reason_
        assert [v.field for v in details.field_violations] == [field_]
    ok = await stream_reason(
        runtime, request(exe, max_tokens=32_768, pinned_provider="cheap"), mint(stack, exe)
    )
    assert ok.error is None


async def test_an_undefined_role_and_another_users_accounting_are_refused(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    exe = new_execution_id()
    odd_role = request(exe, pinned_provider="cheap")
    odd_role.messages.add(role=99, content="and you?")  # type: ignore[arg-type]
    other_user = request(exe, pinned_provider="cheap")
    other_user.accounting.user_id = "usr_someone_else"
    for req, reason_, field_ in (
        (odd_role, "ROLE_INVALID", "messages[1].role"),
        (other_user, "ACCOUNTING_INVALID", "accounting.user_id"),
    ):
        got = await stream_reason(runtime, req, mint(stack, exe))
        assert got.error is not None
        assert got.error.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = describe(got.error)
        assert (details.reason, [v.field for v in details.field_violations]) == (
            reason_,
            [field_],
        )
    # Positive controls: an unspecified role is a user's, and an empty accounting user is
    # the context's.
    fine = request(exe, pinned_provider="cheap")
    fine.messages[0].role = router_pb2.ROLE_UNSPECIFIED
    fine.accounting.user_id = ""
    assert (await stream_reason(runtime, fine, mint(stack, exe))).error is None


async def test_an_injected_provider_failure_is_unavailable_with_the_routers_reason(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    exe = new_execution_id()
    got = await stream_reason(runtime, request(exe, pinned_provider="down"), mint(stack, exe))
    assert got.error is not None
    assert got.error.code() == grpc.StatusCode.UNAVAILABLE
    details = describe(got.error)
    assert (details.reason, details.domain) == ("PROVIDER_UNAVAILABLE", "router.saga")
    assert details.metadata == {"provider": "down"}
    assert details.retry_after is not None
    assert got.kinds() == ["attempt"]
    # Positive control: a healthy provider answers the same request.
    ok = await stream_reason(runtime, request(exe, pinned_provider="cheap"), mint(stack, exe))
    assert ok.error is None


async def test_a_failure_after_text_ends_the_stream_after_those_tokens(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    exe = new_execution_id()
    got = await stream_reason(
        runtime, request(exe, pinned_provider="cut", allow_fallback=True), mint(stack, exe)
    )
    # The three tokens sent before the cut (a slow reader may get them merged: coalescing).
    assert collapse(got.kinds()) == ["attempt", "delta"]
    assert len(got.text().split()) == 3
    assert got.error is not None
    assert got.error.code() == grpc.StatusCode.UNAVAILABLE
    assert describe(got.error).reason == "PROVIDER_UNAVAILABLE"


async def test_a_failure_before_text_falls_back_to_the_next_provider(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    exe = new_execution_id()
    got = await stream_reason(
        runtime,
        request(exe, preferred_providers=["down", "cheap"], allow_fallback=True),
        mint(stack, exe),
    )
    assert got.error is None, describe(got.error)
    assert collapse(got.kinds()) == collapse(
        ["attempt", "switched", "attempt"] + ["delta"] * 6 + ["final"]
    )
    assert len(got.text().split()) == 6
    switched = got.events[1].switched
    assert (switched.from_provider, switched.to_provider, switched.reason) == (
        "down",
        "cheap",
        "PROVIDER_UNAVAILABLE",
    )
    assert (got.events[2].attempt.provider, got.events[2].attempt.n) == ("cheap", 2)
    final = got.events[-1].final
    assert final.provider == "cheap"
    assert [(a.provider, a.status, a.error_reason) for a in final.attempts] == [
        ("down", 2, "PROVIDER_UNAVAILABLE"),
        ("cheap", 1, ""),
    ]
    # Negative control: without allow_fallback the same call fails on the first provider.
    exe = new_execution_id()
    refused = await stream_reason(
        runtime, request(exe, preferred_providers=["down", "cheap"]), mint(stack, exe)
    )
    assert refused.error is not None
    assert describe(refused.error).reason == "PROVIDER_UNAVAILABLE"


async def test_the_router_ranks_from_the_optimizers_snapshot(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    # Configuration order puts "smart" first: "cheap" first proves the snapshot is used.
    await eventually_first(runtime, stack, "cheap", strategy=CHEAPEST)
    assert await first_attempt(runtime, stack, strategy=QUALITY) == "smart"


async def test_the_default_strategy_follows_set_default_strategy(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    await eventually_first(runtime, stack, "cheap", strategy=CHEAPEST)
    async with stack.channel_as("gateway", "optimizer") as ch:
        optimizer = optimizer_pb2_grpc.OptimizerServiceStub(ch)
        try:
            reply = await optimizer.SetDefaultStrategy(
                optimizer_pb2.SetDefaultStrategyRequest(strategy=QUALITY), timeout=5
            )
            assert reply.strategy == QUALITY
            await eventually_first(runtime, stack, "smart", within=1.0)
            await optimizer.SetDefaultStrategy(
                optimizer_pb2.SetDefaultStrategyRequest(strategy=CHEAPEST), timeout=5
            )
            await eventually_first(runtime, stack, "cheap", within=1.0)
        finally:
            await optimizer.SetDefaultStrategy(
                optimizer_pb2.SetDefaultStrategyRequest(strategy=common_pb2.STRATEGY_BALANCED),
                timeout=5,
            )


async def test_the_optimizer_records_the_outcome(stack: Stack, runtime: grpc.aio.Channel) -> None:
    assert '"msg": "serving"' in stack.read_log("optimizer")  # the log is being captured
    exe = new_execution_id()
    got = await stream_reason(runtime, request(exe, pinned_provider="cheap"), mint(stack, exe))
    assert got.error is None
    for _ in range(200):  # reported in the background: allow it 10 s
        if exe in stack.read_log("optimizer"):
            break
        await asyncio.sleep(0.05)
    lines = [line for line in stack.read_log("optimizer").splitlines() if exe in line]
    assert len(lines) == 1, lines
    assert '"provider": "cheap"' in lines[0]
    assert '"status": "succeeded"' in lines[0]
    # <execution>:<step>:<attempt set>:<attempt>
    assert f'"outcome_id": "{exe}:answer:' in lines[0]
    assert ':1", ' in lines[0]


async def test_list_providers_describes_the_configuration(stack: Stack) -> None:
    async with stack.channel_as("gateway", "router") as ch:
        reply = await router_pb2_grpc.RouterServiceStub(ch).ListProviders(
            router_pb2.ListProvidersRequest(), timeout=5
        )
    by_name = {p.name: p for p in reply.providers}
    assert list(by_name) == ["smart", "cheap", "down", "cut"]
    cheap = by_name["cheap"]
    assert (cheap.kind, cheap.model, cheap.quality_prior) == ("sim", "sim-cheap", 0.4)
    assert cheap.circuit_state == providers_pb2.CIRCUIT_STATE_CLOSED
    assert cheap.healthy
    assert cheap.prices.input_per_million_micro_usd == 1_000_000
    assert cheap.prices.output_per_million_micro_usd == 2_000_000
    assert cheap.prices.price_table_version.startswith("prices-")
    assert list(cheap.capabilities) == ["chat", "streaming", "tools", "json_output"]
