"""The `llm` agent: LLM capabilities served by the router's `Reason`.

`llm.complete` sends the prompt (and system prompt) to the router, acting for the run's user:
the caller's `saga-context` token travels unchanged and `accounting` names the user, session,
execution, step and pattern, so the router can verify the context and account the call.

The run's options travel with each call: the allow-list, `disable_fallback` (the router's
`allow_fallback` is its negation), the CUSTOM weights, and what is left of the run's cost
limit after the steps before this one (a step that finds nothing left is refused
RESOURCE_EXHAUSTED COST_LIMIT_EXCEEDED without calling the router).

The router's events are read as bytes: a Delta, Switched or Skipped is relayed without being decoded
(the runtime writes the step id in front, see `services/runtime/wire.py`); only Final, which
ends the step, is parsed. Failures from the router propagate unchanged, so its reason and
domain reach the client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from saga.execution.v1 import common_pb2, options_pb2, reason_events_pb2
from saga.router.v1 import router_pb2
from services.common.context import METADATA_KEY
from services.common.errors import QuotaViolation, ResourceExhausted, Unavailable
from services.common.usage_messages import usage_from_proto
from services.runtime import wire
from services.runtime.agents.llm_history import history_messages
from services.runtime.agents.step import Relayed, StepCall, StepEvent, StepResult
from services.runtime.capabilities import Capability, FieldSpec

REASON = "/saga.router.v1.RouterService/Reason"

LLM_COMPLETE = Capability(
    name="llm.complete",
    agent="llm",
    description="Answer a prompt with an LLM chosen by the router; text streams as tokens.",
    args=(
        FieldSpec("prompt", "string", required=True, description="the user message"),
        FieldSpec("system", "string", description="system prompt"),
        FieldSpec("max_tokens", "integer", description="upper bound on generated tokens"),
        FieldSpec("temperature", "number", description="sampling temperature"),
        FieldSpec(
            "history",
            "array",
            description="earlier turns, sent before the prompt: {role: user|assistant, content}",
        ),
    ),
    outputs=(FieldSpec("text", "string", required=True, description="the whole answer"),),
    # Until text streams nothing reached the caller, so another attempt is invisible.
    retry_safe=True,
)


def cost_left(call: StepCall) -> int:
    """What the step may spend of the run's cost limit (0 = no limit); raise
    COST_LIMIT_EXCEEDED when the steps before it spent it all."""
    limit = call.run.max_cost_micro_usd
    if limit <= 0:
        return 0
    left = limit - call.spent_micro_usd
    if left <= 0:
        raise ResourceExhausted(
            f"max_cost_micro_usd exceeded: the run's steps before {call.step_id} spent "
            f"{call.spent_micro_usd} of {limit} micro-USD",
            reason="COST_LIMIT_EXCEEDED",
            metadata={
                "limitMicroUsd": str(limit),
                "spentMicroUsd": str(call.spent_micro_usd),
                "stepId": call.step_id,
            },
            quota_violations=[
                QuotaViolation("max_cost_micro_usd", f"{call.spent_micro_usd} of {limit} spent")
            ],
        )
    return left


def reason_request(call: StepCall) -> router_pb2.ReasonRequest:
    """The router request for one `llm.complete` step."""
    args = call.args
    run = call.run
    request = router_pb2.ReasonRequest(
        messages=[
            *history_messages(call),
            router_pb2.Message(role=router_pb2.ROLE_USER, content=args.get("prompt") or ""),
        ],
        system_prompt=args.get("system") or "",
        max_tokens=int(args.get("max_tokens") or 0),
        response_mode=common_pb2.RESPONSE_MODE_STREAMING,
        strategy=run.strategy,  # type: ignore[arg-type]
        preferred_providers=run.preferred_providers,
        allowed_providers=run.allowed_providers,
        allow_fallback=not run.disable_fallback,
        accounting=router_pb2.AccountingContext(
            user_id=run.user_id,
            session_id=run.session_id,
            execution_id=run.execution_id,
            step_id=call.step_id,
            pattern_id=run.pattern_id,
        ),
        max_cost_micro_usd=cost_left(call),
    )
    if run.weights is not None:
        cost, latency, quality, reliability = run.weights
        request.weights.CopyFrom(
            options_pb2.StrategyWeights(
                cost=cost, latency=latency, quality=quality, reliability=reliability
            )
        )
    if args.get("temperature") is not None:
        request.temperature = float(args["temperature"])
    return request


class LlmAgent:
    """Owns the `llm.*` capabilities; one per process, over the one router channel."""

    name = "llm"
    capabilities = (LLM_COMPLETE,)

    def __init__(self, router: grpc.aio.Channel) -> None:
        # No response deserializer: events arrive as bytes, to be relayed as they are.
        self._reason: Callable[..., Any] = router.unary_stream(
            REASON,
            request_serializer=router_pb2.ReasonRequest.SerializeToString,
            response_deserializer=None,
        )

    async def run(self, call: StepCall) -> AsyncIterator[StepEvent]:
        """Stream one `llm.complete` step: relayed tokens and switches, then its result."""
        stream = self._reason(
            reason_request(call),
            metadata=((METADATA_KEY, call.run.context_token),),
            timeout=call.run.time_left(),
        )
        deltas: list[bytes] = []
        final: reason_events_pb2.Final | None = None
        try:
            async for raw in stream:
                event = wire.single_field(raw)
                if event is not None and event[0] in wire.RELAYED_FIELDS:
                    if event[0] == wire.TOKEN:
                        deltas.append(event[1])
                    yield Relayed(call.step_id, event[0], event[1])
                    continue
                parsed = router_pb2.ReasonResponse.FromString(raw)
                if parsed.HasField("final"):
                    final = parsed.final
        finally:
            # Leaving early (the client cancelled, the run failed) stops the router's work.
            stream.cancel()
        if final is None:
            raise Unavailable(
                "the router ended the answer without its final event",
                reason="ROUTER_STREAM_INCOMPLETE",
                metadata={"stepId": call.step_id},
            )
        text = final.text or "".join(reason_events_pb2.Delta.FromString(d).text for d in deltas)
        yield StepResult(
            output={"text": text},
            usage=usage_from_proto(final.usage),
            provider=final.provider,
            model=final.model,
            cost_micro_usd=final.cost_micro_usd,
        )
