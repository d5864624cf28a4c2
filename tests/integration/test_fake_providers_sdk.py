"""The fake providers' tool-call and structured-output bytes, read by the official `openai`
and `anthropic` SDKs (pinned, test-only): what the engines are tested against is the format
as the providers' own clients read it, not only our reading of the docs. Each SDK calls the
fake over HTTP and accumulates the stream with its own helpers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anthropic
import openai
import pytest

from tests.fakes.providers import FakeCall, FakeProviders, Script

OSLO = FakeCall("get_weather", '{"city": "Oslo", "unit": "c"}')
TIME = FakeCall("get_time", '{"zone": "Europe/Oslo"}')
KEY = "sk-sdk-key"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeProviders]:
    async with FakeProviders(api_key=KEY) as f:
        yield f


@pytest.fixture(autouse=True)
def fresh(fake: FakeProviders) -> None:
    fake.reset()


async def test_openai_sdk_accumulates_the_fakes_streamed_parallel_calls(
    fake: FakeProviders,
) -> None:
    fake.script("openai", Script(tokens=2, tool_calls=(OSLO, TIME)))
    client = openai.AsyncOpenAI(api_key=KEY, base_url=fake.base_url("openai"), max_retries=0)
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
    ]
    async with client.chat.completions.stream(
        model="gpt", messages=[{"role": "user", "content": "weather?"}], tools=tools
    ) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    await client.close()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "w0 w1 "
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("call_fake_0", "get_weather", json.loads(OSLO.arguments)),
        ("call_fake_1", "get_time", json.loads(TIME.arguments)),
    ]


async def test_openai_sdk_reads_the_fakes_complete_tool_call_answer(fake: FakeProviders) -> None:
    fake.script("openai", Script(tokens=0, tool_calls=(OSLO,)))
    client = openai.AsyncOpenAI(api_key=KEY, base_url=fake.base_url("openai"), max_retries=0)
    answer = await client.chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "weather?"}]
    )
    await client.close()
    [call] = answer.choices[0].message.tool_calls or []
    assert (call.function.name, call.function.arguments) == ("get_weather", OSLO.arguments)
    assert answer.choices[0].message.content is None


async def test_anthropic_sdk_accumulates_the_fakes_tool_use_stream(fake: FakeProviders) -> None:
    fake.script("anthropic", Script(tokens=2, tool_calls=(OSLO, TIME)))
    client = anthropic.AsyncAnthropic(
        api_key=KEY, base_url=fake.base_url("anthropic"), max_retries=0
    )
    async with client.messages.stream(
        model="claude",
        max_tokens=100,
        messages=[{"role": "user", "content": "weather?"}],
        tools=[{"name": "get_weather", "input_schema": WEATHER}],
    ) as stream:
        message = await stream.get_final_message()
    await client.close()
    assert message.stop_reason == "tool_use"
    text = [b.text for b in message.content if b.type == "text"]
    uses = [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert text == ["w0 w1 "]
    assert uses == [
        ("toolu_fake_0", "get_weather", json.loads(OSLO.arguments)),
        ("toolu_fake_1", "get_time", json.loads(TIME.arguments)),
    ]


async def test_anthropic_sdk_reads_the_fakes_complete_tool_use_answer(fake: FakeProviders) -> None:
    fake.script("anthropic", Script(tokens=0, tool_calls=(OSLO,)))
    client = anthropic.AsyncAnthropic(
        api_key=KEY, base_url=fake.base_url("anthropic"), max_retries=0
    )
    message = await client.messages.create(
        model="claude", max_tokens=100, messages=[{"role": "user", "content": "weather?"}]
    )
    await client.close()
    [use] = [b for b in message.content if b.type == "tool_use"]
    assert (use.name, use.input) == ("get_weather", json.loads(OSLO.arguments))


async def test_openai_sdk_reads_the_fakes_embeddings(fake: FakeProviders) -> None:
    client = openai.AsyncOpenAI(api_key=KEY, base_url=fake.base_url("openai"), max_retries=0)
    reply = await client.embeddings.create(model="emb", input=["a b", "c"], dimensions=3)
    await client.close()
    assert [d.index for d in reply.data] == [1, 0]  # the fake sends them out of order
    assert reply.usage.prompt_tokens == 3
