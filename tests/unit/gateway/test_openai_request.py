"""An OpenAI chat completion body read as the chat pattern's inputs: the conversation split
into system prompt, earlier turns and prompt; every field acted on or refused by name."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format

from services.common.errors import InvalidArgument
from services.gateway.web.openai_request import parse
from services.gateway.web.openai_tools import openai_calls

USER = [{"role": "user", "content": "hi"}]


def inputs(body: dict[str, Any]) -> dict[str, Any]:
    return json_format.MessageToDict(parse(body).inputs)


def test_the_conversation_becomes_system_turns_and_prompt() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}],
            },
            {"role": "assistant", "content": "hi"},
            {"role": "developer", "content": "in French"},
            {"role": "user", "content": "what is a bond"},
        ],
        "max_completion_tokens": 50,
        "stop": "END",
        "seed": 4,
        "user": "u-1",
        "temperature": 0,
        "n": 1,
        "logprobs": False,
    }
    assert inputs(body) == {
        "system": "be brief\n\nin French",
        "messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}],
        "prompt": "what is a bond",
        "max_tokens": 50.0,
        "stop": ["END"],
        "seed": 4.0,
        "user": "u-1",
        "temperature": 0.0,
    }
    chat = parse(body | {"stream": True, "stream_options": {"include_usage": True}})
    assert (chat.model, chat.stream, chat.include_usage) == ("m", True, True)


@pytest.mark.parametrize(
    ("change", "param", "reason"),
    [
        ({"n": 2}, "n", "PARAMETER_UNSUPPORTED"),
        ({"logprobs": True}, "logprobs", "PARAMETER_UNSUPPORTED"),
        ({"tools": [{"type": "custom", "custom": {}}]}, "tools[0].type", "PARAMETER_UNSUPPORTED"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "x": 1}}]},
            "tools[0].function.x",
            "PARAMETER_UNSUPPORTED",
        ),
        ({"tool_choice": {"type": "allowed_tools"}}, "tool_choice", "PARAMETER_UNSUPPORTED"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "n"}}},
            "response_format.json_schema.schema",
            "OPTION_INVALID",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "n", "schema": {}, "description": "d"},
                }
            },
            "response_format.json_schema.description",
            "PARAMETER_UNSUPPORTED",
        ),
        ({"functions": []}, "functions", "PARAMETER_UNSUPPORTED"),
        ({"frobnicate": 1}, "frobnicate", "PARAMETER_UNKNOWN"),
        ({"temperature": 2.5}, "temperature", "OPTION_INVALID"),
        ({"top_p": "high"}, "top_p", "OPTION_INVALID"),
        ({"presence_penalty": -3}, "presence_penalty", "OPTION_INVALID"),
        ({"max_tokens": 0}, "max_tokens", "OPTION_INVALID"),
        (
            {"max_tokens": 10, "max_completion_tokens": 20},
            "max_completion_tokens",
            "OPTION_INVALID",
        ),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "OPTION_INVALID"),
        ({"seed": 2**60}, "seed", "OPTION_INVALID"),
        ({"user": "u" * 257}, "user", "OPTION_INVALID"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "OPTION_INVALID"),
        ({"model": ""}, "model", "OPTION_INVALID"),
        ({"messages": []}, "messages", "OPTION_INVALID"),
        (
            {"messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id",
            "OPTION_INVALID",
        ),
        (
            {"messages": [{"role": "function", "content": "x"}]},
            "messages[0].role",
            "PARAMETER_UNSUPPORTED",
        ),
        (
            {
                "messages": [
                    *USER,
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": "[1]"},
                            }
                        ],
                    },
                    {"role": "tool", "content": "r", "tool_call_id": "c"},
                ]
            },
            "messages[1].tool_calls[0].function.arguments",
            "OPTION_INVALID",
        ),
        (
            {"messages": [{"role": "user", "content": "x", "name": "bob"}]},
            "messages[0].name",
            "PARAMETER_UNSUPPORTED",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0]",
            "PARAMETER_UNSUPPORTED",
        ),
        (
            {"messages": [*USER, {"role": "assistant", "content": "a"}]},
            "messages",
            "OPTION_INVALID",
        ),
    ],
)
def test_a_field_that_is_not_acted_on_is_refused_naming_it(
    change: dict[str, Any], param: str, reason: str
) -> None:
    with pytest.raises(InvalidArgument) as error:
        parse({"model": "m", "messages": USER} | change)
    assert (error.value.field_violations[0].field, error.value.reason) == (param, reason)


def test_unset_fields_are_left_to_the_defaults() -> None:
    assert inputs({"model": "m", "messages": USER, "temperature": None}) == {"prompt": "hi"}


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "the weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True,
    },
}


def test_tools_and_tool_turns_run_the_tool_call_pattern() -> None:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
    }
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]},
            {"role": "tool", "content": "rain", "tool_call_id": "c1"},
        ],
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "temperature": 0.5,
    }
    chat = parse(body)
    assert chat.pattern == "tool_call"
    assert inputs(body) == {
        "system": "be brief",
        "history": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "c1", "name": "get_weather", "arguments": {"city": "Oslo"}}],
            },
            {"role": "tool", "content": "rain", "tool_call_id": "c1"},
        ],
        "tools": [
            {
                "name": "get_weather",
                "description": "the weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "strict": True,
            }
        ],
        "tool_choice": "get_weather",
        "parallel_tool_calls": False,
        "temperature": 0.5,
    }


def test_a_response_format_runs_the_tool_call_pattern_and_text_does_not() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    form = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema, "strict": True}}
    body = {"model": "m", "messages": USER, "response_format": form}
    assert parse(body).pattern == "tool_call"
    assert inputs(body) == {
        "prompt": "hi",
        "response_format": {"type": "json_schema", "name": "n", "schema": schema, "strict": True},
    }
    plain = {"model": "m", "messages": USER, "response_format": {"type": "text"}}
    assert (parse(plain).pattern, inputs(plain)) == ("chat", {"prompt": "hi"})


def test_the_steps_calls_are_openais_with_integers_kept_integers() -> None:
    # The step's output is a Struct, whose numbers are all doubles.
    [call] = openai_calls([{"id": "c", "name": "f", "arguments": {"n": 3.0, "x": [0.5, 2.0]}}])
    assert call == {
        "id": "c",
        "type": "function",
        "function": {"name": "f", "arguments": '{"n":3,"x":[0.5,2]}'},
    }
