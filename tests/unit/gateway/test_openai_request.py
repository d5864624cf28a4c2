"""An OpenAI chat completion body read as the chat pattern's inputs: the conversation split
into system prompt, earlier turns and prompt; every field acted on or refused by name."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format

from services.common.errors import InvalidArgument
from services.gateway.web.openai_request import parse

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
        ({"tools": []}, "tools", "PARAMETER_UNSUPPORTED"),
        ({"response_format": {"type": "json_object"}}, "response_format", "PARAMETER_UNSUPPORTED"),
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
            "messages[0].role",
            "PARAMETER_UNSUPPORTED",
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
