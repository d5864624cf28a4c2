"""The checks of tool calls and structured answers (`structured`), and how each engine asks
for JSON where its API has no schema mode for the request."""

from __future__ import annotations

import json

import pytest

from services.router.engines.base import ChatMessage, EngineRequest
from services.router.engines.tools import (
    ResponseFormat,
    ResponseFormatType,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
    ToolSpec,
)
from services.router.structured import (
    MAX_ARGUMENT_CHARS,
    answer_problem,
    feedback_request,
    schema_problem,
)
from tests.fakes.providers import FakeProviders

WEATHER = ToolSpec(
    "get_weather",
    parameters_json=json.dumps(
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    ),
)
GOOD = ToolCall("c1", "get_weather", '{"city": "Oslo"}')
ARRAY = ResponseFormat(
    ResponseFormatType.JSON_SCHEMA, "items", json.dumps({"type": "array", "items": {}})
)


def request(**fields: object) -> EngineRequest:
    return EngineRequest(
        messages=(ChatMessage("user", "hi"),),
        system_prompt="",
        max_tokens=10,
        **fields,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("mode", "name", "calls", "problem"),
    [
        (ToolChoiceMode.AUTO, "", (), None),
        (ToolChoiceMode.AUTO, "", (GOOD,), None),
        (ToolChoiceMode.NONE, "", (GOOD,), "no tool call was allowed"),
        (ToolChoiceMode.REQUIRED, "", (), "a tool call was required"),
        (ToolChoiceMode.NAMED, "get_weather", (), "a tool call was required: get_weather"),
        (
            ToolChoiceMode.NAMED,
            "get_time",
            (GOOD,),
            "only the tool get_time may be called",
        ),
    ],
)
def test_the_tool_choice_is_held_whatever_the_provider_enforces(
    mode: ToolChoiceMode, name: str, calls: tuple[ToolCall, ...], problem: str | None
) -> None:
    tools = (WEATHER, ToolSpec("get_time"))
    got = answer_problem(request(tools=tools, tool_choice=ToolChoice(mode, name)), "", calls)
    assert got == problem


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (ToolCall("c1", "delete_all", "{}"), "is not one of the tools"),
        (ToolCall("c1", "get_weather", '{"city": "Os'), "not JSON"),
        (ToolCall("c1", "get_weather", '["Oslo"]'), "not a JSON object"),
        (ToolCall("c1", "get_weather", '{"town": "Oslo"}'), "'city' is a required property"),
        (ToolCall("c1", "get_weather", '{"city": 3}'), "at /city: 3 is not of type 'string'"),
        (
            ToolCall("c1", "get_weather", json.dumps({"city": "x" * MAX_ARGUMENT_CHARS})),
            f"exceed {MAX_ARGUMENT_CHARS} characters",
        ),
    ],
)
def test_a_misfit_tool_call_is_worded_for_the_model(call: ToolCall, words: str) -> None:
    problem = answer_problem(request(tools=(WEATHER,)), "", (call,))
    assert problem is not None
    assert words in problem


def test_a_structured_answer_is_json_of_the_schema() -> None:
    assert answer_problem(request(response_format=ARRAY), "[1, 2]", ()) is None
    assert "not JSON" in (answer_problem(request(response_format=ARRAY), "[1,", ()) or "")
    assert "does not match" in (answer_problem(request(response_format=ARRAY), "{}", ()) or "")
    obj = ResponseFormat(ResponseFormatType.JSON_OBJECT)
    assert answer_problem(request(response_format=obj), "[]", ()) == (
        "the answer is not a JSON object"
    )
    assert answer_problem(request(), "free text", ()) is None


def test_schema_problems_name_what_is_wrong() -> None:
    assert schema_problem('{"type": "object"}', object_schema=True) is None
    assert "object schema" in (schema_problem('{"type": "array"}', object_schema=True) or "")
    assert "not a valid JSON Schema" in (
        schema_problem('{"type": "object", "required": "x"}', object_schema=True) or ""
    )
    assert schema_problem("[]", object_schema=False) == "a JSON Schema object"


def test_the_retry_answers_rejected_calls_with_tool_results_and_text_with_a_user_turn() -> None:
    base = request(tools=(WEATHER,))
    retried = feedback_request(base, "", (GOOD,), "bad city")
    assert [(m.role, m.tool_call_id) for m in retried.messages[1:]] == [
        ("assistant", ""),
        ("tool", "c1"),
    ]
    assert retried.messages[1].tool_calls == (GOOD,)
    assert "bad city" in retried.messages[2].content
    text = feedback_request(request(response_format=ARRAY), "{}", (), "not an array")
    assert [m.role for m in text.messages] == ["user", "assistant", "user"]
    assert text.messages[-1].role == "user", "never an assistant prefill"


async def test_anthropic_asks_in_the_system_prompt_where_no_forced_tool_fits(
    fake: FakeProviders,
) -> None:
    engine = fake.engine("anthropic")
    body = engine.body(request(response_format=ARRAY))  # type: ignore[attr-defined]
    assert "tools" not in body
    assert "JSON Schema" in body["system"]
    with_tools = engine.body(  # type: ignore[attr-defined]
        request(tools=(WEATHER,), response_format=ResponseFormat(ResponseFormatType.JSON_OBJECT))
    )
    assert [t["name"] for t in with_tools["tools"]] == ["get_weather"]
    assert "JSON object" in with_tools["system"]


async def test_ollama_takes_json_in_format_and_has_no_tool_choice(fake: FakeProviders) -> None:
    engine = fake.engine("ollama")
    assert engine.body(request(response_format=ARRAY))["format"] == {  # type: ignore[attr-defined]
        "type": "array",
        "items": {},
    }
    obj = request(response_format=ResponseFormat(ResponseFormatType.JSON_OBJECT))
    assert engine.body(obj)["format"] == "json"  # type: ignore[attr-defined]
    time = ToolSpec("get_time")
    named = request(tools=(WEATHER, time), tool_choice=ToolChoice(ToolChoiceMode.NAMED, "get_time"))
    body = engine.body(named)  # type: ignore[attr-defined]
    assert [t["function"]["name"] for t in body["tools"]] == ["get_time"]
    assert "tool_choice" not in body
    none = request(tools=(WEATHER,), tool_choice=ToolChoice(ToolChoiceMode.NONE))
    assert "tools" not in engine.body(none)  # type: ignore[attr-defined]
