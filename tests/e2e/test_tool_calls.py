"""A tool-calling round trip through the gateway (gateway → agent-runtime → router → sim,
real processes): the `tool_call` pattern streams the model's call as tool-call tokens and
returns it in its outputs; the caller runs the tool and sends the result in the next run's
history, and the model answers in text. A response format gives checked JSON; the CLI
prints the calls as they stream."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from saga.gateway.v1 import execution_pb2, execution_pb2_grpc
from services.common.status import describe
from tests.harness import ROOT, Stack

WEATHER = {
    "name": "get_weather",
    "description": "the weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def request(**inputs: Any) -> execution_pb2.ExecuteRequest:
    struct = struct_pb2.Struct()
    struct.update(inputs)
    return execution_pb2.ExecuteRequest(pattern_id="tool_call", inputs=struct)


async def execute(stack: Stack, **inputs: Any) -> list[execution_pb2.ExecuteResponse]:
    async with stack.gateway_channel() as ch:
        call = execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
            request(**inputs),
            metadata=(("authorization", f"Bearer {stack.admin_key()}"),),
            timeout=60,
        )
        return [event async for event in call]


async def watch(stack: Stack, execution_id: str) -> list[execution_pb2.WatchExecutionResponse]:
    async with stack.gateway_channel() as ch:
        call = execution_pb2_grpc.ExecutionServiceStub(ch).WatchExecution(
            execution_pb2.WatchExecutionRequest(execution_id=execution_id),
            metadata=(("authorization", f"Bearer {stack.admin_key()}"),),
            timeout=30,
        )
        return [event async for event in call]


def outputs(events: list[execution_pb2.ExecuteResponse]) -> dict[str, Any]:
    assert events[-1].WhichOneof("event") == "completed", events[-1]
    return json_format.MessageToDict(events[-1].completed.outputs)


async def test_a_tool_round_trip_through_the_gateway(stack: Stack) -> None:
    prompt = "What is the weather in Oslo?"
    first = await execute(stack, prompt=prompt, tools=[WEATHER])
    [call] = outputs(first)["tool_calls"]
    assert call["name"] == "get_weather"
    assert isinstance(call["arguments"]["city"], str)
    pieces = [e.tool_call_token for e in first if e.WhichOneof("event") == "tool_call_token"]
    assert pieces[0].step_id == "answer"
    assert (pieces[0].id, pieces[0].name) == (call["id"], "get_weather")
    assert json.loads("".join(p.arguments for p in pieces)) == call["arguments"]
    assert not [e for e in first if e.WhichOneof("event") == "token"]
    # The run's event log holds the pieces as they were sent: a watcher replays them.
    replayed = await watch(stack, first[0].accepted.execution_id)
    replayed_pieces = [e.tool_call_token for e in replayed if e.HasField("tool_call_token")]
    assert replayed_pieces == pieces

    history = [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "12 degrees and rain", "tool_call_id": call["id"]},
    ]
    second = await execute(stack, history=history, tools=[WEATHER])
    answer = outputs(second)
    assert answer["text"].strip()
    assert answer["tool_calls"] == []
    assert [e for e in second if e.WhichOneof("event") == "token"]


async def test_a_json_schema_answer_arrives_checked(stack: Stack) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "celsius": {"type": "integer"}},
        "required": ["city", "celsius"],
        "additionalProperties": False,
    }
    events = await execute(
        stack,
        prompt="Oslo's weather as JSON",
        response_format={"type": "json_schema", "name": "weather", "schema": schema},
    )
    answer = json.loads(outputs(events)["text"])
    assert set(answer) == {"city", "celsius"}


async def test_a_bad_tool_schema_is_the_routers_invalid_argument(stack: Stack) -> None:
    bad = {"name": "broken", "parameters": {"type": "object", "required": "city"}}
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await execute(stack, prompt="hi", tools=[WEATHER, bad])
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = describe(error.value)
    assert (details.reason, details.domain) == ("TOOLS_INVALID", "router.saga")
    assert "broken" in (error.value.details() or "")


def test_the_cli_prints_a_tool_call_as_it_streams(stack: Stack) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clients.cli",
            "--gateway",
            stack.target("gateway"),
            "--key",
            stack.admin_key(),
            "execute",
            "tool_call",
            "--input",
            "prompt=weather in Oslo?",
            "--input",
            "tools=" + json.dumps([WEATHER]),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "[tool call 0: get_weather call_" in result.stdout
    assert '"city"' in result.stdout
    assert "Traceback" not in result.stderr
