"""An OpenAI embeddings body read as the embed pattern's inputs, every field acted on or
refused by name, and the vectors encoded as OpenAI encodes them (base64: float32, LE)."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest
from google.protobuf import json_format

from services.common.errors import InvalidArgument
from services.gateway.web.openai_embeddings import encoded, parse


def test_input_and_dimensions_become_the_patterns_inputs() -> None:
    asked = parse({"model": "m", "input": "one", "dimensions": 8, "encoding_format": "base64"})
    assert (asked.model, asked.encoding_format) == ("m", "base64")
    assert json_format.MessageToDict(asked.inputs) == {"texts": ["one"], "dimensions": 8.0}
    listed = parse({"model": "m", "input": ["a", "b"], "user": None})
    assert json_format.MessageToDict(listed.inputs) == {"texts": ["a", "b"]}
    assert listed.encoding_format == "float"


@pytest.mark.parametrize(
    ("change", "param", "reason"),
    [
        ({"user": "u"}, "user", "PARAMETER_UNSUPPORTED"),
        ({"input": [1, 2]}, "input", "PARAMETER_UNSUPPORTED"),
        ({"input": [[1, 2]]}, "input", "PARAMETER_UNSUPPORTED"),
        ({"input": []}, "input", "OPTION_INVALID"),
        ({"input": ["a"] * 2049}, "input", "OPTION_INVALID"),
        ({"input": ["a", None]}, "input[1]", "OPTION_INVALID"),
        ({"dimensions": 0}, "dimensions", "OPTION_INVALID"),
        ({"dimensions": True}, "dimensions", "OPTION_INVALID"),
        ({"input": ["a"] * 200, "dimensions": 1251}, "input", "OPTION_INVALID"),
        ({"encoding_format": "int8"}, "encoding_format", "OPTION_INVALID"),
        ({"frobnicate": 1}, "frobnicate", "PARAMETER_UNKNOWN"),
        ({"model": ""}, "model", "OPTION_INVALID"),
    ],
)
def test_a_field_not_acted_on_is_refused_naming_it(
    change: dict[str, Any], param: str, reason: str
) -> None:
    with pytest.raises(InvalidArgument) as error:
        parse({"model": "m", "input": "x"} | change)
    assert (error.value.field_violations[0].field, error.value.reason) == (param, reason)


def test_base64_is_the_vectors_float32_bytes() -> None:
    text = encoded([1.0, -0.5, 0.25], "base64")
    assert isinstance(text, str)
    assert struct.unpack("<3f", base64.b64decode(text)) == (1.0, -0.5, 0.25)
    assert encoded([1.0], "float") == [1.0]
