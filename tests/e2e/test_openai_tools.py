"""Tool calling, structured output and embeddings on the OpenAI-compatible API, called with
the official `openai` Python package (its own helpers: `chat.completions.stream` and its
accumulation, `chat.completions.parse`, `pydantic_function_tool`, `embeddings.create` with
its base64 default) against all six services as real processes, the providers fake HTTP
servers: a tool round trip streamed and not, parallel calls, a JSON Schema answer parsed by
the SDK, embeddings with dimensions, and a call cut mid-arguments falling back from an
OpenAI-format provider to an Anthropic-format one without the client seeing the void call."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from saga.execution.v1 import records_pb2
from saga.gateway.v1 import admin_pb2, admin_pb2_grpc, usage_pb2, usage_pb2_grpc
from tests.e2e.test_budgets import new_user
from tests.e2e.test_execute import bearer
from tests.e2e.test_resilience_gateway import KEEP_CIRCUITS_SHUT, RANK_FAILING_PROVIDERS
from tests.fakes.providers import FakeCall, FakeProviders, Script, answer_text, embedding
from tests.harness import Stack, stack_for

PRICES = "input_micro_usd_per_mtok = 1000000\noutput_micro_usd_per_mtok = 2000000\n"
PROVIDERS = ("oa", "an", "emb")


def config(fake: FakeProviders) -> str:
    """`oa` (OpenAI format, gpt-tools, no retries), `an` (Anthropic format, claude-tools),
    `emb` (an OpenAI-format embedding model only), `ol` (Ollama format, llama-tools), and a
    group `oa` then `an`."""
    return (
        "[[providers]]\n"
        'name = "oa"\nkind = "openai"\nmodel = "gpt-tools"\ncredential = "api_key"\n'
        f'base_url = "{fake.base_url("openai")}"\nmax_retries = 0\n{PRICES}\n'
        "[[providers]]\n"
        'name = "an"\nkind = "anthropic"\nmodel = "claude-tools"\ncredential = "api_key"\n'
        f'base_url = "{fake.base_url("anthropic")}"\nmax_retries = 0\n{PRICES}\n'
        "[[providers]]\n"
        'name = "emb"\nkind = "openai"\nmodel = "embed-fake"\ncredential = "api_key"\n'
        f'base_url = "{fake.base_url("openai")}"\ncapabilities = ["embeddings"]\n{PRICES}\n'
        "[[providers]]\n"
        'name = "ol"\nkind = "ollama"\nmodel = "llama-tools"\n'
        f'base_url = "{fake.base_url("ollama")}"\nmax_retries = 0\n{PRICES}\n'
        "[[gateway.model_groups]]\n"
        'name = "tools/fallback"\nproviders = ["oa", "an"]\n'
    )


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeProviders]:
    async with FakeProviders() as f:
        yield f


@pytest.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeProviders
) -> AsyncIterator[Stack]:
    env = KEEP_CIRCUITS_SHUT | RANK_FAILING_PROVIDERS
    async with stack_for(tmp_path_factory.mktemp("oatools"), config=config(fake), **env) as s:
        async with s.gateway_channel() as ch:
            admin = admin_pb2_grpc.AdminServiceStub(ch)
            for provider in PROVIDERS:
                await admin.SetProviderKey(
                    admin_pb2.SetProviderKeyRequest(provider=provider, api_key=fake.api_key),
                    metadata=bearer(s.admin_key()),
                    timeout=10,
                )
        yield s


@pytest.fixture
async def sdk(stack: Stack, fake: FakeProviders) -> AsyncIterator[openai.AsyncOpenAI]:
    fake.reset()
    base_url = f"http://127.0.0.1:{stack.ports['gateway'].http_port}/v1"
    client = openai.AsyncOpenAI(base_url=base_url, api_key=stack.admin_key(), max_retries=0)
    yield client
    await client.close()


class Weather(BaseModel):
    city: str


WEATHER = openai.pydantic_function_tool(Weather, name="get_weather", description="a city's")
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Oslo?"}]
OSLO = '{"city":"Oslo"}'


def calls(*arguments: str) -> Script:
    return Script(tokens=0, tool_calls=tuple(FakeCall("get_weather", a) for a in arguments))


async def test_a_tool_call_round_trip(sdk: openai.AsyncOpenAI, fake: FakeProviders) -> None:
    fake.script("openai", calls(OSLO))
    first = await sdk.chat.completions.create(model="gpt-tools", messages=ASK, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.type == "function"
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "get_weather",
        {"city": "Oslo"},
    )
    (seen,) = fake.requests("openai")
    assert seen.body["tools"][0]["function"]["name"] == "get_weather"
    assert seen.body["tools"][0]["function"]["parameters"] == WEATHER["function"]["parameters"]

    # The SDK's own message object goes back as the assistant turn, then the tool's result.
    result = {"role": "tool", "tool_call_id": call.id, "content": "12 degrees and rain"}
    second = await sdk.chat.completions.create(
        model="gpt-tools", messages=[*ASK, choice.message, result], tools=[WEATHER]
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == answer_text(5)
    assert second.choices[0].message.tool_calls is None
    sent = fake.requests("openai")[1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["id"] == call.id
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Oslo"}
    assert (sent[2]["tool_call_id"], sent[2]["content"]) == (call.id, "12 degrees and rain")


async def test_a_streamed_tool_call_accumulates_in_the_sdks_helper(
    sdk: openai.AsyncOpenAI, fake: FakeProviders
) -> None:
    fake.script("openai", calls(OSLO))
    async with sdk.chat.completions.stream(
        model="gpt-tools", messages=ASK, tools=[WEATHER]
    ) as stream:
        chunks = [event.chunk async for event in stream if event.type == "chunk"]
        final = await stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls or []
    assert final.choices[0].finish_reason == "tool_calls"
    assert call.function.parsed_arguments == Weather(city="Oslo")
    # OpenAI's chunk shape: the first piece of the call has its id, type and name.
    pieces = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
    assert (pieces[0].index, pieces[0].id, pieces[0].type) == (0, call.id, "function")
    assert pieces[0].function is not None
    assert (pieces[0].function.name, pieces[0].function.arguments) == ("get_weather", "")
    assert all(p.id is None and p.index == 0 for p in pieces[1:])
    assert "".join((p.function.arguments or "") for p in pieces if p.function) == OSLO


async def test_parallel_calls_keep_their_indexes(
    sdk: openai.AsyncOpenAI, fake: FakeProviders
) -> None:
    bergen = '{"city":"Bergen"}'
    fake.script("openai", calls(OSLO, bergen), calls(OSLO, bergen))
    answer = await sdk.chat.completions.create(
        model="gpt-tools", messages=ASK, tools=[WEATHER], parallel_tool_calls=True
    )
    made = answer.choices[0].message.tool_calls or []
    assert [json.loads(c.function.arguments)["city"] for c in made] == ["Oslo", "Bergen"]
    assert len({c.id for c in made}) == 2
    assert fake.requests("openai")[0].body["parallel_tool_calls"] is True
    async with sdk.chat.completions.stream(
        model="gpt-tools", messages=ASK, tools=[WEATHER], parallel_tool_calls=True
    ) as stream:
        final = await stream.get_final_completion()
    streamed = final.choices[0].message.tool_calls or []
    assert [c.function.parsed_arguments for c in streamed] == [
        Weather(city="Oslo"),
        Weather(city="Bergen"),
    ]


class Forecast(BaseModel):
    city: str
    celsius: int


async def test_a_json_schema_answer_is_parsed_by_the_sdk(
    sdk: openai.AsyncOpenAI, fake: FakeProviders
) -> None:
    fake.script("openai", Script(text='{"city": "Oslo", "celsius": 12}'))
    answer = await sdk.chat.completions.parse(
        model="gpt-tools", messages=ASK, response_format=Forecast
    )
    assert answer.choices[0].message.parsed == Forecast(city="Oslo", celsius=12)
    sent = fake.requests("openai")[0].body["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["strict"] is True
    assert sent["json_schema"]["schema"]["required"] == ["city", "celsius"]


async def test_an_answer_that_misses_the_schema_is_never_a_success(
    sdk: openai.AsyncOpenAI, fake: FakeProviders
) -> None:
    # Twice not the schema: the router asks once more, then refuses.
    fake.script("openai", Script(text='{"city": 3}'), Script(text='{"city": 3}'))
    with pytest.raises(openai.APIStatusError) as raised:
        await sdk.chat.completions.parse(model="gpt-tools", messages=ASK, response_format=Forecast)
    assert raised.value.code == "STRUCTURED_OUTPUT_INVALID"


async def test_a_call_cut_mid_arguments_falls_back_without_the_void_call(
    sdk: openai.AsyncOpenAI, fake: FakeProviders
) -> None:
    # oa streams the start of Oslo's arguments and is cut; an (Anthropic) answers Bergen.
    fake.script(
        "openai", Script(tokens=0, tool_calls=(FakeCall("get_weather", OSLO),), tool_cut_after=1)
    )
    fake.script("anthropic", calls('{"city":"Bergen"}'))
    stream = await sdk.chat.completions.create(
        model="tools/fallback", messages=ASK, tools=[WEATHER], stream=True
    )
    chunks = [chunk async for chunk in stream]
    pieces = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
    assert {p.index for p in pieces} == {0}
    assert [p.function.name for p in pieces if p.function and p.function.name] == ["get_weather"]
    assert "".join((p.function.arguments or "") for p in pieces if p.function) == (
        '{"city":"Bergen"}'
    )
    final = chunks[-1]
    assert (final.model, final.choices[0].finish_reason) == ("claude-tools", "tool_calls")
    assert not fake.requests("openai")[0].completed  # cut mid-arguments
    assert len(fake.requests("anthropic")) == 1
    assert fake.requests("anthropic")[0].body["tools"][0]["name"] == "get_weather"


async def test_embeddings_with_dimensions(sdk: openai.AsyncOpenAI, fake: FakeProviders) -> None:
    texts = ["a bond pays coupons", "equity"]
    raw = await sdk.embeddings.with_raw_response.create(
        model="embed-fake", input=texts, dimensions=3
    )
    answer = raw.parse()  # the SDK asked for base64 and decoded it
    assert [d.embedding for d in answer.data] == [embedding(t, 3) for t in texts]
    assert [d.index for d in answer.data] == [0, 1]
    assert answer.model == "embed-fake"
    assert answer.usage.prompt_tokens == sum(len(t.split()) for t in texts)
    assert raw.headers["x-saga-provider"] == "emb"
    assert int(raw.headers["x-saga-cost-micro-usd"]) == answer.usage.prompt_tokens
    (seen,) = fake.requests("openai")
    assert (seen.body["input"], seen.body["dimensions"]) == (texts, 3)
    plain = await sdk.embeddings.create(model="embed-fake", input="one", encoding_format="float")
    assert plain.data[0].embedding == embedding("one", 4)


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"user": "u1"}, "user"), ({"input": [[1, 2]]}, "input"), ({"dimensions": 0}, "dimensions")],
)
async def test_an_embeddings_field_not_built_is_a_bad_request(
    sdk: openai.AsyncOpenAI, fake: FakeProviders, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await sdk.embeddings.create(**({"model": "embed-fake", "input": "x"} | fields))
    assert raised.value.param == param
    assert fake.requests() == []


async def test_models_say_what_they_can_do(sdk: openai.AsyncOpenAI) -> None:
    listed = {m.id: m for m in (await sdk.models.list()).data}
    capabilities = {k: (m.model_extra or {}).get("capabilities") for k, m in listed.items()}
    assert capabilities["embed-fake"] == ["embeddings"]
    assert {"tools", "json_output"} <= set(capabilities["gpt-tools"])
    assert "embeddings" not in capabilities["gpt-tools"]
    assert {"tools", "embeddings"} <= set(capabilities["saga/cheapest"])


async def test_a_tool_schema_that_is_no_json_schema_names_the_tool(
    sdk: openai.AsyncOpenAI, fake: FakeProviders
) -> None:
    bad = {
        "type": "function",
        "function": {"name": "broken", "parameters": {"type": "object", "required": "city"}},
    }
    with pytest.raises(openai.BadRequestError) as raised:
        await sdk.chat.completions.create(model="gpt-tools", messages=ASK, tools=[WEATHER, bad])
    assert (raised.value.code, raised.value.param) == (
        "TOOLS_INVALID",
        "tools[1].function.parameters",
    )
    assert "broken" in raised.value.message
    assert fake.requests() == []


async def test_embeddings_are_in_the_usage_ledger(stack: Stack, sdk: openai.AsyncOpenAI) -> None:
    _, token = await new_user(stack)
    own = openai.AsyncOpenAI(base_url=str(sdk.base_url), api_key=token, max_retries=0)
    async with own:
        answer = await own.embeddings.create(model="embed-fake", input=["two words", "three"])
    by_provider = usage_pb2.GetUsageRequest(group_by=[records_pb2.USAGE_DIMENSION_PROVIDER])
    async with stack.gateway_channel() as ch:
        usage = usage_pb2_grpc.UsageServiceStub(ch)
        for _ in range(150):  # the router's outbox ships outcomes in the background
            reply = await usage.GetUsage(by_provider, metadata=bearer(token), timeout=10)
            if reply.totals.calls >= 1:
                break
            await asyncio.sleep(0.1)
    [row] = reply.rows
    assert (row.provider, row.calls) == ("emb", 1)
    assert row.input_tokens == answer.usage.prompt_tokens == 3
    assert row.cost_micro_usd == 3  # 1 micro-USD an input token (PRICES)


async def test_tool_choice_reaches_the_provider(
    sdk: openai.AsyncOpenAI, fake: FakeProviders
) -> None:
    fake.script("openai", calls(OSLO), calls(OSLO))
    named = {"type": "function", "function": {"name": "get_weather"}}
    await sdk.chat.completions.create(
        model="gpt-tools", messages=ASK, tools=[WEATHER], tool_choice=named
    )
    await sdk.chat.completions.create(
        model="gpt-tools", messages=ASK, tools=[WEATHER], tool_choice="required"
    )
    sent = [seen.body["tool_choice"] for seen in fake.requests("openai")]
    assert sent == [named, "required"]


async def test_a_streamed_json_schema_answer_is_parsed_by_the_sdks_helper(
    sdk: openai.AsyncOpenAI, fake: FakeProviders
) -> None:
    fake.script("openai", Script(text='{"city": "Oslo", "celsius": 12}'))
    async with sdk.chat.completions.stream(
        model="gpt-tools", messages=ASK, response_format=Forecast
    ) as stream:
        final = await stream.get_final_completion()
    assert final.choices[0].message.parsed == Forecast(city="Oslo", celsius=12)


async def test_text_before_the_calls_streams_first(
    sdk: openai.AsyncOpenAI, fake: FakeProviders
) -> None:
    said = Script(tokens=2, tool_calls=(FakeCall("get_weather", OSLO),))
    fake.script("openai", said, said)
    answer = await sdk.chat.completions.create(model="gpt-tools", messages=ASK, tools=[WEATHER])
    assert answer.choices[0].message.content == answer_text(2)
    assert len(answer.choices[0].message.tool_calls or []) == 1
    stream = await sdk.chat.completions.create(
        model="gpt-tools", messages=ASK, tools=[WEATHER], stream=True
    )
    kinds = [
        "calls" if c.choices[0].delta.tool_calls else "text"
        for c in [chunk async for chunk in stream]
        if c.choices and (c.choices[0].delta.content or c.choices[0].delta.tool_calls)
    ]
    assert kinds == sorted(kinds, key=lambda k: k == "calls")  # text, then the calls
    assert set(kinds) == {"text", "calls"}


async def test_a_round_trip_on_an_anthropic_format_provider(
    sdk: openai.AsyncOpenAI, fake: FakeProviders
) -> None:
    fake.script("anthropic", calls(OSLO))
    first = await sdk.chat.completions.create(model="claude-tools", messages=ASK, tools=[WEATHER])
    [call] = first.choices[0].message.tool_calls or []
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    result = {"role": "tool", "tool_call_id": call.id, "content": "rain"}
    second = await sdk.chat.completions.create(
        model="claude-tools", messages=[*ASK, first.choices[0].message, result], tools=[WEATHER]
    )
    assert second.choices[0].message.content == answer_text(5)
    sent = fake.requests("anthropic")[1].body["messages"]
    assert sent[1]["content"][-1] == {
        "type": "tool_use",
        "id": call.id,
        "name": "get_weather",
        "input": {"city": "Oslo"},
    }
    assert sent[2]["content"][0]["type"] == "tool_result"
    assert sent[2]["content"][0]["tool_use_id"] == call.id


async def test_a_round_trip_on_an_ollama_format_provider(
    sdk: openai.AsyncOpenAI, fake: FakeProviders
) -> None:
    fake.script("ollama", calls(OSLO))
    first = await sdk.chat.completions.create(model="llama-tools", messages=ASK, tools=[WEATHER])
    assert first.choices[0].finish_reason == "tool_calls"
    [call] = first.choices[0].message.tool_calls or []
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "get_weather",
        {"city": "Oslo"},
    )
    result = {"role": "tool", "tool_call_id": call.id, "content": "rain"}
    second = await sdk.chat.completions.create(
        model="llama-tools", messages=[*ASK, first.choices[0].message, result], tools=[WEATHER]
    )
    assert second.choices[0].message.content == answer_text(5)
    sent = fake.requests("ollama")[1].body
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assistant, tool = sent["messages"][-2:]
    assert assistant["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": {"city": "Oslo"},
    }
    assert (tool["role"], tool["content"]) == ("tool", "rain")
