"""`saga.optimizer.v1.OptimizerService`: translation between protobuf and the optimizer's
domain modules (ranking, snapshots, outcome intake).

Built in issue 3: Rank, WatchRankings, SetDefaultStrategy and RecordOutcomes (deduplicated
and logged; the usage ledger and live metrics come with issue 5). GetMetrics, UpdateMetrics
and GetUsage are inherited from the generated base and answer UNIMPLEMENTED.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from saga.execution.v1 import common_pb2
from saga.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc, ranking_pb2
from services.common.errors import FieldViolation, InvalidArgument
from services.common.prices import PriceTable
from services.optimizer.outcomes import SeenOutcomes
from services.optimizer.ranking import (
    STRATEGY_WEIGHTS,
    ProviderStats,
    Ranking,
    Strategy,
    TokenEstimate,
    Weights,
    rank,
)
from services.optimizer.snapshots import Snapshot, SnapshotBoard

log = logging.getLogger("saga.optimizer")

MAX_CANDIDATES = 256
MAX_CAPABILITIES = 32
MAX_NAME_CHARS = 128
MAX_ESTIMATED_TOKENS = 10_000_000
MAX_WATCHED_STRATEGIES = 16
MAX_OUTCOMES_PER_BATCH = 1000
MAX_OUTCOME_ID_CHARS = 256
_DEFAULT = TokenEstimate()

_TO_DOMAIN: dict[int, Strategy] = {
    common_pb2.STRATEGY_CHEAPEST: Strategy.CHEAPEST,
    common_pb2.STRATEGY_FASTEST: Strategy.FASTEST,
    common_pb2.STRATEGY_QUALITY: Strategy.QUALITY,
    common_pb2.STRATEGY_BALANCED: Strategy.BALANCED,
    common_pb2.STRATEGY_RELIABLE: Strategy.RELIABLE,
    common_pb2.STRATEGY_CUSTOM: Strategy.CUSTOM,
}
_TO_PROTO: dict[Strategy, common_pb2.Strategy.ValueType] = {
    s: common_pb2.Strategy.ValueType(n) for n, s in _TO_DOMAIN.items()
}


def _strategy(value: int, field: str) -> Strategy | None:
    """The domain strategy of an enum value; None for UNSPECIFIED."""
    if value == common_pb2.STRATEGY_UNSPECIFIED:
        return None
    strategy = _TO_DOMAIN.get(value)
    if strategy is None:
        raise InvalidArgument(
            f"unknown strategy {value}",
            reason="STRATEGY_INVALID",
            field_violations=[FieldViolation(field, f"unknown strategy {value}")],
        )
    return strategy


def _weights(message: ranking_pb2.Weights) -> Weights:
    return Weights(message.cost, message.latency, message.quality, message.reliability)


def _weights_proto(weights: Weights) -> ranking_pb2.Weights:
    return ranking_pb2.Weights(
        cost=weights.cost,
        latency=weights.latency,
        quality=weights.quality,
        reliability=weights.reliability,
    )


def _bad_weights(field: str) -> InvalidArgument:
    return InvalidArgument(
        "custom weights must be finite, non-negative and not all zero",
        reason="WEIGHTS_INVALID",
        field_violations=[
            FieldViolation(field, "finite, non-negative, and at least one above zero")
        ],
    )


def _ranked_proto(
    ranking: Ranking,
) -> tuple[list[ranking_pb2.RankedProvider], list[ranking_pb2.Exclusion]]:
    ranked = [
        ranking_pb2.RankedProvider(
            provider=r.provider,
            model=r.model,
            score=r.score,
            breakdown=ranking_pb2.ScoreBreakdown(
                cost=r.breakdown.cost,
                latency=r.breakdown.latency,
                quality=r.breakdown.quality,
                reliability=r.breakdown.reliability,
                estimated_cost_micro_usd=r.breakdown.estimated_cost_micro_usd,
            ),
        )
        for r in ranking.ranked
    ]
    excluded = [
        ranking_pb2.Exclusion(
            provider=e.provider,
            reason=ranking_pb2.ExclusionReason.ValueType(e.reason.value),
            detail=e.detail,
        )
        for e in ranking.excluded
    ]
    return ranked, excluded


def _price_table_proto(table: PriceTable) -> ranking_pb2.PriceTable:
    return ranking_pb2.PriceTable(
        version=table.version,
        prices=[
            ranking_pb2.ProviderPrice(
                provider=p.provider,
                model=p.model,
                input_per_million_micro_usd=p.input_micro_usd_per_mtok,
                output_per_million_micro_usd=p.output_micro_usd_per_mtok,
                cached_input_per_million_micro_usd=p.cached_input_micro_usd_per_mtok,
            )
            for p in table.prices
        ],
    )


def snapshot_proto(
    snapshot: Snapshot, requested: Sequence[Strategy | None]
) -> optimizer_pb2.WatchRankingsResponse:
    """The message for one snapshot; None in `requested` stands for the default strategy."""
    wanted = [snapshot.default_strategy if s is None else s for s in requested]
    rankings = []
    for strategy in snapshot.strategies_for(wanted):
        ranked, excluded = _ranked_proto(snapshot.rankings[strategy])
        rankings.append(
            ranking_pb2.StrategyRanking(
                strategy=_TO_PROTO[strategy], ranked=ranked, excluded=excluded
            )
        )
    return optimizer_pb2.WatchRankingsResponse(
        snapshot_version=snapshot.version,
        rankings=rankings,
        price_table=_price_table_proto(snapshot.prices),
        default_strategy=_TO_PROTO[snapshot.default_strategy],
    )


class OptimizerServicer(optimizer_pb2_grpc.OptimizerServiceServicer):
    """The optimizer service; RPCs not overridden here answer UNIMPLEMENTED."""

    def __init__(self, board: SnapshotBoard) -> None:
        self._board = board
        self._known = {s.name for s in board.stats}
        self._seen = SeenOutcomes()

    async def Rank(
        self, request: optimizer_pb2.RankRequest, context: Any
    ) -> optimizer_pb2.RankResponse:
        """Rank the candidates for one call, with score breakdowns and exclusions."""
        current = self._board.current
        strategy = _strategy(request.strategy, "strategy") or current.default_strategy
        weights: Weights | None = None
        if strategy is Strategy.CUSTOM:
            given = _weights(request.weights)
            if request.HasField("weights") and given != Weights():
                if not given.is_valid():
                    raise _bad_weights("weights")
                weights = given
            else:
                weights = current.custom_weights
            if weights is None:
                raise InvalidArgument(
                    "STRATEGY_CUSTOM needs weights: none given and none configured",
                    reason="WEIGHTS_INVALID",
                    field_violations=[FieldViolation("weights", "required for STRATEGY_CUSTOM")],
                )
        ranking = rank(
            self._candidates(request.candidates),
            strategy,
            weights=weights,
            required_capabilities=self._capabilities(request.required_capabilities),
            estimate=TokenEstimate(
                _estimate(
                    request.estimated_input_tokens, "estimated_input_tokens", _DEFAULT.input_tokens
                ),
                _estimate(
                    request.estimated_output_tokens,
                    "estimated_output_tokens",
                    _DEFAULT.output_tokens,
                ),
            ),
        )
        ranked, excluded = _ranked_proto(ranking)
        return optimizer_pb2.RankResponse(
            ranked=ranked,
            excluded=excluded,
            strategy=_TO_PROTO[strategy],
            weights=_weights_proto(ranking.weights),
        )

    async def WatchRankings(
        self, request: optimizer_pb2.WatchRankingsRequest, context: Any
    ) -> AsyncIterator[optimizer_pb2.WatchRankingsResponse]:
        """A full snapshot now, then one whenever it changes; ends when shutdown begins."""
        if len(request.strategies) > MAX_WATCHED_STRATEGIES:
            raise InvalidArgument(
                f"at most {MAX_WATCHED_STRATEGIES} strategies",
                reason="STRATEGY_INVALID",
                field_violations=[FieldViolation("strategies", "too many entries")],
            )
        requested = [_strategy(s, "strategies") for s in request.strategies]
        snapshot: Snapshot | None = self._board.current
        while snapshot is not None:
            yield snapshot_proto(snapshot, requested)
            snapshot = await self._board.next_after(snapshot.version)

    async def SetDefaultStrategy(
        self, request: optimizer_pb2.SetDefaultStrategyRequest, context: Any
    ) -> optimizer_pb2.SetDefaultStrategyResponse:
        """Change the strategy STRATEGY_UNSPECIFIED resolves to; watchers get a new snapshot."""
        strategy = _strategy(request.strategy, "strategy")
        if strategy is None:
            raise InvalidArgument(
                "the default strategy cannot be STRATEGY_UNSPECIFIED",
                reason="STRATEGY_INVALID",
                field_violations=[FieldViolation("strategy", "must name a strategy")],
            )
        weights = _weights(request.weights) if strategy is Strategy.CUSTOM else None
        if weights is not None and not weights.is_valid():
            raise _bad_weights("weights")
        snapshot = self._board.set_default(strategy, weights)
        applied = snapshot.custom_weights if strategy is Strategy.CUSTOM else None
        log.info(
            "default strategy set",
            extra={"strategy": strategy.value, "snapshot_version": snapshot.version},
        )
        return optimizer_pb2.SetDefaultStrategyResponse(
            strategy=_TO_PROTO[strategy],
            weights=_weights_proto(applied or STRATEGY_WEIGHTS[strategy]),
        )

    async def RecordOutcomes(
        self, request_iterator: AsyncIterator[optimizer_pb2.RecordOutcomesRequest], context: Any
    ) -> optimizer_pb2.RecordOutcomesResponse:
        """Accept batches of outcomes; a resent outcome id is acknowledged, not counted."""
        accepted = duplicates = 0
        async for batch in request_iterator:
            if len(batch.outcomes) > MAX_OUTCOMES_PER_BATCH:
                raise InvalidArgument(
                    f"at most {MAX_OUTCOMES_PER_BATCH} outcomes per batch",
                    reason="OUTCOMES_INVALID",
                    field_violations=[FieldViolation("outcomes", "too many entries")],
                )
            for outcome in batch.outcomes:
                if not 0 < len(outcome.outcome_id) <= MAX_OUTCOME_ID_CHARS:
                    raise InvalidArgument(
                        "every outcome needs an outcome_id",
                        reason="OUTCOMES_INVALID",
                        field_violations=[
                            FieldViolation(
                                "outcomes.outcome_id", f"1 to {MAX_OUTCOME_ID_CHARS} characters"
                            )
                        ],
                    )
                if self._seen.add(outcome.outcome_id):
                    accepted += 1
                    _log_outcome(outcome)
                else:
                    duplicates += 1
        return optimizer_pb2.RecordOutcomesResponse(accepted=accepted, duplicates=duplicates)

    def _candidates(self, names: Sequence[str]) -> list[ProviderStats]:
        if not names:
            return list(self._board.stats)
        if len(names) > MAX_CANDIDATES:
            raise InvalidArgument(
                f"at most {MAX_CANDIDATES} candidates",
                reason="RANK_REQUEST_INVALID",
                field_violations=[FieldViolation("candidates", "too many entries")],
            )
        unknown = sorted(set(names) - self._known)
        if unknown:
            shown = ", ".join(n[:MAX_NAME_CHARS] for n in unknown[:5])
            raise InvalidArgument(
                f"unknown provider(s): {shown}",
                reason="UNKNOWN_PROVIDER",
                field_violations=[FieldViolation("candidates", f"not configured: {shown}")],
            )
        wanted = set(names)
        return [s for s in self._board.stats if s.name in wanted]

    @staticmethod
    def _capabilities(capabilities: Sequence[str]) -> list[str]:
        if len(capabilities) > MAX_CAPABILITIES or any(
            len(c) > MAX_NAME_CHARS for c in capabilities
        ):
            raise InvalidArgument(
                f"at most {MAX_CAPABILITIES} capabilities of {MAX_NAME_CHARS} characters",
                reason="RANK_REQUEST_INVALID",
                field_violations=[FieldViolation("required_capabilities", "too many or too long")],
            )
        return list(capabilities)


def _estimate(tokens: int, field: str, default: int) -> int:
    """A token estimate from a request; 0 means `default`."""
    if not 0 <= tokens <= MAX_ESTIMATED_TOKENS:
        raise InvalidArgument(
            f"{field} must be between 0 and {MAX_ESTIMATED_TOKENS}",
            reason="RANK_REQUEST_INVALID",
            field_violations=[FieldViolation(field, f"0 to {MAX_ESTIMATED_TOKENS}")],
        )
    return tokens or default


def _status_name(status: int) -> str:
    """`succeeded`, `failed`, `cancelled` (or the number of a value this build does not know)."""
    try:
        name = optimizer_pb2.OutcomeStatus.Name(status)  # type: ignore[arg-type]
    except ValueError:
        return str(status)
    return name.removeprefix("OUTCOME_STATUS_").lower()


def _log_outcome(outcome: optimizer_pb2.Outcome) -> None:
    """One line per accepted outcome (the ledger that persists them is issue 5)."""
    log.info(
        "outcome recorded",
        extra={
            "outcome_id": outcome.outcome_id,
            "execution_id": outcome.execution_id,
            "step_id": outcome.step_id,
            "provider": outcome.provider,
            "model": outcome.model,
            "status": _status_name(outcome.status),
            "error_reason": outcome.error_reason,
            "input_tokens": outcome.usage.input_tokens,
            "output_tokens": outcome.usage.output_tokens,
            "cost_micro_usd": outcome.cost_micro_usd,
            "latency_ms": outcome.latency_ms,
            "ttft_ms": outcome.ttft_ms,
            "price_table_version": outcome.price_table_version,
        },
    )
