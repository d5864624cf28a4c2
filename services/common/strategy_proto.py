"""Strategies ⇄ their `saga.execution.v1.Strategy` enum values, for every service.

STRATEGY_UNSPECIFIED maps to no strategy: each caller says what an unset one means (the
snapshot's default). A value this build does not know is absent from `FROM_PROTO`; each
caller decides how to refuse or skip it, as its contract says.
"""

from __future__ import annotations

from collections.abc import Mapping

from saga.execution.v1 import common_pb2
from services.common.strategy import Strategy

FROM_PROTO: Mapping[int, Strategy] = {
    common_pb2.STRATEGY_CHEAPEST: Strategy.CHEAPEST,
    common_pb2.STRATEGY_FASTEST: Strategy.FASTEST,
    common_pb2.STRATEGY_QUALITY: Strategy.QUALITY,
    common_pb2.STRATEGY_BALANCED: Strategy.BALANCED,
    common_pb2.STRATEGY_RELIABLE: Strategy.RELIABLE,
    common_pb2.STRATEGY_CUSTOM: Strategy.CUSTOM,
}
"""Enum value -> strategy (UNSPECIFIED and unknown values are absent)."""

TO_PROTO: Mapping[Strategy, common_pb2.Strategy.ValueType] = {
    s: common_pb2.Strategy.ValueType(n) for n, s in FROM_PROTO.items()
}
"""Strategy -> its enum value."""
