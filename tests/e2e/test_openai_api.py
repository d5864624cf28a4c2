"""The OpenAI-compatible API on the gateway's HTTP port, called with the official `openai`
Python and Node packages (and curl) against all six services as real processes, the
providers fake HTTP servers: a completion, a stream with usage, a fallback visible in
`model`, a stream cut after text ending in an error (never a clean [DONE]), and the
refusals as the SDKs' own exception classes."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from saga.gateway.v1 import admin_pb2, admin_pb2_grpc, models_pb2, models_pb2_grpc
from tests.e2e.test_budgets import TINY, new_user
from tests.e2e.test_cli import ok, saga_cli
from tests.e2e.test_execute import bearer
from tests.e2e.test_resilience_gateway import KEEP_CIRCUITS_SHUT, RANK_FAILING_PROVIDERS
from tests.fakes.providers import FakeCall, FakeProviders, Script, answer_text
from tests.harness import ROOT, Stack, stack_for

NODE_CLIENT = ROOT / "tests" / "e2e" / "node" / "openai_chat.mjs"
PRICES = "input_micro_usd_per_mtok = 1000000\noutput_micro_usd_per_mtok = 2000000\n"


def config(fake: FakeProviders) -> str:
    """`primary` (Ollama format, model llama-a, no retries) and `backup` (OpenAI format,
    model gpt-fake, an API key), and a group that tries them in that order."""
    return (
        "[[providers]]\n"
        'name = "primary"\nkind = "ollama"\nmodel = "llama-a"\n'
        f'base_url = "{fake.base_url("ollama")}"\nmax_retries = 0\n{PRICES}\n'
        "[[providers]]\n"
        'name = "backup"\nkind = "openai"\nmodel = "gpt-fake"\ncredential = "api_key"\n'
        f'base_url = "{fake.base_url("openai")}"\n{PRICES}\n'
        "[[gateway.model_groups]]\n"
        'name = "team/chat"\nproviders = ["primary", "backup"]\n'
        'description = "primary, then backup"\n'
    )


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeProviders]:
    async with FakeProviders() as f:
        yield f


@pytest.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeProviders
) -> AsyncIterator[Stack]:
    env = KEEP_CIRCUITS_SHUT | RANK_FAILING_PROVIDERS | {"SAGA_BUDGETS__ENABLED": "true"}
    async with stack_for(tmp_path_factory.mktemp("openai"), config=config(fake), **env) as s:
        async with s.gateway_channel() as ch:
            await admin_pb2_grpc.AdminServiceStub(ch).SetProviderKey(
                admin_pb2.SetProviderKeyRequest(provider="backup", api_key=fake.api_key),
                metadata=bearer(s.admin_key()),
                timeout=10,
            )
        yield s


_CLIENTS: list[openai.AsyncOpenAI] = []


@pytest.fixture(autouse=True)
async def fresh(fake: FakeProviders) -> AsyncIterator[None]:
    fake.reset()
    yield
    while _CLIENTS:
        await _CLIENTS.pop().close()


def base_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.ports['gateway'].http_port}/v1"


def client(stack: Stack, key: str | None = None) -> openai.AsyncOpenAI:
    """An SDK client of `stack` (closed after the test); no retries: each refusal must be
    seen as answered, not retried."""
    made = openai.AsyncOpenAI(
        base_url=base_url(stack), api_key=key or stack.admin_key(), max_retries=0
    )
    _CLIENTS.append(made)
    return made


HELLO: list[Any] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hello there"},
    {"role": "assistant", "content": "hi"},
    {"role": "user", "content": "what is a bond"},
]


async def test_a_completion_in_openais_shape(stack: Stack, fake: FakeProviders) -> None:
    raw = await client(stack).chat.completions.with_raw_response.create(
        model="llama-a", messages=HELLO, temperature=0.5, top_p=0.9, seed=7, max_tokens=64
    )
    answer = raw.parse()
    assert answer.object == "chat.completion"
    assert answer.model == "llama-a"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == answer_text(5)
    assert answer.choices[0].finish_reason == "stop"
    execution_id = raw.headers["x-saga-execution-id"]
    assert answer.id == f"chatcmpl-{execution_id}"
    assert raw.headers["x-request-id"] == execution_id
    assert raw.headers["x-saga-provider"] == "primary"

    (seen,) = fake.requests("ollama")
    # The conversation and the sampling fields reached the provider as sent.
    assert [(m["role"], m["content"]) for m in seen.body["messages"]] == [
        ("system", "be brief"),
        ("user", "hello there"),
        ("assistant", "hi"),
        ("user", "what is a bond"),
    ]
    options = seen.body["options"]
    assert (options["temperature"], options["top_p"], options["seed"]) == (0.5, 0.9, 7)
    assert options["num_predict"] == 64
    reported = seen.usage
    assert reported is not None
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == reported[:2]
    assert answer.usage.total_tokens == sum(reported[:2])
    assert answer.usage.prompt_tokens_details is not None
    assert answer.usage.prompt_tokens_details.cached_tokens == 0
    # 1 and 2 micro-USD a token (PRICES).
    assert int(raw.headers["x-saga-cost-micro-usd"]) == reported[0] + 2 * reported[1]


async def test_a_stream_with_usage(stack: Stack, fake: FakeProviders) -> None:
    fake.defaults["ollama"] = Script(tokens=6)
    stream = await client(stack).chat.completions.create(
        model="llama-a",
        messages=[{"role": "user", "content": "stream it"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer_text(6)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert finishes[:-1] == [None] * (len(finishes) - 1)
    # The usage chunk is last, with no choices, and counts what the provider reported.
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    reported = fake.requests("ollama")[0].usage
    assert reported is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == reported[:2]
    assert all(c.usage is None for c in chunks[:-1])


async def test_a_fallback_is_visible_in_model(stack: Stack, fake: FakeProviders) -> None:
    fake.script("ollama", Script(fail="server_error"))
    answer = await client(stack).chat.completions.create(
        model="team/chat", messages=[{"role": "user", "content": "who answers"}]
    )
    assert answer.model == "gpt-fake"
    assert answer.choices[0].message.content == answer_text(5)
    assert [s.status for s in fake.requests("ollama")] == [500]
    assert len(fake.requests("openai")) == 1


async def test_a_stream_cut_after_text_ends_in_an_error(stack: Stack, fake: FakeProviders) -> None:
    # llama-a has one provider: the break cannot be continued elsewhere.
    fake.script("ollama", Script(tokens=8, cut_after=3))
    stream = await client(stack).chat.completions.create(
        model="llama-a", messages=[{"role": "user", "content": "cut me"}], stream=True
    )
    received: list[Any] = []

    async def read_all() -> None:
        async for chunk in stream:
            received.append(chunk)

    with pytest.raises(openai.APIError) as raised:
        await read_all()
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert text == answer_text(3)
    assert all(c.choices[0].finish_reason is None for c in received if c.choices)
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["code"]


async def test_a_bad_key_is_an_authentication_error(stack: Stack) -> None:
    with pytest.raises(openai.AuthenticationError) as raised:
        await client(stack, key="sk-not-a-saga-key").chat.completions.create(
            model="llama-a", messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.status_code == 401
    assert raised.value.code in ("CREDENTIAL_MALFORMED", "CREDENTIAL_UNKNOWN")


async def test_an_unknown_model_is_not_found(stack: Stack, fake: FakeProviders) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        await client(stack).chat.completions.create(
            model="gpt-nonexistent", messages=[{"role": "user", "content": "hi"}]
        )
    assert (raised.value.code, raised.value.param) == ("MODEL_NOT_FOUND", "model")
    assert fake.requests() == []


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"tools": [{"type": "custom", "custom": {"name": "f"}}]}, "tools[0].type"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"temperature": 3.0}, "temperature"),
        # llama-a's only provider speaks Ollama, which has no end-user field.
        ({"user": "end-user-1"}, "user"),
    ],
)
async def test_an_unsupported_field_is_a_bad_request_naming_it(
    stack: Stack, fake: FakeProviders, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await client(stack).chat.completions.create(
            model="llama-a",
            messages=[{"role": "user", "content": "hi"}],
            **fields,
        )
    assert raised.value.param == param
    assert fake.requests() == []


async def test_the_end_user_reaches_a_provider_that_takes_it(
    stack: Stack, fake: FakeProviders
) -> None:
    # Positive control of the refusal above: gpt-fake's engine sends `user`.
    await client(stack).chat.completions.create(
        model="gpt-fake", messages=[{"role": "user", "content": "hi"}], user="end-user-1"
    )
    (seen,) = fake.requests("openai")
    assert seen.body["user"] == "end-user-1"


async def test_a_spent_budget_is_a_rate_limit_error(stack: Stack, fake: FakeProviders) -> None:
    user, token = await new_user(stack)
    ok(saga_cli(stack, "budgets", "set", user, "--amount", TINY, "--period", "day"))
    with pytest.raises(openai.RateLimitError) as raised:
        await client(stack, key=token).chat.completions.create(
            model="llama-a", messages=[{"role": "user", "content": "what does this cost"}]
        )
    assert raised.value.code == "BUDGET_EXHAUSTED"
    assert raised.value.response.headers["x-should-retry"] == "false"
    # A stream refused before any text is the same HTTP error, not an event in a 200.
    with pytest.raises(openai.RateLimitError):
        await client(stack, key=token).chat.completions.create(
            model="llama-a", messages=[{"role": "user", "content": "again"}], stream=True
        )
    assert fake.requests() == []


async def test_models_lists_what_the_rpc_lists(stack: Stack) -> None:
    listed = await client(stack).models.list()
    ids = [m.id for m in listed.data]
    assert ids[:2] == ["llama-a", "gpt-fake"]
    assert {"saga/cheapest", "saga/fastest", "saga/default", "team/chat"} <= set(ids)
    async with stack.gateway_channel() as ch:
        reply = await models_pb2_grpc.ModelServiceStub(ch).ListModels(
            models_pb2.ListModelsRequest(), metadata=bearer(stack.admin_key()), timeout=10
        )
    assert [m.id for m in reply.models] == ids
    group = next(m for m in reply.models if m.id == "team/chat")
    assert list(group.providers) == ["primary", "backup"]


async def test_curl_streams_sse_ending_in_done(stack: Stack) -> None:
    body = {"model": "llama-a", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    result = await asyncio.to_thread(
        subprocess.run,
        [
            "curl", "-sS", "-N", "--max-time", "60",
            "-H", f"Authorization: Bearer {stack.admin_key()}",
            "-H", "Content-Type: application/json",
            "-d", json.dumps(body),
            f"{base_url(stack)}/chat/completions",
        ],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = [line[6:] for line in result.stdout.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == answer_text(5)


async def test_the_node_sdk_gets_the_same_answers_and_refusals(
    stack: Stack, fake: FakeProviders
) -> None:
    user, token = await new_user(stack)
    ok(await asyncio.to_thread(saga_cli, stack, "budgets", "set", user, "--amount", TINY))
    # The group's first call falls back; the stream answers text; the tool call calls.
    oslo = Script(tokens=0, tool_calls=(FakeCall("get_weather", '{"city": "Oslo"}'),))
    fake.script("ollama", Script(fail="server_error"), Script(), oslo)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SAGA_"))}
    env |= {
        "SAGA_OPENAI_BASE_URL": base_url(stack),
        "SAGA_KEY": stack.admin_key(),
        "SAGA_BUDGETED_KEY": token,
    }
    result = await asyncio.to_thread(
        subprocess.run,
        ["node", str(NODE_CLIENT)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["fallback"] == {"model": "gpt-fake", "text": answer_text(5)}
    assert (out["stream"]["text"], out["stream"]["finish_reason"]) == (answer_text(5), "stop")
    assert out["stream"]["usage"]["total_tokens"] > 0
    assert out["tool"] == {
        "finish_reason": "tool_calls",
        "name": "get_weather",
        "arguments": {"city": "Oslo"},
        "answer": answer_text(5),
    }
    assert [m["role"] for m in fake.requests("ollama")[-1].body["messages"]] == [
        "user",
        "assistant",
        "tool",
    ]
    assert out["bad_key"]["status"] == 401
    assert (out["budget"]["status"], out["budget"]["code"]) == (429, "BUDGET_EXHAUSTED")
    assert out["not_found"] == {"status": 404, "code": "MODEL_NOT_FOUND", "param": "model"}
    assert (out["unsupported"]["status"], out["unsupported"]["param"]) == (400, "n")


async def test_saga_models_lists_what_v1_models_lists(stack: Stack) -> None:
    listed = [m.id for m in (await client(stack).models.list()).data]
    shown = await asyncio.to_thread(saga_cli, stack, "models")
    rows = [line.split()[0] for line in ok(shown).splitlines()[1:] if line.strip()]
    assert rows == listed
    assert ok(shown).splitlines()[0].split()[:3] == ["MODEL", "KIND", "PROVIDERS"]
    as_json = json.loads(ok(await asyncio.to_thread(saga_cli, stack, "--json", "models")))
    assert [m["id"] for m in as_json["models"]] == listed


async def test_a_stream_continued_after_a_break_names_the_fallback(
    stack: Stack, fake: FakeProviders
) -> None:
    fake.script("ollama", Script(tokens=8, cut_after=2))
    stream = await client(stack).chat.completions.create(
        model="team/chat",
        messages=[{"role": "user", "content": "keep going"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # primary's two tokens, then backup's continuation: one answer, no error.
    assert text.startswith(answer_text(2))
    assert len(text) > len(answer_text(2))
    assert chunks[0].model == "team/chat"
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert (final.model, final.choices[0].finish_reason) == ("gpt-fake", "stop")
    assert chunks[-1].usage is not None
    assert len(fake.requests("openai")) == 1


def readme_snippet(language: str) -> str:
    """The README's OpenAI SDK snippet in `language` (its first such block in the section)."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Calling Saga with the OpenAI SDKs") :]
    start = section.index(f"```{language}\n") + len(language) + 4
    return section[start : section.index("```", start)]


@pytest.mark.parametrize(
    ("language", "command"),
    [("python", ["python", "-c"]), ("js", ["node", "--input-type=module", "-e"])],
)
async def test_the_readme_snippets_run_as_written(
    stack: Stack, language: str, command: list[str]
) -> None:
    # The snippets call the default stack (port 8080, .saga/admin.key) and model
    # saga/cheapest, which every configuration has; only where they reach is changed here.
    code = (
        readme_snippet(language)
        .replace("http://127.0.0.1:8080/v1", base_url(stack))
        .replace(".saga/admin.key", str(stack.data_dir / "admin.key"))
    )
    executable = {"python": str(ROOT / ".venv" / "bin" / "python")}.get(command[0], command[0])
    result = await asyncio.to_thread(
        subprocess.run,
        [executable, *command[1:], code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    assert answer_text(5).strip() in result.stdout


async def test_one_model_is_retrieved_by_id(stack: Stack) -> None:
    model = await client(stack).models.retrieve("team/chat")
    assert (model.id, model.object, model.owned_by) == ("team/chat", "model", "saga")
    with pytest.raises(openai.NotFoundError) as raised:
        await client(stack).models.retrieve("no-such-model")
    assert raised.value.code == "MODEL_NOT_FOUND"


@pytest.mark.parametrize(
    "body",
    ["not json", "[" * 100_000 + "]" * 100_000, '{"model": "llama-a", "messages": "hi"}'],
    ids=["text", "deep", "wrong-type"],
)
async def test_a_body_that_is_no_request_is_a_bad_request(stack: Stack, body: str) -> None:
    headers = {"Authorization": f"Bearer {stack.admin_key()}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base_url(stack)}/chat/completions", data=body, headers=headers) as response,
    ):
        error = (await response.json())["error"]
    assert response.status == 400
    assert error["type"] == "invalid_request_error"
    assert error["param"] in ("body", "messages")


async def test_a_body_over_the_limit_is_413_in_openais_shape(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.admin_key()}"}
    text = '{"model": "llama-a", "messages": [{"role": "user", "content": "' + "x" * (3 << 20)
    body = io.BytesIO(text.encode())
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base_url(stack)}/chat/completions", data=body, headers=headers) as response,
    ):
        error = (await response.json())["error"]
    assert response.status == 413
    assert (error["type"], error["code"]) == ("invalid_request_error", "REQUEST_TOO_LARGE")
