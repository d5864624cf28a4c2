"""Tool calling and structured output through the router's Reason over real processes
(auth, optimizer, router on loopback) with simulated providers: streamed tool-call deltas
and the complete calls in Final, a tool round trip, parallel calls, a structured answer,
the request bounds, and the capability filter."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest

from saga.execution.v1 import common_pb2, reason_events_pb2
from saga.router.v1 import router_pb2
from services.common.status import describe
from tests.harness import Stack, stack_for
from tests.integration.test_router_reason import (
    Streamed,
    mint,
    new_execution_id,
    request,
    stream_reason,
)

PROVIDERS = """
[[providers]]
name = "tooly"
kind = "sim"
model = "sim-tools"
[providers.sim]
token_interval_ms = 1
tokens = 6

[[providers]]
name = "plain"
kind = "sim"
model = "sim-plain"
capabilities = ["chat", "streaming"]
[providers.sim]
token_interval_ms = 1
tokens = 6
"""

WEATHER = router_pb2.Tool(
    name="get_weather",
    description="the weather in a city",
    parameters_json=json.dumps(
        {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        }
    ),
)
TIME = router_pb2.Tool(
    name="get_time",
    parameters_json=json.dumps({"type": "object", "properties": {"zone": {"type": "string"}}}),
)
SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "score": {"type": "integer", "minimum": 1}},
    "required": ["title", "score"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with stack_for(
        tmp_path_factory.mktemp("tools"), ["auth", "optimizer", "router"], config=PROVIDERS
    ) as s:
        yield s


@pytest.fixture
async def runtime(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with stack.channel_as("runtime", "router") as ch:
        yield ch


async def reason(stack: Stack, ch: grpc.aio.Channel, **options: object) -> Streamed:
    exe = new_execution_id()
    text = str(options.pop("text", "what is the weather in Oslo"))
    return await stream_reason(ch, request(exe, text, **options), mint(stack, exe))


def deltas(got: Streamed) -> list[reason_events_pb2.ToolCallDelta]:
    return [e.tool_call_delta for e in got.events if e.HasField("tool_call_delta")]


def refusal(got: Streamed) -> tuple[grpc.StatusCode, str, list[str], str]:
    assert got.error is not None
    details = describe(got.error)
    return (
        got.error.code(),
        details.reason,
        [v.field for v in details.field_violations],
        got.error.details() or "",
    )


async def test_a_tool_call_streams_as_deltas_and_final_carries_it_complete(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    got = await reason(stack, runtime, tools=[WEATHER])
    assert got.error is None, describe(got.error)
    final = got.events[-1].final
    assert final.finish_reason == reason_events_pb2.FINISH_REASON_TOOL_CALLS
    [call] = final.tool_calls
    assert call.name == "get_weather"
    assert "city" in json.loads(call.arguments_json)
    streamed = deltas(got)
    assert streamed[0].id == call.id
    assert streamed[0].name == "get_weather"
    assert "".join(d.arguments for d in streamed) == call.arguments_json
    assert got.text() == ""


async def test_a_tool_round_trip_ends_in_text(stack: Stack, runtime: grpc.aio.Channel) -> None:
    first = await reason(stack, runtime, tools=[WEATHER])
    [call] = first.events[-1].final.tool_calls
    exe = new_execution_id()
    follow_up = request(exe, "what is the weather in Oslo", tools=[WEATHER])
    follow_up.messages.extend(
        [
            router_pb2.Message(role=router_pb2.ROLE_ASSISTANT, tool_calls=[call]),
            router_pb2.Message(
                role=router_pb2.ROLE_TOOL, content="12 degrees, rain", tool_call_id=call.id
            ),
        ]
    )
    got = await stream_reason(runtime, follow_up, mint(stack, exe))
    assert got.error is None, describe(got.error)
    final = got.events[-1].final
    assert final.finish_reason == reason_events_pb2.FINISH_REASON_STOP
    assert not final.tool_calls
    assert got.text()


async def test_parallel_calls_come_in_index_order_and_can_be_turned_off(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    both = await reason(stack, runtime, tools=[WEATHER, TIME])
    assert both.error is None, describe(both.error)
    assert [c.name for c in both.events[-1].final.tool_calls] == ["get_weather", "get_time"]
    assert {d.index for d in deltas(both)} == {0, 1}
    one = await reason(stack, runtime, tools=[WEATHER, TIME], parallel_tool_calls=False)
    assert [c.name for c in one.events[-1].final.tool_calls] == ["get_weather"]
    named = await reason(
        stack,
        runtime,
        tools=[WEATHER, TIME],
        tool_choice=router_pb2.ToolChoice(mode=router_pb2.TOOL_CHOICE_MODE_NAMED, name="get_time"),
    )
    assert [c.name for c in named.events[-1].final.tool_calls] == ["get_time"]


async def test_complete_mode_sends_the_calls_in_final_only(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    got = await reason(
        stack, runtime, tools=[WEATHER], response_mode=common_pb2.RESPONSE_MODE_COMPLETE
    )
    assert got.kinds() == ["attempt", "final"]
    assert [c.name for c in got.events[-1].final.tool_calls] == ["get_weather"]


async def test_a_json_schema_answer_is_checked_json(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    form = router_pb2.ResponseFormat(
        type=router_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
        name="review",
        schema_json=json.dumps(SCHEMA),
        strict=True,
    )
    got = await reason(stack, runtime, response_format=form)
    assert got.error is None, describe(got.error)
    answer = json.loads(got.text())
    assert set(answer) == {"title", "score"}
    assert got.events[-1].final.attempts[0].provider == "tooly", "plain lacks json_output"


async def test_a_schema_that_is_not_json_schema_is_refused_naming_the_tool(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    bad = router_pb2.Tool(
        name="broken", parameters_json=json.dumps({"type": "object", "properties": 3})
    )
    code, reason_, fields, message = refusal(await reason(stack, runtime, tools=[WEATHER, bad]))
    assert (code, reason_, fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "TOOLS_INVALID",
        ["tools[1].parameters_json"],
    )
    assert "broken" in message
    not_json = router_pb2.Tool(name="nope", parameters_json="{type: object")
    assert refusal(await reason(stack, runtime, tools=[not_json]))[1] == "TOOLS_INVALID"


async def test_tool_bounds_and_rules_name_their_field(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    many = [router_pb2.Tool(name=f"t{i}") for i in range(65)]
    deep: dict[str, object] = {"type": "object"}
    for _ in range(40):
        deep = {"type": "object", "properties": {"x": deep}}
    cases: list[tuple[dict[str, object], str, str]] = [
        ({"tools": many}, "TOOLS_INVALID", "tools"),
        ({"tools": [router_pb2.Tool(name="bad name")]}, "TOOLS_INVALID", "tools[0].name"),
        ({"tools": [WEATHER, WEATHER]}, "TOOLS_INVALID", "tools[1].name"),
        (
            {"tools": [router_pb2.Tool(name="d", parameters_json=json.dumps(deep))]},
            "TOOLS_INVALID",
            "tools[0].parameters_json",
        ),
        (
            {
                "tools": [
                    router_pb2.Tool(name="big", parameters_json=json.dumps({"a": "x" * 40_000}))
                ]
            },
            "TOOLS_INVALID",
            "tools[0].parameters_json",
        ),
        (
            {
                "tools": [WEATHER],
                "tool_choice": router_pb2.ToolChoice(
                    mode=router_pb2.TOOL_CHOICE_MODE_NAMED, name="other"
                ),
            },
            "TOOLS_INVALID",
            "tool_choice.name",
        ),
        (
            {"tool_choice": router_pb2.ToolChoice(mode=router_pb2.TOOL_CHOICE_MODE_REQUIRED)},
            "TOOLS_INVALID",
            "tool_choice",
        ),
        ({"tool_choice": router_pb2.ToolChoice(mode=9)}, "TOOLS_INVALID", "tool_choice.mode"),
        ({"parallel_tool_calls": True}, "TOOLS_INVALID", "parallel_tool_calls"),
        (
            {"response_format": router_pb2.ResponseFormat(type=3)},
            "RESPONSE_FORMAT_INVALID",
            "response_format.schema_json",
        ),
        (
            {"response_format": router_pb2.ResponseFormat(type=3, schema_json='{"type": 5}')},
            "RESPONSE_FORMAT_INVALID",
            "response_format.schema_json",
        ),
        (
            {"response_format": router_pb2.ResponseFormat(type=8)},
            "RESPONSE_FORMAT_INVALID",
            "response_format.type",
        ),
    ]
    for options, reason_, field_ in cases:
        code, got_reason, fields, _ = refusal(await reason(stack, runtime, **options))
        assert (code, got_reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, reason_, [field_])


async def test_tool_messages_must_name_their_call(stack: Stack, runtime: grpc.aio.Channel) -> None:
    exe = new_execution_id()
    req = request(exe, "hello")
    req.messages.append(router_pb2.Message(role=router_pb2.ROLE_TOOL, content="12 degrees"))
    got = await stream_reason(runtime, req, mint(stack, exe))
    assert refusal(got)[1:3] == ("TOOLS_INVALID", ["messages[1].tool_call_id"])
    exe = new_execution_id()
    req = request(exe, "hello")
    req.messages[0].tool_calls.append(
        reason_events_pb2.ToolCall(id="c1", name="get_weather", arguments_json="{}")
    )
    got = await stream_reason(runtime, req, mint(stack, exe))
    assert refusal(got)[1:3] == ("TOOLS_INVALID", ["messages[0].tool_calls"])


async def test_providers_without_the_capability_are_never_called(
    stack: Stack, runtime: grpc.aio.Channel
) -> None:
    got = await reason(stack, runtime, tools=[WEATHER], preferred_providers=["plain"])
    assert got.error is None, describe(got.error)
    assert [a.provider for a in got.events[-1].final.attempts] == ["tooly"]
    pinned = await reason(stack, runtime, tools=[WEATHER], pinned_provider="plain")
    code, reason_, _, _ = refusal(pinned)
    assert (code, reason_) == (grpc.StatusCode.FAILED_PRECONDITION, "NO_CAPABLE_PROVIDER")
    only = await reason(stack, runtime, tools=[WEATHER], allowed_providers=["plain"])
    assert refusal(only)[1] == "NO_CAPABLE_PROVIDER"
