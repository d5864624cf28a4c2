"""`when` expressions: the grammar parses what docs/patterns.md shows, evaluates by lookup
with the documented meaning, and refuses anything else with ExpressionError — never another
exception, never unbounded work."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.runtime.expressions import (
    MAX_CHARS,
    MAX_DEPTH,
    MAX_NODES,
    ExpressionError,
    parse_expression,
)

SCOPE: dict[str, Any] = {
    "inputs": {"n": 3, "name": "Ada", "flag": True, "tags": ["a", "b"], "none": None},
    "state": {"metrics": {"hhi": 0.31, "top": [{"symbol": "AAPL", "weight": 0.4}]}},
    "ctx": {"asof": "2026-12-01"},
    "session": {},
}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("inputs.n == 3", True),
        ("inputs.n != 3", False),
        ("inputs.n >= 3 and inputs.n < 4", True),
        ("state.metrics.hhi > 0.25", True),
        ("state.metrics.top[0].symbol == 'AAPL'", True),
        ('state.metrics.top[0].symbol in ["AAPL", "MSFT"]', True),
        ("'b' in inputs.tags", True),
        ("'c' not in inputs.tags", True),
        ("'d' in inputs.name", True),
        ("'hhi' in state.metrics", True),
        ("not inputs.flag or inputs.n == 3", True),
        ("not (inputs.flag and inputs.n == 2)", True),
        ("inputs.none == null", True),
        ("inputs.missing == null", True),
        ("inputs.missing", False),
        ("inputs.tags", True),
        ("session.history", False),
        ("inputs.flag == 1", False),  # a boolean is not a number
        ("ctx.asof >= '2026-01-01'", True),
        ("-0.5 < 0", True),
        ("'it\\'s' == \"it's\"", True),
        ("inputs.missing != null and inputs.missing > 3", False),  # short-circuits
    ],
)
def test_expressions_evaluate_as_documented(text: str, value: bool) -> None:
    assert parse_expression(text).holds(SCOPE) is value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty condition"),
        ("inputs.n ==", "expected a value at 11, got the end"),
        ("inputs.n = 3", "unexpected"),
        ("len(inputs.tags) > 1", "uses root 'len'"),
        ("inputs.n.", "unexpected '.'"),
        ("inputs['n']", "names no field below 'inputs'"),
        ("inputs.n + 1", "unexpected"),
        ("(inputs.n == 3", "expected ')'"),
        ("inputs.n == 3 3", "unexpected '3'"),
        ("[inputs.n] == 1", "expected a value"),
        ("ctx.user == 1", "ctx holds only"),
        ("x" * (MAX_CHARS + 1), f"a condition may have {MAX_CHARS}"),
        ("(" * (MAX_DEPTH + 1) + "true" + ")" * (MAX_DEPTH + 1), "nested deeper"),
        ("not " * (MAX_DEPTH + 1) + "true", "nested deeper"),
        (" or ".join(["1<2"] * (MAX_NODES // 3 + 1)), f"more than {MAX_NODES} terms"),
    ],
)
def test_bad_expressions_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse_expression(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("inputs.n > 'a'", "cannot order a number and a string with >"),
        ("inputs.missing > 3", "cannot order null and a number"),
        ("3 in inputs.n", "cannot test a number in a number"),
    ],
)
def test_comparing_what_cannot_be_compared_is_an_error_at_evaluation(
    text: str, message: str
) -> None:
    expression = parse_expression(text)
    with pytest.raises(ExpressionError) as caught:
        expression.holds(SCOPE)
    assert message in str(caught.value)


def test_a_path_is_lookup_in_the_runs_values_never_attribute_access() -> None:
    assert parse_expression("inputs.name.__class__ == null").holds(SCOPE)
    assert parse_expression("inputs.__dict__ == null").holds(SCOPE)


def test_references_list_every_path_read() -> None:
    expression = parse_expression("state.metrics.hhi > 0.25 and not inputs.flag")
    assert [str(r) for r in expression.references] == ["state.metrics.hhi", "inputs.flag"]


_pieces = st.sampled_from(
    [
        "inputs.n",
        "state.metrics.top[0].weight",
        "'x'",
        "3",
        "-1.5",
        "null",
        "true",
        "(",
        ")",
        "[",
        "]",
        ",",
        "==",
        "!=",
        "<",
        ">=",
        "in",
        "not",
        "and",
        "or",
        " ",
        "inputs.tags",
        '"q\\""',
        "ctx.asof",
        "1e5",
        "@",
        "}}",
        "__import__",
    ]
)


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=120), st.lists(_pieces, max_size=40).map(" ".join)))
def test_any_string_parses_and_evaluates_or_raises_expression_error(text: str) -> None:
    with contextlib.suppress(ExpressionError):
        parse_expression(text).holds(SCOPE)
