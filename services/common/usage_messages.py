"""`Usage` ⇄ `saga.execution.v1.Usage`, the one converter: the router builds the messages
(Final, attempt summaries, outcomes), the runtime reads Final's and builds its own (steps and
runs). Protobuf only, no grpc."""

from __future__ import annotations

from saga.execution.v1 import common_pb2
from services.common.usage import Usage


def usage_proto(usage: Usage) -> common_pb2.Usage:
    """The message of `usage`."""
    return common_pb2.Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
        cached_tokens=usage.cached_tokens,
        estimated=usage.estimated,
        cache_write_tokens=usage.cache_write_tokens,
    )


def usage_from_proto(message: common_pb2.Usage) -> Usage:
    """The usage a message carries (its total is input + output by contract)."""
    return Usage(
        input_tokens=message.input_tokens,
        output_tokens=message.output_tokens,
        cached_tokens=message.cached_tokens,
        estimated=message.estimated,
        cache_write_tokens=message.cache_write_tokens,
    )
