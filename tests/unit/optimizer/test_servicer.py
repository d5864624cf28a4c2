"""The optimizer's servicer in process, over a real channel and a real SQLite file: Rank
(strategies, breakdowns, exclusions, capabilities, candidates, the default) and its bad
requests, SetDefaultStrategy (gateway only) and RecordOutcomes deduplication. Watch streams
and shutdown are the process's: tests/integration/test_optimizer_rankings.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from saga.execution.v1 import common_pb2
from saga.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc, ranking_pb2
from services.common.config import load_config
from services.common.database import open_database
from services.common.server import Registration
from services.common.status import describe
from services.common.strategy import Strategy
from services.optimizer.budgets import Budgets
from services.optimizer.ledger import Ledger
from services.optimizer.live_metrics import LiveMetrics
from services.optimizer.priors import PriorStore
from services.optimizer.publisher import RankingPublisher
from services.optimizer.schema import MIGRATIONS
from services.optimizer.servicer import OptimizerServicer, Parts
from services.optimizer.snapshots import SnapshotBoard
from tests.inprocess import serve

PROVIDERS = """
[[providers]]
name = "smart"
kind = "sim"
model = "sim-smart"
quality = 0.95
latency_ms = 900
ttft_ms = 150
input_micro_usd_per_mtok = 3_000_000
output_micro_usd_per_mtok = 15_000_000

[[providers]]
name = "cheap"
kind = "sim"
model = "sim-cheap"
quality = 0.4
latency_ms = 300
ttft_ms = 50
input_micro_usd_per_mtok = 1_000_000
output_micro_usd_per_mtok = 2_000_000
capabilities = ["chat"]

[[providers]]
name = "flaky"
kind = "sim"
model = "sim-flaky"
success_rate = 0.3
"""
"""Three providers: a good expensive one, a cheap one without streaming, and a flaky one
below the success-rate floor."""

S = common_pb2


@pytest.fixture
async def optimizer(tmp_path: Path) -> AsyncIterator[Registration]:
    """The optimizer's servicer over `PROVIDERS` and a fresh SQLite file, wired as
    `services.optimizer.app` wires it with the default configuration (without its
    background tasks: nothing here waits for a publish)."""
    (tmp_path / "saga.toml").write_text(PROVIDERS)
    config = load_config(tmp_path / "saga.toml", env={"SAGA_DATA_DIR": str(tmp_path)})
    db = await open_database("", "", tmp_path, "optimizer", MIGRATIONS)
    live = LiveMetrics(config.providers, window=100, window_seconds=300, prior_weight=10)
    floor = config.optimizer.success_rate_floor  # the default, which leaves the flaky one out
    board = SnapshotBoard(config.providers, Strategy.BALANCED, success_floor=floor)
    publisher = RankingPublisher(live, board, interval=0.1)
    publisher.refresh()
    parts = Parts(publisher, Ledger(db), Budgets(db, config.budgets), PriorStore(db))
    try:
        yield Registration.of(OptimizerServicer(parts))
    finally:
        board.close()
        await db.close()


@pytest.fixture
async def as_router(
    optimizer: Registration,
) -> AsyncIterator[optimizer_pb2_grpc.OptimizerServiceAsyncStub]:
    async with serve("optimizer", optimizer, caller="router") as ch:
        yield optimizer_pb2_grpc.OptimizerServiceStub(ch)


async def test_rank_orders_by_strategy_with_breakdown_and_exclusions(
    as_router: optimizer_pb2_grpc.OptimizerServiceAsyncStub,
) -> None:
    cheapest = await as_router.Rank(
        optimizer_pb2.RankRequest(strategy=S.STRATEGY_CHEAPEST), timeout=5
    )
    assert [r.provider for r in cheapest.ranked] == ["cheap", "smart"]
    assert cheapest.strategy == S.STRATEGY_CHEAPEST
    assert cheapest.weights == ranking_pb2.Weights(cost=1.0)
    # 500 input and 500 output tokens by default, at 1 and 2 micro-USD per token.
    assert cheapest.ranked[0].breakdown.estimated_cost_micro_usd == 1500
    assert (cheapest.ranked[0].score, cheapest.ranked[1].score) == (1.0, 0.0)
    assert [(e.provider, e.reason) for e in cheapest.excluded] == [
        ("flaky", ranking_pb2.EXCLUSION_REASON_LOW_SUCCESS_RATE)
    ]
    quality = await as_router.Rank(
        optimizer_pb2.RankRequest(strategy=S.STRATEGY_QUALITY), timeout=5
    )
    assert [r.provider for r in quality.ranked] == ["smart", "cheap"]


async def test_rank_applies_capabilities_candidates_and_the_default(
    as_router: optimizer_pb2_grpc.OptimizerServiceAsyncStub,
) -> None:
    streaming = await as_router.Rank(
        optimizer_pb2.RankRequest(
            strategy=S.STRATEGY_CHEAPEST, required_capabilities=["streaming"]
        ),
        timeout=5,
    )
    assert [r.provider for r in streaming.ranked] == ["smart"]
    assert ("cheap", ranking_pb2.EXCLUSION_REASON_MISSING_CAPABILITY) in [
        (e.provider, e.reason) for e in streaming.excluded
    ]
    only_smart = await as_router.Rank(
        optimizer_pb2.RankRequest(strategy=S.STRATEGY_CHEAPEST, candidates=["smart"]), timeout=5
    )
    assert [r.provider for r in only_smart.ranked] == ["smart"]
    default = await as_router.Rank(optimizer_pb2.RankRequest(), timeout=5)
    assert default.strategy == S.STRATEGY_BALANCED
    assert default.weights == ranking_pb2.Weights(cost=0.5, latency=0.3, quality=0.2)


@pytest.mark.parametrize(
    ("req", "reason", "field"),
    [
        (optimizer_pb2.RankRequest(candidates=["nobody"]), "UNKNOWN_PROVIDER", "candidates"),
        (
            optimizer_pb2.RankRequest(estimated_input_tokens=-1),
            "RANK_REQUEST_INVALID",
            "estimated_input_tokens",
        ),
        (
            optimizer_pb2.RankRequest(
                strategy=S.STRATEGY_CUSTOM, weights=ranking_pb2.Weights(cost=-1, quality=1)
            ),
            "WEIGHTS_INVALID",
            "weights.cost",
        ),
        (
            # Finite but unbounded: accepted before (and, with another as large, summed to
            # infinity and normalised to all zeros).
            optimizer_pb2.RankRequest(
                strategy=S.STRATEGY_CUSTOM, weights=ranking_pb2.Weights(cost=1e308, quality=1)
            ),
            "WEIGHTS_INVALID",
            "weights.cost",
        ),
        (optimizer_pb2.RankRequest(strategy=S.STRATEGY_CUSTOM), "WEIGHTS_INVALID", "weights"),
    ],
)
async def test_bad_rank_requests_name_their_field(
    as_router: optimizer_pb2_grpc.OptimizerServiceAsyncStub,
    req: optimizer_pb2.RankRequest,
    reason: str,
    field: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await as_router.Rank(req, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = describe(err.value)
    assert (details.reason, details.domain) == (reason, "optimizer.saga")
    assert [v.field for v in details.field_violations] == [field]
    # Positive control: custom weights that are valid rank.
    ok = await as_router.Rank(
        optimizer_pb2.RankRequest(
            strategy=S.STRATEGY_CUSTOM, weights=ranking_pb2.Weights(quality=1)
        ),
        timeout=5,
    )
    assert ok.ranked[0].provider == "smart"


async def test_set_default_strategy_is_for_the_gateway_and_needs_a_strategy(
    optimizer: Registration, as_router: optimizer_pb2_grpc.OptimizerServiceAsyncStub
) -> None:
    req = optimizer_pb2.SetDefaultStrategyRequest(strategy=S.STRATEGY_BALANCED)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await as_router.SetDefaultStrategy(req, timeout=5)
    assert describe(err.value).reason == "CALLER_NOT_ALLOWED"
    async with serve("optimizer", optimizer, caller="gateway") as ch:
        admin = optimizer_pb2_grpc.OptimizerServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await admin.SetDefaultStrategy(optimizer_pb2.SetDefaultStrategyRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert describe(err.value).reason == "STRATEGY_INVALID"
        # Positive control: the gateway setting a real strategy succeeds.
        reply = await admin.SetDefaultStrategy(req, timeout=5)
        assert reply.strategy == S.STRATEGY_BALANCED


def outcome(outcome_id: str) -> optimizer_pb2.Outcome:
    return optimizer_pb2.Outcome(
        outcome_id=outcome_id,
        execution_id=outcome_id.split(":")[0],
        provider="cheap",
        status=optimizer_pb2.OUTCOME_STATUS_SUCCEEDED,
    )


async def test_record_outcomes_counts_each_id_once(
    as_router: optimizer_pb2_grpc.OptimizerServiceAsyncStub,
) -> None:
    batches = [
        optimizer_pb2.RecordOutcomesRequest(outcomes=[outcome("exe_a:s:1"), outcome("exe_a:s:2")]),
        optimizer_pb2.RecordOutcomesRequest(outcomes=[outcome("exe_a:s:2")]),
    ]
    reply = await as_router.RecordOutcomes(iter(batches), timeout=5)
    assert (reply.accepted, reply.duplicates) == (2, 1)
    again = await as_router.RecordOutcomes(iter(batches[:1]), timeout=5)
    assert (again.accepted, again.duplicates) == (0, 2)
    assert sorted(again.accepted_ids) == ["exe_a:s:1", "exe_a:s:2"]  # acknowledged, each


async def test_an_outcome_is_never_refused_for_its_traceparent(
    as_router: optimizer_pb2_grpc.OptimizerServiceAsyncStub,
) -> None:
    traces = {
        "exe_tp:s:1": "00-5af7183fb1d4cf5f11b2d3a4e5f60718-00f067aa0ba902b7-01",  # valid
        "exe_tp:s:2": "not a traceparent",
        "exe_tp:s:3": "00-" + "a" * 5000,  # over the cap: not parsed
        "exe_tp:s:4": "",
    }
    batch = [outcome(i) for i in traces]
    for o in batch:
        o.traceparent = traces[o.outcome_id]
    reply = await as_router.RecordOutcomes(
        iter([optimizer_pb2.RecordOutcomesRequest(outcomes=batch)]), timeout=5
    )
    assert (reply.accepted, list(reply.rejected)) == (4, [])
    assert sorted(reply.accepted_ids) == sorted(traces)


async def test_a_bad_outcome_is_rejected_alone_and_the_others_are_recorded(
    as_router: optimizer_pb2_grpc.OptimizerServiceAsyncStub,
) -> None:
    long_user = outcome("exe_b:s:2")
    long_user.user_id = "u" * 300
    batch = [outcome("exe_b:s:1"), outcome(""), long_user, outcome("exe_b:s:3")]
    reply = await as_router.RecordOutcomes(
        iter([optimizer_pb2.RecordOutcomesRequest(outcomes=batch)]), timeout=5
    )
    assert (reply.accepted, reply.duplicates) == (2, 0)
    assert list(reply.accepted_ids) == ["exe_b:s:1", "exe_b:s:3"]
    assert [(r.outcome_id, r.index, r.field) for r in reply.rejected] == [
        ("", 1, "outcome_id"),
        ("exe_b:s:2", 2, "user_id"),
    ]
    assert reply.rejected[1].problem == "at most 256 characters"


async def test_an_outcome_whose_total_disagrees_with_its_counts_is_rejected(
    as_router: optimizer_pb2_grpc.OptimizerServiceAsyncStub,
) -> None:
    wrong, right, unset = outcome("exe_t:s:1"), outcome("exe_t:s:2"), outcome("exe_t:s:3")
    for o in (wrong, right, unset):
        o.usage.input_tokens, o.usage.output_tokens = 10, 5
    wrong.usage.total_tokens, right.usage.total_tokens = 99, 15
    reply = await as_router.RecordOutcomes(
        iter([optimizer_pb2.RecordOutcomesRequest(outcomes=[wrong, right, unset])]), timeout=5
    )
    assert list(reply.accepted_ids) == ["exe_t:s:2", "exe_t:s:3"]
    assert [(r.outcome_id, r.field) for r in reply.rejected] == [
        ("exe_t:s:1", "usage.total_tokens")
    ]


async def test_set_default_strategy_refuses_unbounded_custom_weights(
    optimizer: Registration,
) -> None:
    huge = ranking_pb2.Weights(cost=1e308, latency=1e308, quality=1e308, reliability=1e308)
    async with serve("optimizer", optimizer, caller="gateway") as ch:
        admin = optimizer_pb2_grpc.OptimizerServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await admin.SetDefaultStrategy(
                optimizer_pb2.SetDefaultStrategyRequest(strategy=S.STRATEGY_CUSTOM, weights=huge),
                timeout=5,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = describe(err.value)
        assert details.reason == "WEIGHTS_INVALID"
        assert [v.field for v in details.field_violations] == [
            "weights.cost",
            "weights.latency",
            "weights.quality",
            "weights.reliability",
        ]
        # Positive control: bounded weights are taken, as given and normalised.
        ok = ranking_pb2.Weights(cost=3, quality=1)
        reply = await admin.SetDefaultStrategy(
            optimizer_pb2.SetDefaultStrategyRequest(strategy=S.STRATEGY_CUSTOM, weights=ok),
            timeout=5,
        )
        assert (reply.weights.cost, reply.weights.quality) == (0.75, 0.25)
