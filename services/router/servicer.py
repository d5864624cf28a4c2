"""`saga.router.v1.RouterService`: translation between protobuf and the router's domain
modules (calls, candidates, reasoning).

Built in issue 3: Reason (verified request context, the `sim` engine, ranking from the
optimizer's snapshot, fallback before the first token, outcomes reported in the background)
and ListProviders. CheckProviders is inherited from the generated base and answers
UNIMPLEMENTED.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from opentelemetry import trace

from saga.execution.v1 import common_pb2, reason_events_pb2
from saga.router.v1 import providers_pb2, router_pb2, router_pb2_grpc
from services.common.config import ProviderConfig
from services.common.context import ContextVerifier, metadata_token
from services.common.errors import FieldViolation, InvalidArgument
from services.common.prices import PriceTable
from services.router.calls import Accounting, ReasonCall, validate
from services.router.candidates import choose
from services.router.engines.base import ChatMessage, Engine, TextDelta
from services.router.outcomes import OutcomeReporter, outcome_proto
from services.router.rankings import STRATEGY_NAMES, RankingWatcher
from services.router.reasoning import (
    AttemptRecord,
    AttemptStarted,
    Finished,
    ProviderSwitched,
    reason,
)

_ROLES: Mapping[int, str] = {
    router_pb2.ROLE_SYSTEM: "system",
    router_pb2.ROLE_USER: "user",
    router_pb2.ROLE_ASSISTANT: "assistant",
}


def call_from_proto(request: router_pb2.ReasonRequest, user_id: str) -> ReasonCall:
    """The domain call of a request, accounted to the verified user `user_id`."""
    strategy: str | None = None
    if request.strategy != common_pb2.STRATEGY_UNSPECIFIED:
        strategy = STRATEGY_NAMES.get(request.strategy)
        if strategy is None:
            raise InvalidArgument(
                f"unknown strategy {request.strategy}",
                reason="OPTION_INVALID",
                field_violations=[FieldViolation("strategy", "not a known strategy")],
            )
    a = request.accounting
    return ReasonCall(
        messages=tuple(
            ChatMessage(_ROLES.get(m.role, "user"), m.content) for m in request.messages
        ),
        system_prompt=request.system_prompt,
        max_tokens=request.max_tokens,
        temperature=request.temperature if request.HasField("temperature") else None,
        stop=tuple(request.stop),
        complete=request.response_mode == common_pb2.RESPONSE_MODE_COMPLETE,
        strategy=strategy,
        preferred=tuple(request.preferred_providers),
        pinned=request.pinned_provider,
        allow_fallback=request.allow_fallback,
        # The verified context, not the request, says whose call this is.
        accounting=Accounting(user_id, a.session_id, a.execution_id, a.step_id, a.pattern_id),
        max_cost_micro_usd=request.max_cost_micro_usd,
    )


def _usage(input_tokens: int, output_tokens: int, cached: int, estimated: bool) -> common_pb2.Usage:
    return common_pb2.Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
        cached_tokens=cached,
        estimated=estimated,
    )


def _summary(a: AttemptRecord) -> reason_events_pb2.AttemptSummary:
    return reason_events_pb2.AttemptSummary(
        provider=a.provider,
        model=a.model,
        n=a.n,
        status=reason_events_pb2.AttemptStatus.ValueType(a.status.value),
        error_reason=a.error_reason,
        usage=_usage(a.input_tokens, a.output_tokens, a.cached_tokens, a.estimated),
        cost_micro_usd=a.cost_micro_usd,
        latency_ms=a.latency_ms,
        ttft_ms=a.ttft_ms,
    )


def final_proto(f: Finished) -> router_pb2.ReasonResponse:
    """The Final event of a finished call."""
    return router_pb2.ReasonResponse(
        final=reason_events_pb2.Final(
            text=f.text,
            finish_reason=reason_events_pb2.FinishReason.ValueType(f.finish_reason.value),
            usage=_usage(f.input_tokens, f.output_tokens, f.cached_tokens, f.estimated),
            cost_micro_usd=f.cost_micro_usd,
            provider=f.provider,
            model=f.model,
            latency_ms=f.latency_ms,
            ttft_ms=f.ttft_ms,
            attempts=[_summary(a) for a in f.attempts],
            price_table_version=f.price_table_version,
        )
    )


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    """The router service; RPCs not overridden here answer UNIMPLEMENTED."""

    def __init__(
        self,
        providers: Sequence[ProviderConfig],
        engines: Mapping[str, Engine],
        verifier: ContextVerifier,
        rankings: RankingWatcher,
        reporter: OutcomeReporter,
        config_prices: PriceTable,
    ) -> None:
        self._providers = tuple(providers)
        self._engines = engines
        self._verifier = verifier
        self._rankings = rankings
        self._reporter = reporter
        self._config_prices = config_prices

    async def Reason(
        self, request: router_pb2.ReasonRequest, context: Any
    ) -> AsyncIterator[router_pb2.ReasonResponse]:
        """Stream one LLM call: Attempt, Delta… (or Switched and another Attempt), Final."""
        verified = await self._verifier.verify(
            metadata_token(context.invocation_metadata()), request.accounting.execution_id
        )
        call = call_from_proto(request, verified.user_id)
        validate(call)
        snapshot = self._rankings.snapshot
        candidates = choose(
            self._providers,
            snapshot,
            strategy=call.strategy,
            preferred=call.preferred,
            pinned=call.pinned,
        )
        prices = snapshot.prices if snapshot is not None else self._config_prices
        span = trace.get_current_span()
        span.set_attribute("saga.execution_id", call.accounting.execution_id)

        def report(record: AttemptRecord) -> None:
            # Called inside this handler, so the reporting task joins the request's trace.
            self._reporter.report(outcome_proto(record, call.accounting))

        async for event in reason(call, candidates, self._engines, prices, report):
            if isinstance(event, TextDelta):
                yield router_pb2.ReasonResponse(delta=reason_events_pb2.Delta(text=event.text))
            elif isinstance(event, AttemptStarted):
                yield router_pb2.ReasonResponse(
                    attempt=reason_events_pb2.Attempt(
                        provider=event.provider, model=event.model, n=event.n
                    )
                )
            elif isinstance(event, ProviderSwitched):
                yield router_pb2.ReasonResponse(
                    switched=reason_events_pb2.Switched(
                        from_provider=event.from_provider,
                        to_provider=event.to_provider,
                        reason=event.reason,
                    )
                )
            else:
                span.set_attributes(
                    {
                        "gen_ai.system": event.provider,
                        "gen_ai.request.model": event.model,
                        "gen_ai.usage.input_tokens": event.input_tokens,
                        "gen_ai.usage.output_tokens": event.output_tokens,
                    }
                )
                yield final_proto(event)

    async def ListProviders(
        self, request: router_pb2.ListProvidersRequest, context: Any
    ) -> router_pb2.ListProvidersResponse:
        """The configured providers with prices, limits and capabilities. Circuits are
        always closed and health is not probed yet (issue 5)."""
        snapshot = self._rankings.snapshot
        prices = snapshot.prices if snapshot is not None else self._config_prices
        infos = []
        for p in self._providers:
            price = prices.of(p.name)
            infos.append(
                providers_pb2.ProviderInfo(
                    name=p.name,
                    kind=p.kind,
                    model=p.model,
                    base_url=p.base_url,
                    circuit_state=providers_pb2.CIRCUIT_STATE_CLOSED,
                    healthy=True,
                    prices=providers_pb2.Prices(
                        input_per_million_micro_usd=price.input_micro_usd_per_mtok,
                        output_per_million_micro_usd=price.output_micro_usd_per_mtok,
                        cached_input_per_million_micro_usd=price.cached_input_micro_usd_per_mtok,
                        price_table_version=prices.version,
                    ),
                    limits=providers_pb2.Limits(),
                    context_window=p.context_window,
                    quality_prior=p.quality,
                    capabilities=list(p.capabilities),
                )
            )
        return router_pb2.ListProvidersResponse(providers=infos)
