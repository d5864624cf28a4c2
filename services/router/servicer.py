"""`saga.router.v1.RouterService`: translation between protobuf and the router's domain
modules.

Reason: verify the request context and validate the call, then take the call's steps
(`call_steps`: rank, reserve the budget, run the attempts — `reasoning`: retries, fallback,
mid-stream continuation, circuits, limits — store their outcomes in the outbox and wait for
the store before Final, settle the budget however the call ended), with deltas the caller is
too slow for merged (`coalescing`); each event becomes its message. ListProviders shows the
live circuits and the usage outbox's backlog. CheckProviders probes providers actively
(`probes`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry import trace

from saga.execution.v1 import common_pb2, reason_events_pb2
from saga.router.v1 import providers_pb2, router_pb2, router_pb2_grpc
from services.common import outcome_bounds
from services.common.config import ProviderConfig
from services.common.context import ContextVerifier, metadata_token
from services.common.errors import FieldViolation, InvalidArgument
from services.common.guard import Context
from services.common.prices import PriceTable
from services.common.strategy import Strategy
from services.common.strategy_proto import FROM_PROTO
from services.common.usage_messages import usage_proto
from services.router.budget_reservations import Budgets
from services.router.call_steps import run_call
from services.router.calls import Accounting, CustomWeights, ReasonCall, validate
from services.router.charges import ChargePolicy
from services.router.coalescing import coalesce, merge_text
from services.router.custom_ranking import CustomRanker
from services.router.embedding import EmbedCall, run_embed
from services.router.embedding import validate as validate_embed
from services.router.engines.base import Caller, ChatMessage, Engine, Sampling, TextDelta
from services.router.engines.tools import (
    DEFAULT_SCHEMA_NAME,
    ResponseFormat,
    ResponseFormatType,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
    ToolSpec,
)
from services.router.metrics import FALLBACKS, observe_attempt
from services.router.outbox import Outbox, current_traceparent
from services.router.outcomes import outcome_id, outcome_proto
from services.router.probes import HealthChecks, ModeResult
from services.router.rankings import RankingWatcher
from services.router.reasoning import (
    AttemptRecord,
    AttemptStarted,
    Finished,
    ProvidersSkipped,
    ProviderSwitched,
    Report,
    RouterEvent,
    reason,
)
from services.router.resilience import Resilience

T = TypeVar("T")

_ROLES: Mapping[int, str] = {
    router_pb2.ROLE_SYSTEM: "system",
    router_pb2.ROLE_USER: "user",
    router_pb2.ROLE_ASSISTANT: "assistant",
    router_pb2.ROLE_TOOL: "tool",
}
_CHOICES: Mapping[int, ToolChoiceMode] = {
    router_pb2.TOOL_CHOICE_MODE_UNSPECIFIED: ToolChoiceMode.AUTO,
    router_pb2.TOOL_CHOICE_MODE_AUTO: ToolChoiceMode.AUTO,
    router_pb2.TOOL_CHOICE_MODE_NONE: ToolChoiceMode.NONE,
    router_pb2.TOOL_CHOICE_MODE_REQUIRED: ToolChoiceMode.REQUIRED,
    router_pb2.TOOL_CHOICE_MODE_NAMED: ToolChoiceMode.NAMED,
}
_FORMATS: Mapping[int, ResponseFormatType] = {
    router_pb2.RESPONSE_FORMAT_TYPE_UNSPECIFIED: ResponseFormatType.TEXT,
    router_pb2.RESPONSE_FORMAT_TYPE_TEXT: ResponseFormatType.TEXT,
    router_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT: ResponseFormatType.JSON_OBJECT,
    router_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA: ResponseFormatType.JSON_SCHEMA,
}


def _enum(value: int, table: Mapping[int, T], field: str, reason: str) -> T:
    """The domain value of a proto enum number; INVALID_ARGUMENT naming `field` for a number
    the enum does not define."""
    if value not in table:
        raise InvalidArgument(
            f"{field} {value} is not defined",
            reason=reason,
            field_violations=[FieldViolation(field, "a defined value")],
        )
    return table[value]


def _tools(request: router_pb2.ReasonRequest) -> dict[str, Any]:
    """The tool-calling and structured-output part of a call (checked by `validate`)."""
    f = request.response_format
    return {
        "tools": tuple(
            ToolSpec(t.name, t.description, t.parameters_json, t.strict) for t in request.tools
        ),
        "tool_choice": ToolChoice(
            _enum(request.tool_choice.mode, _CHOICES, "tool_choice.mode", "TOOLS_INVALID"),
            request.tool_choice.name,
        ),
        "parallel_tool_calls": request.parallel_tool_calls
        if request.HasField("parallel_tool_calls")
        else None,
        "response_format": ResponseFormat(
            _enum(f.type, _FORMATS, "response_format.type", "RESPONSE_FORMAT_INVALID"),
            f.name or DEFAULT_SCHEMA_NAME,
            f.schema_json,
            f.strict,
        ),
    }


def call_from_proto(
    request: router_pb2.ReasonRequest,
    user_id: str,
    context_token: str = "",
    credential_id: str = "",
) -> ReasonCall:
    """The domain call of a request, accounted to the verified user `user_id` (whose
    request-context token engines may forward to auth)."""
    strategy: Strategy | None = None
    if request.strategy != common_pb2.STRATEGY_UNSPECIFIED:
        strategy = FROM_PROTO.get(request.strategy)
        if strategy is None:
            raise InvalidArgument(
                f"unknown strategy {request.strategy}",
                reason="OPTION_INVALID",
                field_violations=[FieldViolation("strategy", "not a known strategy")],
            )
    accounting = _accounting(request.accounting, user_id, credential_id)
    return ReasonCall(
        messages=tuple(_message(i, m) for i, m in enumerate(request.messages)),
        system_prompt=request.system_prompt,
        max_tokens=request.max_tokens,
        temperature=request.temperature if request.HasField("temperature") else None,
        stop=tuple(request.stop),
        sampling=Sampling(
            top_p=request.top_p if request.HasField("top_p") else None,
            seed=request.seed if request.HasField("seed") else None,
            presence_penalty=(
                request.presence_penalty if request.HasField("presence_penalty") else None
            ),
            frequency_penalty=(
                request.frequency_penalty if request.HasField("frequency_penalty") else None
            ),
            end_user=request.end_user,
        ),
        complete=request.response_mode == common_pb2.RESPONSE_MODE_COMPLETE,
        strategy=strategy,
        preferred=tuple(request.preferred_providers),
        allowed=tuple(request.allowed_providers),
        weights=_weights(request),
        pinned=request.pinned_provider,
        allow_fallback=request.allow_fallback,
        accounting=accounting,
        max_cost_micro_usd=request.max_cost_micro_usd,
        caller=Caller(user_id, context_token),
        **_tools(request),
    )


def _accounting(a: router_pb2.AccountingContext, user_id: str, credential_id: str) -> Accounting:
    """A request's accounting, for the verified user: the context, not the request, says
    whose call it is (INVALID_ARGUMENT ACCOUNTING_INVALID when the request names another)."""
    if a.user_id and a.user_id != user_id:
        raise InvalidArgument(
            "accounting.user_id names another user than the request context's",
            reason="ACCOUNTING_INVALID",
            field_violations=[
                FieldViolation("accounting.user_id", "empty or the request context's user")
            ],
        )
    return Accounting(user_id, a.session_id, a.execution_id, a.step_id, a.pattern_id, credential_id)


def _message(index: int, message: router_pb2.Message) -> ChatMessage:
    role = "user" if message.role == router_pb2.ROLE_UNSPECIFIED else _ROLES.get(message.role)
    if role is None:
        raise InvalidArgument(
            f"messages[{index}].role {message.role} is not a role",
            reason="ROLE_INVALID",
            field_violations=[
                FieldViolation(
                    f"messages[{index}].role",
                    "ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL",
                )
            ],
        )
    return ChatMessage(
        role,
        message.content,
        tuple(ToolCall(c.id, c.name, c.arguments_json) for c in message.tool_calls),
        message.tool_call_id,
    )


def _weights(request: router_pb2.ReasonRequest) -> CustomWeights | None:
    if not request.HasField("weights"):
        return None
    w = request.weights
    return CustomWeights(w.cost, w.latency, w.quality, w.reliability)


def _check_identity(accounting: Accounting) -> None:
    """Refuse, before any provider is called, a call whose usage the optimizer could not
    record: an identity field over its bound (`outcome_bounds`) — the user id comes from
    the verified context, the others from the request."""
    for name in ("user_id", "execution_id"):
        if outcome_bounds.too_long(getattr(accounting, name)):
            raise InvalidArgument(
                f"accounting.{name} is too long",
                reason="ACCOUNTING_INVALID",
                field_violations=[
                    FieldViolation(
                        f"accounting.{name}",
                        f"at most {outcome_bounds.MAX_TEXT_CHARS} characters",
                    )
                ],
            )


def _summary(a: AttemptRecord) -> reason_events_pb2.AttemptSummary:
    return reason_events_pb2.AttemptSummary(
        provider=a.provider,
        model=a.model,
        n=a.n,
        status=reason_events_pb2.AttemptStatus.ValueType(a.status.value),
        error_reason=a.error_reason,
        usage=usage_proto(a.usage),
        cost_micro_usd=a.cost_micro_usd,
        latency_ms=a.latency_ms,
        ttft_ms=a.ttft_ms,
        charge_micro_usd=a.charge_micro_usd,
    )


def final_proto(f: Finished) -> router_pb2.ReasonResponse:
    """The Final event of a finished call."""
    return router_pb2.ReasonResponse(
        final=reason_events_pb2.Final(
            text=f.text,
            finish_reason=reason_events_pb2.FinishReason.ValueType(f.finish_reason.value),
            usage=usage_proto(f.usage),
            cost_micro_usd=f.cost_micro_usd,
            provider=f.provider,
            model=f.model,
            latency_ms=f.latency_ms,
            ttft_ms=f.ttft_ms,
            attempts=[_summary(a) for a in f.attempts],
            price_table_version=f.price_table_version,
            charge_micro_usd=f.charge_micro_usd,
            tool_calls=[
                reason_events_pb2.ToolCall(id=c.id, name=c.name, arguments_json=c.arguments_json)
                for c in f.tool_calls
            ],
        )
    )


@dataclass(frozen=True)
class RouterParts:
    """What the router service is made of (built once in `app.build`)."""

    providers: Sequence[ProviderConfig]
    engines: Mapping[str, Engine]
    verifier: ContextVerifier
    rankings: RankingWatcher
    resilience: Resilience
    outbox: Outbox
    budgets: Budgets
    config_prices: PriceTable
    coalesce: bool
    health: HealthChecks
    custom_ranker: CustomRanker | None = None
    """Ranks calls that pass their own CUSTOM weights (None: such calls are UNAVAILABLE)."""
    charge_policy: ChargePolicy = ChargePolicy.ALL_ATTEMPTS
    """What callers are charged for their attempts (`accounting.charge_policy`)."""


def _event_proto(event: RouterEvent) -> router_pb2.ReasonResponse:
    if isinstance(event, TextDelta):
        return router_pb2.ReasonResponse(delta=reason_events_pb2.Delta(text=event.text))
    if isinstance(event, ToolCallDelta):
        return router_pb2.ReasonResponse(
            tool_call_delta=reason_events_pb2.ToolCallDelta(
                index=event.index, id=event.id, name=event.name, arguments=event.arguments
            )
        )
    if isinstance(event, AttemptStarted):
        return router_pb2.ReasonResponse(
            attempt=reason_events_pb2.Attempt(provider=event.provider, model=event.model, n=event.n)
        )
    if isinstance(event, ProvidersSkipped):
        return router_pb2.ReasonResponse(
            skipped=reason_events_pb2.Skipped(
                providers=[
                    reason_events_pb2.SkippedProvider(
                        provider=s.provider,
                        reason=s.reason,
                        retry_after_ms=round(s.retry_after * 1000),
                    )
                    for s in event.skipped
                ]
            )
        )
    if isinstance(event, ProviderSwitched):
        return router_pb2.ReasonResponse(
            switched=reason_events_pb2.Switched(
                from_provider=event.from_provider,
                to_provider=event.to_provider,
                reason=event.reason,
                tool_calls_discarded=event.tool_calls_discarded,
            )
        )
    return final_proto(event)


def _mode_proto(mode: ModeResult | None) -> providers_pb2.ProbeModeResult | None:
    if mode is None:
        return None
    return providers_pb2.ProbeModeResult(
        ok=mode.ok, latency_ms=mode.latency_ms, error_reason=mode.error_reason
    )


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    """The router service."""

    def __init__(self, parts: RouterParts) -> None:
        self._parts = parts
        self._providers = tuple(parts.providers)
        self._health = parts.health

    async def Reason(
        self, request: router_pb2.ReasonRequest, context: Context
    ) -> AsyncIterator[router_pb2.ReasonResponse]:
        """Stream one LLM call: Attempt, Delta… (Switched and another Attempt on fallback),
        Final."""
        parts = self._parts
        token = metadata_token(context.invocation_metadata())
        verified = await parts.verifier.verify(token, request.accounting.execution_id)
        call = call_from_proto(request, verified.user_id, token or "", verified.credential_id)
        validate(call)
        _check_identity(call.accounting)
        snapshot = parts.rankings.snapshot
        prices = snapshot.prices if snapshot is not None else parts.config_prices
        span = trace.get_current_span()
        span.set_attribute("saga.execution_id", call.accounting.execution_id)
        remaining = context.time_remaining()
        deadline = None if remaining is None else asyncio.get_running_loop().time() + remaining
        traceparent = current_traceparent()  # the Reason span: outcomes are shipped under it

        def attempts(
            candidates: Sequence[ProviderConfig], report: Report
        ) -> AsyncGenerator[RouterEvent, None]:
            events = reason(
                call,
                candidates,
                parts.engines,
                prices,
                report,
                parts.resilience,
                deadline=deadline,
                policy=parts.charge_policy,
                gated=True,
            )
            return coalesce(events, merge_text) if parts.coalesce else events

        def store(record: AttemptRecord, cid: str) -> asyncio.Future[None]:
            if not record.sent:  # no provider call: no outcome, nothing to observe
                return parts.outbox.withdraw(outcome_id(cid, record.n))
            observe_attempt(record)
            return parts.outbox.add(outcome_proto(record, call.accounting, cid), traceparent)

        def hold(record: AttemptRecord, cid: str) -> asyncio.Future[None]:
            return parts.outbox.hold(outcome_proto(record, call.accounting, cid), traceparent)

        ranker = parts.custom_ranker
        steps = run_call(
            call,
            self._providers,
            snapshot,
            prices,
            parts.budgets,
            attempts,
            store,
            rank_custom=None if ranker is None else ranker.rank,
            hold=hold,
            policy=parts.charge_policy,
        )
        async with aclosing(steps) as events:
            async for event in events:
                if isinstance(event, ProviderSwitched):
                    FALLBACKS.labels(event.from_provider, event.to_provider, event.reason).inc()
                elif isinstance(event, Finished):
                    # Saga's own names: the gen_ai.* attributes are the attempts' CLIENT
                    # spans' (services/router/genai.py); this span is the whole call.
                    span.set_attributes(
                        {
                            "saga.provider": event.provider,
                            "saga.model": event.model,
                            "saga.attempts": len(event.attempts),
                            "saga.usage.input_tokens": event.usage.input_tokens,
                            "saga.usage.output_tokens": event.usage.output_tokens,
                        }
                    )
                yield _event_proto(event)

    async def Embed(
        self, request: router_pb2.EmbedRequest, context: Context
    ) -> router_pb2.EmbedResponse:
        """Embed the inputs on one provider able to, in batches, accounted like Reason's
        attempts (`embedding`)."""
        parts = self._parts
        token = metadata_token(context.invocation_metadata())
        verified = await parts.verifier.verify(token, request.accounting.execution_id)
        accounting = _accounting(request.accounting, verified.user_id, verified.credential_id)
        call = EmbedCall(
            inputs=tuple(request.inputs),
            dimensions=request.dimensions,
            preferred=tuple(request.preferred_providers),
            pinned=request.pinned_provider,
            allowed=tuple(request.allowed_providers),
            allow_fallback=request.allow_fallback,
            accounting=accounting,
            max_cost_micro_usd=request.max_cost_micro_usd,
            caller=Caller(verified.user_id, token or ""),
        )
        validate_embed(call)
        _check_identity(accounting)
        snapshot = parts.rankings.snapshot
        prices = snapshot.prices if snapshot is not None else parts.config_prices
        traceparent = current_traceparent()

        def store(record: AttemptRecord, cid: str) -> asyncio.Future[None]:
            observe_attempt(record)
            return parts.outbox.add(outcome_proto(record, accounting, cid), traceparent)

        result = await run_embed(
            call,
            self._providers,
            parts.engines,
            snapshot,
            prices,
            parts.budgets,
            parts.resilience,
            store,
            parts.charge_policy,
        )
        return router_pb2.EmbedResponse(
            embeddings=[
                router_pb2.Embedding(index=i, values=v) for i, v in enumerate(result.vectors)
            ],
            usage=usage_proto(result.usage),
            cost_micro_usd=result.cost_micro_usd,
            charge_micro_usd=result.charge_micro_usd,
            provider=result.provider,
            model=result.model,
            price_table_version=result.price_table_version,
            attempts=[_summary(r) for r in result.attempts],
        )

    async def ListProviders(
        self, request: router_pb2.ListProvidersRequest, context: Context
    ) -> router_pb2.ListProvidersResponse:
        """The configured providers with their circuit state, health, prices, limits and
        capabilities."""
        parts = self._parts
        snapshot = parts.rankings.snapshot
        prices = snapshot.prices if snapshot is not None else parts.config_prices
        infos = []
        for p in self._providers:
            price = prices.of(p.name)
            circuit = parts.resilience.states[p.name].circuit
            infos.append(
                providers_pb2.ProviderInfo(
                    name=p.name,
                    kind=p.kind,
                    model=p.model,
                    base_url=p.base_url,
                    circuit_state=providers_pb2.CircuitState.ValueType(circuit.state.value),
                    healthy=circuit.healthy,
                    prices=providers_pb2.Prices(
                        input_per_million_micro_usd=price.input_micro_usd_per_mtok,
                        output_per_million_micro_usd=price.output_micro_usd_per_mtok,
                        cached_input_per_million_micro_usd=price.cached_input_micro_usd_per_mtok,
                        cache_write_per_million_micro_usd=price.cache_write_micro_usd_per_mtok,
                        price_table_version=prices.version,
                    ),
                    limits=providers_pb2.Limits(
                        max_concurrency=p.max_concurrency,
                        rpm=p.rpm,
                        tpm=p.tpm,
                        connect_timeout_ms=p.connect_timeout_ms,
                        first_token_timeout_ms=p.first_token_timeout_ms,
                        total_timeout_ms=p.total_timeout_ms,
                        idle_timeout_ms=p.idle_timeout_ms,
                    ),
                    context_window=p.context_window,
                    quality_prior=p.quality,
                    capabilities=list(p.capabilities),
                )
            )
        outbox = await parts.outbox.status()
        return router_pb2.ListProvidersResponse(
            providers=infos,
            outbox=providers_pb2.OutboxStatus(
                backlog=outbox.backlog,
                oldest_age_ms=round(outbox.oldest_age(time.time()) * 1000),
                dead_letters=outbox.dead_letters,
                in_flight=outbox.in_flight,
            ),
        )

    async def CheckProviders(
        self, request: router_pb2.CheckProvidersRequest, context: Context
    ) -> router_pb2.CheckProvidersResponse:
        """Probe the named providers (every one when none is named) with a streamed and a
        non-streamed one-token call each, and give their circuits the verdicts (`probes`)."""
        health = self._health
        selected = health.select(request.providers)
        remaining = context.time_remaining()
        deadline = None if remaining is None else asyncio.get_running_loop().time() + remaining
        results = await health.check(selected, deadline=deadline)
        return router_pb2.CheckProvidersResponse(
            results=[
                providers_pb2.ProviderCheck(
                    provider=r.provider,
                    ok=r.ok,
                    latency_ms=r.latency_ms,
                    error_reason=r.error_reason,
                    stream=_mode_proto(r.stream),
                    complete=_mode_proto(r.complete),
                )
                for r in results
            ]
        )
