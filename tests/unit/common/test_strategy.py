"""One strategy vocabulary: every enum value of the contract has its strategy and back, and
the configuration offers the strategies that have weights of their own."""

from __future__ import annotations

from saga.execution.v1 import common_pb2
from services.common.config import STRATEGIES, OptimizerConfig
from services.common.strategy import Strategy
from services.common.strategy_proto import FROM_PROTO, TO_PROTO


def test_every_enum_value_but_unspecified_has_a_strategy_and_back() -> None:
    values = set(common_pb2.Strategy.values()) - {common_pb2.STRATEGY_UNSPECIFIED}
    assert set(FROM_PROTO) == values
    assert set(TO_PROTO) == set(Strategy)
    assert all(FROM_PROTO[TO_PROTO[s]] is s for s in Strategy)
    assert common_pb2.STRATEGY_UNSPECIFIED not in FROM_PROTO


def test_names_match_the_enum_names() -> None:
    for value, strategy in FROM_PROTO.items():
        assert common_pb2.Strategy.Name(value) == f"STRATEGY_{strategy.name}"


def test_the_configured_default_may_be_any_strategy_but_custom() -> None:
    assert STRATEGIES == ("cheapest", "fastest", "quality", "balanced", "reliable")
    assert OptimizerConfig().default_strategy == Strategy.BALANCED
