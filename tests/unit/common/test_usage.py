"""The one Usage: totals by contract, sums over attempts, and the same value through its
message and its stored JSON (rows written before it keep reading)."""

from __future__ import annotations

import json

from saga.execution.v1 import common_pb2
from services.common.usage import Usage, usage_from_json, usage_json
from services.common.usage_messages import usage_from_proto, usage_proto

USED = Usage(input_tokens=7, output_tokens=5, cached_tokens=3, estimated=True)


def test_the_total_is_input_plus_output_and_sums_add_every_count() -> None:
    assert USED.total_tokens == 12
    summed = USED + Usage(input_tokens=1, output_tokens=2)
    assert summed == Usage(input_tokens=8, output_tokens=7, cached_tokens=3, estimated=True)
    assert summed.total_tokens == 15
    assert Usage() + Usage(1, 1) == Usage(1, 1, estimated=False)


def test_usage_survives_its_message() -> None:
    message = usage_proto(USED)
    assert message == common_pb2.Usage(
        input_tokens=7, output_tokens=5, total_tokens=12, cached_tokens=3, estimated=True
    )
    assert usage_from_proto(message) == USED


def test_usage_survives_its_stored_json_in_the_form_it_always_had() -> None:
    stored = usage_json(USED)
    assert json.loads(stored) == {
        "input_tokens": 7,
        "output_tokens": 5,
        "total_tokens": 12,
        "cached_tokens": 3,
        "estimated": True,
    }
    assert usage_from_json(stored) == USED
    assert usage_from_json("{}") == Usage()  # the column's default


def test_cache_writes_are_summed_and_kept_through_message_and_json() -> None:
    written = Usage(input_tokens=10, output_tokens=1, cached_tokens=2, cache_write_tokens=6)
    assert (written + written).cache_write_tokens == 12
    assert usage_proto(written).cache_write_tokens == 6
    assert usage_from_proto(usage_proto(written)) == written
    assert json.loads(usage_json(written))["cache_write_tokens"] == 6
    assert usage_from_json(usage_json(written)) == written
