"""Tool calling and structured output over real processes (vault, auth, optimizer, router)
against the fake providers speaking each wire format on loopback: tools and their results
mapped to OpenAI's, Anthropic's and Ollama's shapes, calls streamed and not, parallel
calls, a stream cut in the middle of a call's arguments that falls back from an
OpenAI-format provider to an Anthropic-format one, JSON output through Anthropic's forced
tool, and a structured answer that fails its schema retried once, then refused."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator

import grpc
import pytest

from saga.execution.v1 import common_pb2, reason_events_pb2
from saga.router.v1 import router_pb2, router_pb2_grpc
from services.common.status import describe
from tests.e2e.test_resilience_gateway import KEEP_CIRCUITS_SHUT
from tests.fakes.providers import FakeCall, FakeProviders, Script
from tests.harness import Stack, stack_for
from tests.integration.test_engines_providers import Streamed, mint, set_provider_key

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
    "required": ["city"],
}
WEATHER = router_pb2.Tool(
    name="get_weather", description="weather now", parameters_json=json.dumps(WEATHER_SCHEMA)
)
TIME = router_pb2.Tool(name="get_time", parameters_json='{"type": "object"}')
OSLO = FakeCall("get_weather", '{"city": "Oslo", "unit": "c"}')
BERGEN = FakeCall("get_time", '{"zone": "Europe/Oslo"}')
REVIEW = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "score": {"type": "integer"}},
    "required": ["title", "score"],
    "additionalProperties": False,
}


def config(fake: FakeProviders) -> str:
    return "".join(
        f"""
[[providers]]
name = "{name}"
kind = "{fmt}"
model = "{name}-model"
base_url = "{fake.base_url(fmt)}"
credential = "{"none" if fmt == "ollama" else "api_key"}"
max_retries = 0
first_token_timeout_ms = 5000
"""
        for name, fmt in (("gpt", "openai"), ("claude", "anthropic"), ("llama", "ollama"))
    )


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeProviders]:
    async with FakeProviders(api_key="sk-tools-key") as f:
        yield f


@pytest.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeProviders
) -> AsyncIterator[Stack]:
    async with stack_for(
        tmp_path_factory.mktemp("tools-providers"),
        ["vault", "auth", "optimizer", "router"],
        config=config(fake),
        **KEEP_CIRCUITS_SHUT,
    ) as s:
        await set_provider_key(s, "gpt", fake.api_key)
        await set_provider_key(s, "claude", fake.api_key)
        yield s


@pytest.fixture(autouse=True)
def fresh(fake: FakeProviders) -> None:
    fake.reset()


async def reason(
    stack: Stack, messages: list[router_pb2.Message] | None = None, **options: object
) -> Streamed:
    exe = "exe_" + secrets.token_hex(16)
    req = router_pb2.ReasonRequest(
        messages=messages
        or [router_pb2.Message(role=router_pb2.ROLE_USER, content="weather in Oslo?")],
        accounting=router_pb2.AccountingContext(
            user_id="usr_engines", execution_id=exe, step_id="answer", pattern_id="chat"
        ),
        **options,  # type: ignore[arg-type]
    )
    out = Streamed()
    async with stack.channel_as("runtime", "router") as ch:
        call = router_pb2_grpc.RouterServiceStub(ch).Reason(
            req, metadata=(("saga-context", mint(stack, exe)),), timeout=20
        )
        try:
            async for event in call:
                out.events.append(event)
        except grpc.aio.AioRpcError as error:
            out.error = error
    return out


def calls(got: Streamed) -> list[tuple[str, dict[str, object]]]:
    assert got.error is None, describe(got.error)
    final = got.events[-1].final
    return [(c.name, json.loads(c.arguments_json)) for c in final.tool_calls]


def streamed_arguments(got: Streamed) -> dict[int, str]:
    out: dict[int, str] = {}
    for e in got.events:
        if e.HasField("tool_call_delta"):
            d = e.tool_call_delta
            out[d.index] = out.get(d.index, "") + d.arguments
    return out


@pytest.mark.parametrize(("provider", "fmt"), [("gpt", "openai"), ("claude", "anthropic")])
async def test_a_streamed_tool_call_is_relayed_piece_by_piece_and_whole_in_final(
    stack: Stack, fake: FakeProviders, provider: str, fmt: str
) -> None:
    fake.script(fmt, Script(tokens=0, tool_calls=(OSLO,)))
    got = await reason(stack, tools=[WEATHER], pinned_provider=provider)
    assert calls(got) == [("get_weather", {"city": "Oslo", "unit": "c"})]
    final = got.events[-1].final
    assert final.finish_reason == reason_events_pb2.FINISH_REASON_TOOL_CALLS
    assert final.tool_calls[0].id.startswith("call_fake_" if fmt == "openai" else "toolu_fake_")
    assert streamed_arguments(got) == {0: OSLO.arguments}
    # The fake streamed the arguments in pieces (a slow reader may get them merged).
    assert fake.requests(fmt)[-1].tokens > 2
    body = fake.requests(fmt)[-1].body
    if fmt == "openai":
        assert body["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": WEATHER_SCHEMA,
                    "description": "weather now",
                },
            }
        ]
        assert body["tool_choice"] == "auto"
    else:
        assert body["tools"] == [
            {"name": "get_weather", "description": "weather now", "input_schema": WEATHER_SCHEMA}
        ]
        assert body["tool_choice"] == {"type": "auto"}


@pytest.mark.parametrize(("provider", "fmt"), [("gpt", "openai"), ("claude", "anthropic")])
async def test_parallel_calls_streamed_and_complete(
    stack: Stack, fake: FakeProviders, provider: str, fmt: str
) -> None:
    both = (OSLO, BERGEN)
    fake.script(fmt, Script(tokens=2, tool_calls=both), Script(tokens=2, tool_calls=both))
    streamed = await reason(stack, tools=[WEATHER, TIME], pinned_provider=provider)
    complete = await reason(
        stack,
        tools=[WEATHER, TIME],
        pinned_provider=provider,
        response_mode=common_pb2.RESPONSE_MODE_COMPLETE,
    )
    expected = [
        ("get_weather", json.loads(OSLO.arguments)),
        ("get_time", json.loads(BERGEN.arguments)),
    ]
    assert calls(streamed) == calls(complete) == expected
    assert streamed.text() == "w0 w1 "
    assert complete.events[-1].final.text == "w0 w1 "
    assert streamed_arguments(streamed) == {0: OSLO.arguments, 1: BERGEN.arguments}
    assert not streamed_arguments(complete)


async def test_ollama_calls_come_whole_and_the_router_mints_their_ids(
    stack: Stack, fake: FakeProviders
) -> None:
    fake.script("ollama", Script(tokens=0, tool_calls=(OSLO, BERGEN)))
    got = await reason(stack, tools=[WEATHER, TIME], pinned_provider="llama")
    assert [name for name, _ in calls(got)] == ["get_weather", "get_time"]
    ids = [c.id for c in got.events[-1].final.tool_calls]
    assert all(ids)
    assert len(set(ids)) == 2
    body = fake.requests("ollama")[-1].body
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather", "get_time"]


@pytest.mark.parametrize(("provider", "fmt"), [("gpt", "openai"), ("claude", "anthropic")])
async def test_a_tool_round_trip_sends_calls_and_results_in_the_providers_shape(
    stack: Stack, fake: FakeProviders, provider: str, fmt: str
) -> None:
    history = [
        router_pb2.Message(role=router_pb2.ROLE_USER, content="weather in Oslo?"),
        router_pb2.Message(
            role=router_pb2.ROLE_ASSISTANT,
            content="Let me look.",
            tool_calls=[
                reason_events_pb2.ToolCall(
                    id="call_1", name="get_weather", arguments_json=OSLO.arguments
                )
            ],
        ),
        router_pb2.Message(role=router_pb2.ROLE_TOOL, content="12 C", tool_call_id="call_1"),
    ]
    got = await reason(stack, history, tools=[WEATHER], pinned_provider=provider)
    assert got.error is None, describe(got.error)
    assert got.text() == "w0 w1 w2 w3 w4 "
    sent = fake.requests(fmt)[-1].body["messages"]
    if fmt == "openai":
        assert sent[1:] == [
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": OSLO.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "12 C"},
        ]
    else:
        assert sent[1:] == [
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me look."},
                    {
                        "type": "tool_use",
                        "id": "call_1",
                        "name": "get_weather",
                        "input": json.loads(OSLO.arguments),
                    },
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "12 C"}],
            },
        ]


async def test_tool_choice_and_parallel_flags_reach_each_format(
    stack: Stack, fake: FakeProviders
) -> None:
    named = router_pb2.ToolChoice(mode=router_pb2.TOOL_CHOICE_MODE_NAMED, name="get_time")
    for provider in ("gpt", "claude"):
        fake.script(
            "openai" if provider == "gpt" else "anthropic", Script(tokens=0, tool_calls=(BERGEN,))
        )
        got = await reason(
            stack,
            tools=[WEATHER, TIME],
            tool_choice=named,
            parallel_tool_calls=False,
            pinned_provider=provider,
        )
        assert [n for n, _ in calls(got)] == ["get_time"]
    openai = fake.requests("openai")[-1].body
    assert openai["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    assert openai["parallel_tool_calls"] is False
    anthropic = fake.requests("anthropic")[-1].body
    assert anthropic["tool_choice"] == {
        "type": "tool",
        "name": "get_time",
        "disable_parallel_tool_use": True,
    }


async def test_a_stream_cut_mid_tool_call_falls_back_from_openai_to_anthropic_cleanly(
    stack: Stack, fake: FakeProviders
) -> None:
    fake.script("openai", Script(tokens=2, tool_calls=(OSLO,), tool_cut_after=2))
    fake.script("anthropic", Script(tokens=0, tool_calls=(OSLO,)))
    got = await reason(
        stack, tools=[WEATHER], preferred_providers=["gpt", "claude"], allow_fallback=True
    )
    assert got.error is None, describe(got.error)
    kinds = [k for k in got.kinds() if k not in ("delta", "tool_call_delta")]
    assert kinds == ["attempt", "switched", "attempt", "final"]
    switched = next(e.switched for e in got.events if e.HasField("switched"))
    assert (switched.from_provider, switched.to_provider) == ("gpt", "claude")
    assert switched.tool_calls_discarded
    # Before the switch: a half argument (not JSON); after it, the call again from index 0.
    at = got.kinds().index("switched")
    before = "".join(
        e.tool_call_delta.arguments for e in got.events[:at] if e.HasField("tool_call_delta")
    )
    after = streamed_arguments(Streamed(got.events[at:]))
    with pytest.raises(ValueError):  # noqa: PT011 - the cut half is no JSON
        json.loads(before)
    assert after == {0: OSLO.arguments}
    final = got.events[-1].final
    assert calls(got) == [("get_weather", json.loads(OSLO.arguments))]
    assert final.provider == "claude"
    assert [a.provider for a in final.attempts] == ["gpt", "claude"]
    # The text the caller already has is continued (an assistant turn then a user one: no
    # prefill), the half call is not sent on.
    continued = fake.requests("anthropic")[-1].body["messages"]
    assert [m["role"] for m in continued] == ["user", "assistant", "user"]
    assert continued[1]["content"] == "w0 w1 "
    assert got.text().startswith("w0 w1 ")


async def test_anthropic_json_output_is_a_forced_tool_whose_input_is_the_text(
    stack: Stack, fake: FakeProviders
) -> None:
    answer = {"title": "Sagas", "score": 5}
    fake.script("anthropic", Script(tokens=0, tool_calls=(FakeCall("review", json.dumps(answer)),)))
    form = router_pb2.ResponseFormat(
        type=router_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
        name="review",
        schema_json=json.dumps(REVIEW),
    )
    got = await reason(stack, response_format=form, pinned_provider="claude")
    assert got.error is None, describe(got.error)
    assert json.loads(got.text()) == answer
    final = got.events[-1].final
    assert final.finish_reason == reason_events_pb2.FINISH_REASON_STOP
    assert not final.tool_calls
    body = fake.requests("anthropic")[-1].body
    assert body["tool_choice"] == {"type": "tool", "name": "review"}
    assert body["tools"][0]["input_schema"] == REVIEW


async def test_openai_json_schema_is_sent_and_a_misfit_is_retried_once_with_the_problem(
    stack: Stack, fake: FakeProviders
) -> None:
    good = json.dumps({"title": "Sagas", "score": 5})
    fake.script("openai", Script(text='{"title": "Sagas"}'), Script(text=good))
    form = router_pb2.ResponseFormat(
        type=router_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
        name="review",
        schema_json=json.dumps(REVIEW),
        strict=True,
    )
    got = await reason(stack, response_format=form, pinned_provider="gpt")
    assert got.error is None, describe(got.error)
    assert got.text() == good, "only the checked answer is delivered"
    first, second = fake.requests("openai")
    assert first.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "review", "schema": REVIEW, "strict": True},
    }
    feedback = second.body["messages"][-1]
    assert feedback["role"] == "user"
    assert "score" in feedback["content"]
    switched = next(e.switched for e in got.events if e.HasField("switched"))
    assert (switched.from_provider, switched.to_provider, switched.reason) == (
        "gpt",
        "gpt",
        "STRUCTURED_OUTPUT_INVALID",
    )
    assert len(got.events[-1].final.attempts) == 2


async def test_a_structured_answer_that_misfits_twice_is_refused_never_delivered(
    stack: Stack, fake: FakeProviders
) -> None:
    fake.script("openai", Script(text="not json at all"), Script(text='{"title": 3}'))
    form = router_pb2.ResponseFormat(
        type=router_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
        name="review",
        schema_json=json.dumps(REVIEW),
    )
    got = await reason(stack, response_format=form, pinned_provider="gpt")
    assert got.error is not None
    assert got.error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert describe(got.error).reason == "STRUCTURED_OUTPUT_INVALID"
    assert got.text() == ""
    assert len(fake.requests("openai")) == 2


async def test_tool_arguments_that_misfit_their_schema_are_asked_for_again(
    stack: Stack, fake: FakeProviders
) -> None:
    fake.script(
        "openai",
        Script(tokens=0, tool_calls=(FakeCall("get_weather", '{"town": "Oslo"}'),)),
        Script(tokens=0, tool_calls=(OSLO,)),
    )
    got = await reason(stack, tools=[WEATHER], pinned_provider="gpt")
    assert calls(got) == [("get_weather", json.loads(OSLO.arguments))]
    retry = fake.requests("openai")[-1].body["messages"]
    assert retry[-1]["role"] == "tool"
    assert "city" in retry[-1]["content"]
    switched = next(e.switched for e in got.events if e.HasField("switched"))
    assert switched.tool_calls_discarded
