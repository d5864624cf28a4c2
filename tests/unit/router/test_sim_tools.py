"""The sim engine's tool calls and structured answers: deterministic, valid against the
request's schemas, streamed as argument fragments, and cut by the failure injection like
text."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.common.config import ProviderConfig, SimConfig
from services.router.engines.base import (
    ChatMessage,
    EngineEvent,
    EngineRequest,
    Finish,
    FinishReason,
    ProviderError,
    TextDelta,
)
from services.router.engines.sim import SimEngine
from services.router.engines.tools import (
    ResponseFormat,
    ResponseFormatType,
    ToolCall,
    ToolCallAssembler,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
    ToolSpec,
)
from services.router.structured import output_problem, tool_call_problem

WEATHER = ToolSpec(
    "get_weather",
    "the weather in a city",
    json.dumps(
        {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        }
    ),
)
TIME = ToolSpec(
    "get_time",
    "the time in a zone",
    json.dumps({"type": "object", "properties": {"zone": {"type": "string"}}}),
)


def engine(**sim: Any) -> SimEngine:
    return SimEngine(
        ProviderConfig(
            name="sim-tools", kind="sim", model="m", sim=SimConfig(token_interval_ms=0.0, **sim)
        )
    )


def request(**fields: Any) -> EngineRequest:
    messages = fields.pop("messages", (ChatMessage("user", "weather in Oslo?"),))
    return EngineRequest(messages=messages, system_prompt="", max_tokens=1024, **fields)


async def collect(sim: SimEngine, req: EngineRequest) -> list[EngineEvent]:
    return [event async for event in sim.stream(req)]


async def collect_into(sim: SimEngine, req: EngineRequest, seen: list[EngineEvent]) -> None:
    async for event in sim.stream(req):
        seen.append(event)


def calls_of(events: list[EngineEvent]) -> tuple[ToolCall, ...]:
    assembler = ToolCallAssembler()
    for event in events:
        if isinstance(event, ToolCallDelta):
            assembler.add(event)
    return assembler.calls("minted")


async def test_with_tools_the_sim_calls_the_first_tool_with_valid_arguments() -> None:
    events = await collect(engine(), request(tools=(WEATHER,), parallel_tool_calls=False))
    calls = calls_of(events)
    assert [c.name for c in calls] == ["get_weather"]
    assert tool_call_problem(calls[0], (WEATHER,)) is None
    assert not [e for e in events if isinstance(e, TextDelta)]
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert finish.reason is FinishReason.TOOL_CALLS
    fragments = [e for e in events if isinstance(e, ToolCallDelta) and e.arguments]
    assert len(fragments) > 1, "arguments stream in fragments"


async def test_the_same_conversation_gives_the_same_calls() -> None:
    first = calls_of(await collect(engine(), request(tools=(WEATHER, TIME))))
    again = calls_of(await collect(engine(), request(tools=(WEATHER, TIME))))
    assert first == again


async def test_parallel_calls_call_every_tool_in_order() -> None:
    calls = calls_of(await collect(engine(), request(tools=(WEATHER, TIME))))
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    assert len({c.id for c in calls}) == 2


async def test_a_named_choice_calls_that_tool_and_none_calls_nothing() -> None:
    named = ToolChoice(ToolChoiceMode.NAMED, "get_time")
    calls = calls_of(await collect(engine(), request(tools=(WEATHER, TIME), tool_choice=named)))
    assert [c.name for c in calls] == ["get_time"]
    none = ToolChoice(ToolChoiceMode.NONE)
    events = await collect(engine(), request(tools=(WEATHER,), tool_choice=none))
    assert not calls_of(events)
    assert isinstance(events[-1], Finish)
    assert events[-1].reason is FinishReason.STOP


async def test_after_a_tool_result_the_sim_answers_in_text() -> None:
    messages = (
        ChatMessage("user", "weather in Oslo?"),
        ChatMessage("assistant", "", (ToolCall("call_1", "get_weather", '{"city": "Oslo"}'),)),
        ChatMessage("tool", "12 degrees", tool_call_id="call_1"),
    )
    events = await collect(engine(tokens=4), request(tools=(WEATHER,), messages=messages))
    assert not calls_of(events)
    assert [e for e in events if isinstance(e, TextDelta)]


async def test_a_json_schema_answer_is_valid_json_for_the_schema() -> None:
    fmt = ResponseFormat(ResponseFormatType.JSON_SCHEMA, "weather", WEATHER.parameters_json)
    events = await collect(engine(), request(response_format=fmt))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert output_problem(text, fmt) is None
    obj = ResponseFormat(ResponseFormatType.JSON_OBJECT)
    events = await collect(engine(), request(response_format=obj))
    assert output_problem("".join(e.text for e in events if isinstance(e, TextDelta)), obj) is None


async def test_an_injected_failure_cuts_a_tool_call_mid_arguments() -> None:
    sim = engine(fail="unavailable", fail_after_tokens=3)
    seen: list[EngineEvent] = []
    with pytest.raises(ProviderError):
        await collect_into(sim, request(tools=(WEATHER,)), seen)
    partial = "".join(e.arguments for e in seen if isinstance(e, ToolCallDelta))
    assert partial
    with pytest.raises(ValueError):  # noqa: PT011 - a half argument is no JSON
        json.loads(partial)
