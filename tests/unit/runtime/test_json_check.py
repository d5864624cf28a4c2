"""The JSON Schema subset of `llm.extract`: unsupported keywords are refused (never silently
ignored), values are checked by path, and nesting is bounded on both sides."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.runtime.json_check import MAX_DEPTH, schema_problems, value_problems

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "kind": {"enum": ["a", "b"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "n": {"type": ["integer", "null"]},
    },
    "required": ["kind"],
    "additionalProperties": False,
}


def test_a_supported_schema_has_no_problems() -> None:
    assert schema_problems(SCHEMA) == []


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "object", "oneOf": []}, "keyword 'oneOf' is not supported"),
        ({"type": "strin"}, "the schema.type: one of"),
        ({"properties": {"a": {"type": "date"}}}, "properties.a.type: one of"),
        ({"required": "a"}, "required: a list of property names"),
        ({"enum": []}, "enum: a non-empty list"),
        ({"additionalProperties": {}}, "additionalProperties: true or false"),
        ([], "a schema is an object"),
    ],
)
def test_unsupported_or_malformed_schemas_are_refused(schema: Any, problem: str) -> None:
    assert any(problem in p for p in schema_problems(schema))


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({}, "$.kind: required"),
        ({"kind": "c"}, "$.kind: not one of ['a', 'b']"),
        ({"kind": "a", "tags": ["x", 1]}, "$.tags.1: expected string"),
        ({"kind": "a", "n": 1.5}, "$.n: expected integer or null"),
        ({"kind": "a", "extra": 1}, "$.extra: not a declared property"),
        ({"kind": True}, "$.kind: not one of"),
    ],
)
def test_values_that_do_not_match_are_reported_by_path(value: Any, problem: str) -> None:
    assert any(problem in p for p in value_problems(SCHEMA, value))


def test_matching_values_have_no_problems() -> None:
    assert value_problems(SCHEMA, {"kind": "b", "tags": [], "n": None}) == []
    assert value_problems(SCHEMA, {"kind": "a", "n": 3.0}) == []


def test_nesting_is_bounded() -> None:
    deep: dict[str, Any] = {"type": "array"}
    value: Any = []
    for _ in range(MAX_DEPTH + 2):
        deep = {"type": "array", "items": deep}
        value = [value]
    assert any("nested deeper" in p for p in schema_problems(deep))
    endless: dict[str, Any] = {"type": "array"}
    endless["items"] = endless  # each level of the value is checked one level deeper
    assert any("nested deeper" in p for p in value_problems(endless, value))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=20,
)


@given(json_values, json_values)
def test_any_schema_and_value_give_problems_never_an_exception(schema: Any, value: Any) -> None:
    if not schema_problems(schema):
        value_problems(schema, value)
