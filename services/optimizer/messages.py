"""Protobuf ⇄ domain translation for the optimizer's RPCs, in one place: strategies and
weights, rankings and snapshots, outcomes (checked and bounded), metrics and priors, usage.

Every bound is checked here, with an INVALID_ARGUMENT that names the field; the domain
modules get values they can trust.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from saga.execution.v1 import common_pb2, records_pb2
from saga.optimizer.v1 import budgets_pb2, metrics_pb2, optimizer_pb2, ranking_pb2
from services.common import outcome_bounds
from services.common.call_options import MAX_WEIGHT
from services.common.errors import FieldViolation, InvalidArgument
from services.common.prices import PriceTable
from services.common.strategy import Strategy
from services.common.strategy_proto import FROM_PROTO, TO_PROTO
from services.optimizer.budgets import BudgetView
from services.optimizer.ledger import UsageRecord, UsageRow
from services.optimizer.live_metrics import Metrics
from services.optimizer.priors import FIELDS as PRIOR_FIELDS
from services.optimizer.ranking import Ranking, Weights
from services.optimizer.snapshots import Snapshot
from services.optimizer.usage import Dimension

MAX_PRIOR_MS = 3_600_000
MAX_GROUP_BY = 8

_STATUS: dict[int, str] = {
    optimizer_pb2.OUTCOME_STATUS_SUCCEEDED: "succeeded",
    optimizer_pb2.OUTCOME_STATUS_FAILED: "failed",
    optimizer_pb2.OUTCOME_STATUS_CANCELLED: "cancelled",
}

_DIMENSIONS: dict[int, Dimension] = {
    records_pb2.USAGE_DIMENSION_USER: Dimension.USER,
    records_pb2.USAGE_DIMENSION_SESSION: Dimension.SESSION,
    records_pb2.USAGE_DIMENSION_PROVIDER: Dimension.PROVIDER,
    records_pb2.USAGE_DIMENSION_MODEL: Dimension.MODEL,
    records_pb2.USAGE_DIMENSION_DAY: Dimension.DAY,
}


# ---------------------------------------------------------------- strategies and rankings


def strategy(value: int, field: str) -> Strategy | None:
    """The domain strategy of an enum value; None for UNSPECIFIED."""
    if value == common_pb2.STRATEGY_UNSPECIFIED:
        return None
    found = FROM_PROTO.get(value)
    if found is None:
        raise InvalidArgument(
            f"unknown strategy {value}",
            reason="STRATEGY_INVALID",
            field_violations=[FieldViolation(field, f"unknown strategy {value}")],
        )
    return found


def weights(message: ranking_pb2.Weights) -> Weights:
    """Domain weights of a message."""
    return Weights(message.cost, message.latency, message.quality, message.reliability)


def weights_proto(value: Weights) -> ranking_pb2.Weights:
    """The message of domain weights."""
    return ranking_pb2.Weights(
        cost=value.cost, latency=value.latency, quality=value.quality, reliability=value.reliability
    )


def bad_weights(field: str, value: Weights) -> InvalidArgument:
    """The error for unusable CUSTOM weights `value`, given in `field`: one violation per
    weight at fault (`weights.cost` …), or the whole field when they are all zero."""
    violations = [
        FieldViolation(f"{field}.{name}" if name else field, why) for name, why in value.problems()
    ]
    return InvalidArgument(
        f"custom weights must be finite, non-negative, at most {MAX_WEIGHT:g} and not all zero",
        reason="WEIGHTS_INVALID",
        field_violations=violations
        or [FieldViolation(field, "finite, non-negative, and at least one above zero")],
    )


def ranked_proto(
    ranking: Ranking,
) -> tuple[list[ranking_pb2.RankedProvider], list[ranking_pb2.Exclusion]]:
    """The ranked and excluded providers of a ranking, as messages."""
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
                cache_write_per_million_micro_usd=p.cache_write_micro_usd_per_mtok,
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
    for s in snapshot.strategies_for(wanted):
        ranked, excluded = ranked_proto(snapshot.rankings[s])
        rankings.append(
            ranking_pb2.StrategyRanking(strategy=TO_PROTO[s], ranked=ranked, excluded=excluded)
        )
    return optimizer_pb2.WatchRankingsResponse(
        snapshot_version=snapshot.version,
        rankings=rankings,
        price_table=_price_table_proto(snapshot.prices),
        default_strategy=TO_PROTO[snapshot.default_strategy],
    )


# ---------------------------------------------------------------------------- outcomes


def _bad_outcome(field: str, problem: str) -> InvalidArgument:
    return InvalidArgument(
        f"{field}: {problem}",
        reason="OUTCOMES_INVALID",
        field_violations=[FieldViolation(field, problem)],
    )


def usage_record(outcome: optimizer_pb2.Outcome, index: int, now: float) -> UsageRecord:
    """The ledger record of outcome `index` of a batch; an unset `occurred_at` means `now`.
    The bounds are the router's too (`outcome_bounds`)."""
    found = outcome_bounds.problem(outcome)
    if found is not None:
        raise _bad_outcome(f"outcomes[{index}].{found.field}", found.problem)
    usage = outcome.usage
    occurred = outcome.occurred_at
    unset = occurred.seconds == 0 and occurred.nanos == 0
    occurred_at = now if unset else occurred.seconds + occurred.nanos / 1e9
    return UsageRecord(
        outcome_id=outcome.outcome_id,
        user_id=outcome.user_id,
        session_id=outcome.session_id,
        execution_id=outcome.execution_id,
        step_id=outcome.step_id,
        pattern_id=outcome.pattern_id,
        provider=outcome.provider,
        model=outcome.model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        estimated=outcome.estimated or usage.estimated,
        cost_micro_usd=outcome.cost_micro_usd,
        # A router from before charges sends none: its caller was charged the cost.
        charge_micro_usd=(
            outcome.charge_micro_usd
            if outcome.HasField("charge_micro_usd")
            else outcome.cost_micro_usd
        ),
        latency_ms=outcome.latency_ms,
        ttft_ms=outcome.ttft_ms,
        status=_STATUS[outcome.status],
        error_reason=outcome.error_reason,
        retry_count=outcome.retry_count,
        price_table_version=outcome.price_table_version,
        occurred_at=occurred_at,
    )


# ------------------------------------------------------------------- metrics and priors


def metrics_proto(metrics: Metrics) -> metrics_pb2.ProviderMetrics:
    """The message of a provider's metrics."""
    return metrics_pb2.ProviderMetrics(
        provider=metrics.provider,
        model=metrics.model,
        p50_latency_ms=metrics.p50_latency_ms,
        p99_latency_ms=metrics.p99_latency_ms,
        p50_ttft_ms=metrics.p50_ttft_ms,
        p99_ttft_ms=metrics.p99_ttft_ms,
        success_rate=metrics.success_rate,
        samples=metrics.samples,
        quality=metrics.quality,
    )


def _bad_prior(field: str, problem: str) -> InvalidArgument:
    return InvalidArgument(
        f"{field}: {problem}",
        reason="METRICS_INVALID",
        field_violations=[FieldViolation(field, problem)],
    )


def prior_changes(prior: metrics_pb2.ProviderPrior, index: int) -> dict[str, float]:
    """The prior values a ProviderPrior sets (unset fields are left out), checked."""
    changes: dict[str, float] = {}
    for name in PRIOR_FIELDS:
        if not prior.HasField(name):  # type: ignore[arg-type]
            continue
        value = float(getattr(prior, name))
        field = f"priors[{index}].{name}"
        if name in ("success_rate", "quality"):
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise _bad_prior(field, "between 0 and 1")
        elif not 0 <= value <= MAX_PRIOR_MS:
            raise _bad_prior(field, f"between 0 and {MAX_PRIOR_MS} ms")
        changes[name] = value
    return changes


# ------------------------------------------------------------------------------- usage


def dimensions(values: Sequence[int]) -> list[Dimension]:
    """The usage dimensions of a GetUsage request's `group_by`."""
    if len(values) > MAX_GROUP_BY:
        raise InvalidArgument(
            f"at most {MAX_GROUP_BY} group_by entries",
            reason="USAGE_QUERY_INVALID",
            field_violations=[FieldViolation("group_by", "too many entries")],
        )
    out = []
    for value in values:
        dimension = _DIMENSIONS.get(value)
        if dimension is None:
            raise InvalidArgument(
                f"unknown usage dimension {value}",
                reason="USAGE_QUERY_INVALID",
                field_violations=[FieldViolation("group_by", f"unknown dimension {value}")],
            )
        out.append(dimension)
    return out


def usage_row_proto(row: UsageRow) -> records_pb2.UsageRow:
    """The message of one aggregated usage row."""
    return records_pb2.UsageRow(
        day=row.day,
        user_id=row.user_id,
        session_id=row.session_id,
        provider=row.provider,
        model=row.model,
        calls=row.calls,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        cached_tokens=row.cached_tokens,
        cost_micro_usd=row.cost_micro_usd,
        cache_write_tokens=row.cache_write_tokens,
        charge_micro_usd=row.charge_micro_usd,
    )


# ---------------------------------------------------------------- budgets


def budget_proto(view: BudgetView) -> budgets_pb2.BudgetStatus:
    """The message of a budget as it stands."""
    return budgets_pb2.BudgetStatus(
        user_id=view.user_id,
        key_id=view.key_id,
        budget_micro_usd=view.budget_micro_usd,
        own=view.own,
        period_kind=view.period_kind,
        period=view.period,
        spent_micro_usd=view.spent_micro_usd,
        held_micro_usd=view.held_micro_usd,
        remaining_micro_usd=view.remaining_micro_usd,
    )
