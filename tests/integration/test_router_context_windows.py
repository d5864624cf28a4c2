"""Context-length fallback over real processes (vault, auth, optimizer, router) against the
fake providers on loopback: a provider whose real window is smaller than configured refuses
a long prompt with its real error; the router reads the window from it, falls back to a
provider with the default window, and from then on passes the small one over for prompts
that long — and only for those."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest

from saga.router.v1 import router_pb2, router_pb2_grpc
from services.common.status import describe
from tests.fakes.providers import FakeProviders, Script
from tests.harness import Stack, stack_for
from tests.integration.test_engines_providers import Streamed, mint, set_provider_key

WINDOW = 1000
"""The small model's real window, in the fake's tokens (words); configured: the default."""

MAX_TOKENS = 50
LONG = "saga " * 1500  # 1,500 tokens to the fake: over WINDOW
FITS_BUT_NOT_THE_ANSWER = "saga " * 960  # 960 + MAX_TOKENS: over WINDOW
SHORT = "tell me about the saga of the river"  # 8


def config(fake: FakeProviders) -> str:
    # Both windows are left at the default (128k): the configuration knows nothing.
    return f"""
[[providers]]
name = "small"
kind = "openai"
model = "gpt-small"
base_url = "{fake.base_url("openai")}"
credential = "api_key"
first_token_timeout_ms = 5000

[[providers]]
name = "claude-small"
kind = "anthropic"
model = "claude-small"
base_url = "{fake.base_url("anthropic")}"
credential = "api_key"
first_token_timeout_ms = 5000

[[providers]]
name = "roomy"
kind = "ollama"
model = "llama-roomy"
base_url = "{fake.base_url("ollama")}"
credential = "none"
first_token_timeout_ms = 5000
"""


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeProviders]:
    async with FakeProviders(api_key="sk-context-window-key") as f:
        yield f


@pytest.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeProviders
) -> AsyncIterator[Stack]:
    async with stack_for(
        tmp_path_factory.mktemp("windows"),
        ["vault", "auth", "optimizer", "router"],
        config=config(fake),
    ) as s:
        await set_provider_key(s, "small", fake.api_key)
        await set_provider_key(s, "claude-small", fake.api_key)
        yield s


async def reason(stack: Stack, ch: grpc.aio.Channel, text: str, **options: object) -> Streamed:
    exe = "exe_" + secrets.token_hex(16)
    req = router_pb2.ReasonRequest(
        messages=[router_pb2.Message(role=router_pb2.ROLE_USER, content=text)],
        accounting=router_pb2.AccountingContext(
            user_id="usr_engines", execution_id=exe, step_id="answer", pattern_id="chat"
        ),
        max_tokens=MAX_TOKENS,
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


@pytest.mark.parametrize(
    ("small", "fmt", "long"),
    [
        # OpenAI: "maximum context length is 1000 tokens. However, your messages resulted
        # in 1500 tokens."
        ("small", "openai", LONG),
        # Anthropic: "input length and `max_tokens` exceed context limit: 960 + 50 > 1000"
        # (a wording the engine used to take for another input error, ending the call).
        ("claude-small", "anthropic", FITS_BUT_NOT_THE_ANSWER),
    ],
)
async def test_a_window_the_provider_states_is_learned_and_the_rest_are_tried(
    stack: Stack, fake: FakeProviders, small: str, fmt: str, long: str
) -> None:
    fake.defaults[fmt] = Script(context_window=WINDOW)
    fallback = {"preferred_providers": [small, "roomy"], "allow_fallback": True}
    async with stack.channel_as("runtime", "router") as ch:
        # The small model refuses, naming its window; the roomy one (default window, like
        # the small one's configured) is tried and answers.
        first = await reason(stack, ch, long, **fallback)
        assert first.error is None, describe(first.error)
        switched = [e.switched for e in first.events if e.HasField("switched")]
        assert [(s.from_provider, s.to_provider, s.reason) for s in switched] == [
            (small, "roomy", "PROVIDER_CONTEXT_LENGTH_EXCEEDED")
        ]
        assert first.events[-1].final.provider == "roomy"
        assert [s.status for s in fake.requests(fmt)] == [400]

        # The same long prompt again: the small one is passed over without a call.
        second = await reason(stack, ch, long, **fallback)
        assert second.error is None, describe(second.error)
        assert second.events[-1].final.provider == "roomy"
        assert len(fake.requests(fmt)) == 1
        assert not [e for e in second.events if e.HasField("switched")]

        # A short prompt fits the learned window: the small one answers it.
        third = await reason(stack, ch, SHORT, **fallback)
        assert third.error is None, describe(third.error)
        assert third.events[-1].final.provider == small
        assert [s.status for s in fake.requests(fmt)] == [400, 200]

        # Only the small one may be called: refused at once, with the window it stated.
        pinned = await reason(stack, ch, long, pinned_provider=small)
        assert pinned.error is not None
        assert pinned.error.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = describe(pinned.error)
        assert details.reason == "PROVIDER_CONTEXT_LENGTH_EXCEEDED"
        assert details.metadata == {"provider": small, "context_window": str(WINDOW)}
        assert len(fake.requests(fmt)) == 2

    # Each pass-over is counted: the second call's and the pinned one's.
    url = f"http://127.0.0.1:{stack.ports['router'].metrics_port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    labels = f'provider="{small}",reason="PROVIDER_CONTEXT_LENGTH_EXCEEDED"'
    counted = f"saga_router_refusals_total{{{labels}}}"
    assert f"{counted} 2.0" in text
