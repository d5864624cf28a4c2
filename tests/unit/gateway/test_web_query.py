"""Query parameters and JSON bodies as request messages, field by field: what fits is the
message, what does not is INVALID_ARGUMENT naming the field (the HTTP door's one parser)."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import MultiDict

from saga.execution.v1 import records_pb2
from saga.gateway.v1 import execution_pb2, usage_pb2
from services.common.errors import InvalidArgument
from services.gateway.web.calls import from_json
from services.gateway.web.query import query_fields


def named(error: InvalidArgument) -> list[str]:
    return [v.field for v in error.field_violations]


def listing(**query: Any) -> execution_pb2.ListExecutionsRequest:
    fields = query_fields(MultiDict(query), execution_pb2.ListExecutionsRequest.DESCRIPTOR)
    return from_json(fields, execution_pb2.ListExecutionsRequest)


def test_parameters_are_the_fields_in_their_json_spelling() -> None:
    got = listing(
        page_size="10",
        status="EXECUTION_STATUS_FAILED",
        all_users="true",
        created_after="2026-01-01T00:00:00Z",
    )
    assert (got.page_size, got.status, got.all_users) == (
        10,
        records_pb2.EXECUTION_STATUS_FAILED,
        True,
    )
    assert got.created_after.seconds == 1767225600


def test_a_repeated_field_takes_the_parameter_again_or_commas() -> None:
    query = MultiDict(
        [
            ("group_by", "USAGE_DIMENSION_PROVIDER,USAGE_DIMENSION_DAY"),
            ("group_by", "USAGE_DIMENSION_MODEL"),
        ]
    )
    fields = query_fields(query, usage_pb2.GetUsageRequest.DESCRIPTOR)
    got = from_json(fields, usage_pb2.GetUsageRequest)
    assert list(got.group_by) == [
        records_pb2.USAGE_DIMENSION_PROVIDER,
        records_pb2.USAGE_DIMENSION_DAY,
        records_pb2.USAGE_DIMENSION_MODEL,
    ]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"page_size": "ten"}, "page_size"),
        ({"status": "DONE"}, "status"),
        ({"all_users": "yes please"}, "all_users"),
        ({"created_before": "tomorrow"}, "created_before"),
    ],
)
def test_a_parameter_that_does_not_fit_is_named(query: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        listing(**query)
    assert named(refused.value) == [field]


def test_a_single_field_given_twice_is_refused() -> None:
    query = MultiDict([("pattern_id", "a"), ("pattern_id", "b")])
    with pytest.raises(InvalidArgument) as refused:
        query_fields(query, execution_pb2.ListExecutionsRequest.DESCRIPTOR)
    assert named(refused.value) == ["pattern_id"]


def test_a_message_field_is_no_parameter() -> None:
    with pytest.raises(InvalidArgument) as refused:
        query_fields(MultiDict(inputs="{}"), execution_pb2.ExecuteRequest.DESCRIPTOR)
    assert named(refused.value) == ["inputs"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"pattern_id": 5}, "pattern_id"),
        ({"options": {"strategy": "SOMETIMES"}}, "options.strategy"),
        ({"options": {"max_cost_micro_usd": "a lot"}}, "options.max_cost_micro_usd"),
        ({"options": {"colour": "red"}}, "options.colour"),
        ({"colour": "red"}, "colour"),
        ("a string", "body"),
    ],
)
def test_a_body_that_does_not_fit_names_the_field(body: Any, field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        from_json(body, execution_pb2.ExecuteRequest)
    assert named(refused.value) == [field]
