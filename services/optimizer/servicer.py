"""`saga.optimizer.v1.OptimizerService`: every RPC of the optimizer, thin over its domain
modules — ranking and snapshots, live metrics and their publisher, the usage ledger, budgets
(translation to and from protobuf lives in `messages`)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from saga.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
from services.common import outcome_bounds
from services.common.errors import FieldViolation, InvalidArgument
from services.common.guard import Context
from services.common.strategy import Strategy
from services.common.strategy_proto import TO_PROTO
from services.common.telemetry import span_in_trace
from services.optimizer import messages
from services.optimizer.budgets import Budgets
from services.optimizer.ledger import Ledger, UsageRecord
from services.optimizer.priors import PriorStore
from services.optimizer.publisher import RankingPublisher
from services.optimizer.ranking import (
    STRATEGY_WEIGHTS,
    ProviderStats,
    TokenEstimate,
    Weights,
    rank,
)
from services.optimizer.shared import DefaultStrategyStore
from services.optimizer.snapshots import Snapshot
from services.optimizer.usage import usage_query

log = logging.getLogger("saga.optimizer")

MAX_CANDIDATES = 256
MAX_CAPABILITIES = 32
MAX_NAME_CHARS = 128
MAX_USER_ID_CHARS = 256
MAX_ESTIMATED_TOKENS = 10_000_000
MAX_WATCHED_STRATEGIES = 16
MAX_OUTCOMES_PER_BATCH = 1000
MAX_PROVIDERS_PER_REQUEST = 256
_DEFAULT = TokenEstimate()


@dataclass(frozen=True)
class Parts:
    """What the servicer works with (built by `app`)."""

    publisher: RankingPublisher
    ledger: Ledger
    budgets: Budgets
    priors: PriorStore
    strategies: DefaultStrategyStore | None = None
    """Where SetDefaultStrategy is kept for every replica (None: this process only)."""
    clock: Callable[[], float] = time.time


class OptimizerServicer(optimizer_pb2_grpc.OptimizerServiceServicer):
    """The optimizer service."""

    def __init__(self, parts: Parts) -> None:
        self._parts = parts
        self._publisher = parts.publisher
        self._board = parts.publisher.board
        self._live = parts.publisher.live
        self._known = set(self._live.providers)

    async def Rank(
        self, request: optimizer_pb2.RankRequest, context: Context
    ) -> optimizer_pb2.RankResponse:
        """Rank the candidates for one call, with score breakdowns and exclusions; with a
        user, also by what is left of their budget (near its end, CHEAPEST when configured)."""
        current = self._board.current
        strategy = messages.strategy(request.strategy, "strategy") or current.default_strategy
        weights = self._custom_weights(request, current) if strategy is Strategy.CUSTOM else None
        candidates = self._candidates(request.candidates)
        capabilities = self._capabilities(request.required_capabilities)
        estimate = TokenEstimate(
            _estimate(
                request.estimated_input_tokens, "estimated_input_tokens", _DEFAULT.input_tokens
            ),
            _estimate(
                request.estimated_output_tokens, "estimated_output_tokens", _DEFAULT.output_tokens
            ),
        )
        budget_left: int | None = None
        if request.user_id:
            if len(request.user_id) > MAX_USER_ID_CHARS:
                raise InvalidArgument(
                    f"user_id: at most {MAX_USER_ID_CHARS} characters",
                    reason="RANK_REQUEST_INVALID",
                    field_violations=[FieldViolation("user_id", "too long")],
                )
            standing = await self._parts.budgets.standing(request.user_id)
            if standing is not None:
                budget_left = standing.remaining_micro_usd
                if standing.degrade:
                    strategy, weights = Strategy.CHEAPEST, None
        ranking = rank(
            candidates,
            strategy,
            weights=weights,
            required_capabilities=capabilities,
            estimate=estimate,
            success_floor=self._board.success_floor,
            budget_left=budget_left,
        )
        ranked, excluded = messages.ranked_proto(ranking)
        return optimizer_pb2.RankResponse(
            ranked=ranked,
            excluded=excluded,
            strategy=TO_PROTO[strategy],
            weights=messages.weights_proto(ranking.weights),
        )

    async def WatchRankings(
        self, request: optimizer_pb2.WatchRankingsRequest, context: Context
    ) -> AsyncIterator[optimizer_pb2.WatchRankingsResponse]:
        """A full snapshot now, then one whenever it changes; ends when shutdown begins."""
        if len(request.strategies) > MAX_WATCHED_STRATEGIES:
            raise InvalidArgument(
                f"at most {MAX_WATCHED_STRATEGIES} strategies",
                reason="STRATEGY_INVALID",
                field_violations=[FieldViolation("strategies", "too many entries")],
            )
        requested = [messages.strategy(s, "strategies") for s in request.strategies]
        snapshot: Snapshot | None = self._board.current
        while snapshot is not None:
            yield messages.snapshot_proto(snapshot, requested)
            snapshot = await self._board.next_after(snapshot.version)

    async def SetDefaultStrategy(
        self, request: optimizer_pb2.SetDefaultStrategyRequest, context: Context
    ) -> optimizer_pb2.SetDefaultStrategyResponse:
        """Change the strategy STRATEGY_UNSPECIFIED resolves to; watchers get a new snapshot."""
        strategy = messages.strategy(request.strategy, "strategy")
        if strategy is None:
            raise InvalidArgument(
                "the default strategy cannot be STRATEGY_UNSPECIFIED",
                reason="STRATEGY_INVALID",
                field_violations=[FieldViolation("strategy", "must name a strategy")],
            )
        weights = messages.weights(request.weights) if strategy is Strategy.CUSTOM else None
        if weights is not None and not weights.is_valid():
            raise messages.bad_weights("weights", weights)
        if self._parts.strategies is not None:  # first, so every replica takes it
            normalised = weights.normalised() if weights is not None else None
            await self._parts.strategies.save(strategy, normalised)
        snapshot = self._board.set_default(strategy, weights)
        applied = snapshot.custom_weights if strategy is Strategy.CUSTOM else None
        log.info(
            "default strategy set",
            extra={"strategy": strategy.value, "snapshot_version": snapshot.version},
        )
        return optimizer_pb2.SetDefaultStrategyResponse(
            strategy=TO_PROTO[strategy],
            weights=messages.weights_proto(applied or STRATEGY_WEIGHTS[strategy]),
        )

    async def RecordOutcomes(
        self, request_iterator: AsyncIterator[optimizer_pb2.RecordOutcomesRequest], context: Context
    ) -> optimizer_pb2.RecordOutcomesResponse:
        """Persist batches of outcomes (each in one transaction) before answering; a resent
        outcome id is acknowledged, not counted. Each outcome is judged on its own: one that
        breaks a bound (`outcome_bounds`) is listed as rejected and the others are recorded,
        so one bad outcome never holds up the rest. New outcomes feed the live metrics."""
        accepted = duplicates = 0
        accepted_ids: list[str] = []
        rejected: list[optimizer_pb2.RejectedOutcome] = []
        async for batch in request_iterator:
            if len(batch.outcomes) > MAX_OUTCOMES_PER_BATCH:
                raise InvalidArgument(
                    f"at most {MAX_OUTCOMES_PER_BATCH} outcomes per batch",
                    reason="OUTCOMES_INVALID",
                    field_violations=[FieldViolation("outcomes", "too many entries")],
                )
            now = self._parts.clock()
            records = []
            for i, outcome in enumerate(batch.outcomes):
                found = outcome_bounds.problem(outcome)
                if found is not None:
                    rejected.append(_rejected(outcome, i, found))
                    continue
                records.append(messages.usage_record(outcome, i, now))
            stored = await self._parts.ledger.record(records)
            accepted += len(stored)
            duplicates += len(records) - len(stored)
            accepted_ids += [r.outcome_id for r in records]
            _log_in_their_traces(stored, {o.outcome_id: o.traceparent for o in batch.outcomes})
            learned = False
            for r in stored:
                sample = r.sample()
                if sample is not None:
                    learned |= self._live.record(r.provider, sample, now)
            if learned:
                self._publisher.notify()
        return optimizer_pb2.RecordOutcomesResponse(
            accepted=accepted,
            duplicates=duplicates,
            accepted_ids=accepted_ids,
            rejected=rejected,
        )

    async def GetMetrics(
        self, request: optimizer_pb2.GetMetricsRequest, context: Context
    ) -> optimizer_pb2.GetMetricsResponse:
        """Current metrics of the named providers (all when none is named)."""
        names = self._providers(request.providers, "providers") or list(self._live.providers)
        now = self._parts.clock()
        return optimizer_pb2.GetMetricsResponse(
            metrics=[messages.metrics_proto(self._live.metrics(n, now)) for n in names]
        )

    async def UpdateMetrics(
        self, request: optimizer_pb2.UpdateMetricsRequest, context: Context
    ) -> optimizer_pb2.UpdateMetricsResponse:
        """Set providers' priors (persisted; re-ranked at once); unset values are kept."""
        names = self._providers([p.provider for p in request.priors], "priors.provider")
        if len(set(names)) != len(names):
            raise InvalidArgument(
                "a provider is named twice",
                reason="METRICS_INVALID",
                field_violations=[FieldViolation("priors.provider", "each provider once")],
            )
        changes = [messages.prior_changes(p, i) for i, p in enumerate(request.priors)]
        for prior, change in zip(request.priors, changes, strict=True):
            await self._parts.priors.save(prior.provider, change, reset_samples=prior.reset_samples)
        for prior, change in zip(request.priors, changes, strict=True):
            updated = dataclasses.replace(self._live.prior(prior.provider), **change)
            self._live.set_prior(prior.provider, updated, reset_samples=prior.reset_samples)
        log.info("priors updated", extra={"providers": names})
        self._publisher.refresh()
        now = self._parts.clock()
        return optimizer_pb2.UpdateMetricsResponse(
            metrics=[messages.metrics_proto(self._live.metrics(n, now)) for n in names]
        )

    async def GetUsage(
        self, request: optimizer_pb2.GetUsageRequest, context: Context
    ) -> optimizer_pb2.GetUsageResponse:
        """Aggregate the usage ledger by the requested dimensions, with totals."""
        query = usage_query(
            start_date=request.start_date,
            end_date=request.end_date,
            user_id=request.user_id,
            all_users=request.all_users,
            group_by=messages.dimensions(request.group_by),
            today=dt.datetime.fromtimestamp(self._parts.clock(), dt.UTC).date(),
        )
        report = await self._parts.ledger.usage(query)
        return optimizer_pb2.GetUsageResponse(
            rows=[messages.usage_row_proto(r) for r in report.rows],
            totals=messages.usage_row_proto(report.totals),
        )

    async def ReserveBudget(
        self, request: optimizer_pb2.ReserveBudgetRequest, context: Context
    ) -> optimizer_pb2.ReserveBudgetResponse:
        """Hold the most a call may cost against the user's budget for this period."""
        grant = await self._parts.budgets.reserve(
            request.reservation_id,
            request.user_id,
            request.execution_id,
            request.amount_micro_usd,
            key_id=request.key_id,
        )
        return optimizer_pb2.ReserveBudgetResponse(
            remaining_micro_usd=grant.remaining_micro_usd,
            period=grant.period,
            degrade_to_cheapest=grant.degrade_to_cheapest,
        )

    async def SettleBudget(
        self, request: optimizer_pb2.SettleBudgetRequest, context: Context
    ) -> optimizer_pb2.SettleBudgetResponse:
        """Replace a reservation with what the call really cost."""
        remaining = await self._parts.budgets.settle(request.reservation_id, request.cost_micro_usd)
        return optimizer_pb2.SettleBudgetResponse(remaining_micro_usd=remaining)

    async def SetBudget(
        self, request: optimizer_pb2.SetBudgetRequest, context: Context
    ) -> optimizer_pb2.SetBudgetResponse:
        """Set or clear a user's own budget, or one of their API keys' (admin)."""
        view = await self._parts.budgets.set_limit(
            request.user_id,
            request.key_id,
            request.amount_micro_usd,
            request.period,
            request.clear,
        )
        log.info(
            "budget set",
            extra={
                "user_id": request.user_id,
                "key_id": request.key_id,
                "amount_micro_usd": request.amount_micro_usd,
                "period": view.period_kind,
                "cleared": request.clear,
            },
        )
        return optimizer_pb2.SetBudgetResponse(budget=messages.budget_proto(view))

    async def GetBudget(
        self, request: optimizer_pb2.GetBudgetRequest, context: Context
    ) -> optimizer_pb2.GetBudgetResponse:
        """A user's budget and their keys' own, as they stand this period."""
        user, keys = await self._parts.budgets.status(request.user_id)
        return optimizer_pb2.GetBudgetResponse(
            user=messages.budget_proto(user), keys=[messages.budget_proto(k) for k in keys]
        )

    def _custom_weights(self, request: optimizer_pb2.RankRequest, current: Snapshot) -> Weights:
        given = messages.weights(request.weights)
        if request.HasField("weights") and given != Weights():
            if not given.is_valid():
                raise messages.bad_weights("weights", given)
            return given
        if current.custom_weights is None:
            raise InvalidArgument(
                "STRATEGY_CUSTOM needs weights: none given and none configured",
                reason="WEIGHTS_INVALID",
                field_violations=[FieldViolation("weights", "required for STRATEGY_CUSTOM")],
            )
        return current.custom_weights

    def _providers(self, names: Sequence[str], field: str) -> list[str]:
        """`names`, checked: bounded, every one configured."""
        if len(names) > MAX_PROVIDERS_PER_REQUEST:
            raise InvalidArgument(
                f"at most {MAX_PROVIDERS_PER_REQUEST} providers",
                reason="METRICS_INVALID",
                field_violations=[FieldViolation(field, "too many entries")],
            )
        unknown = sorted(set(names) - self._known)
        if unknown:
            shown = ", ".join(n[:MAX_NAME_CHARS] for n in unknown[:5])
            raise InvalidArgument(
                f"unknown provider(s): {shown}",
                reason="UNKNOWN_PROVIDER",
                field_violations=[FieldViolation(field, f"not configured: {shown}")],
            )
        return list(names)

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


def _rejected(
    outcome: optimizer_pb2.Outcome, index: int, found: outcome_bounds.Problem
) -> optimizer_pb2.RejectedOutcome:
    """The answer for a refused outcome, logged once (the field and its bound, never the
    value: an oversized field is the attacker's text)."""
    outcome_id = outcome.outcome_id[: outcome_bounds.MAX_OUTCOME_ID_CHARS]
    log.warning(
        "outcome rejected",
        extra={"outcome_id": outcome_id, "field": found.field, "problem": found.problem},
    )
    return optimizer_pb2.RejectedOutcome(
        outcome_id=outcome_id, index=index, field=found.field, problem=found.problem
    )


def _log_in_their_traces(stored: Sequence[UsageRecord], traceparents: dict[str, str]) -> None:
    """Log the stored outcomes, each call's inside a span of that call's trace (a router
    ships many calls' outcomes in one RecordOutcomes: the RPC's own span is in no run's
    trace)."""
    by_trace: dict[str, list[UsageRecord]] = {}
    for r in stored:
        by_trace.setdefault(traceparents.get(r.outcome_id, ""), []).append(r)
    for traceparent, records in by_trace.items():
        with (
            span_in_trace("saga.optimizer.record_outcomes", traceparent, outcomes=len(records))
            if traceparent
            else contextlib.nullcontext()  # an older router's: the RPC's own trace
        ):
            for r in records:
                _log_outcome(r)


def _log_outcome(record: UsageRecord) -> None:
    """One line per stored outcome (ids and figures only: outcomes carry no secrets)."""
    log.info(
        "outcome recorded",
        extra={
            "outcome_id": record.outcome_id,
            "execution_id": record.execution_id,
            "step_id": record.step_id,
            "provider": record.provider,
            "model": record.model,
            "status": record.status,
            "error_reason": record.error_reason,
            "input_tokens": record.input_tokens,
            "output_tokens": record.output_tokens,
            "cost_micro_usd": record.cost_micro_usd,
            "latency_ms": record.latency_ms,
            "ttft_ms": record.ttft_ms,
            "price_table_version": record.price_table_version,
        },
    )
