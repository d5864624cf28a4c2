"""`saga.runtime.v1.RuntimeService`: translation between protobuf and the runtime's domain.

RunPattern verifies the caller's request context (bound to the execution), admits the
request (pattern, inputs, asof, execution id), pins the run's data (`pins.py`: the pack
serving its asof, through the freshness gate when the pattern requires a pack, and the ledger
head — or the pack and commit the options name), and streams the runner's events as
`RunPatternResponse`s numbered 1, 2, 3… The stream is written as serialized bytes (the
service is registered with `raw_responses`): a token from the router becomes a response by
prefixing its bytes (see `wire.py`), so the per-token path decodes nothing and does no I/O;
the other events are built in `messages.py`. The execution record is written once as the run
starts (beside the first step) and once as it ends, before the last event; a failure is
recorded with its reason before the error — the router's status, its code, reason and
domain kept, with the step and trace ids added (runner.py) — ends the stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
from google.protobuf import json_format
from opentelemetry import trace

from saga.execution.v1 import options_pb2
from saga.runtime.v1 import runtime_pb2, runtime_pb2_grpc
from services.common.context import ContextVerifier, metadata_token
from services.common.errors import NotFound, PermissionDenied, SagaError
from services.common.guard import Context
from services.common.server import Registration
from services.common.status import describe
from services.common.unbuilt_fields import refuse_unbuilt
from services.runtime import messages, wire
from services.runtime.admission import check_execution_id, check_inputs, resolve_asof
from services.runtime.agents.step import Relayed, RunScope
from services.runtime.capabilities import CapabilityRegistry, json_schema
from services.runtime.executions import ExecutionRecord, ExecutionStore
from services.runtime.patterns import Catalog, Pattern
from services.runtime.pins import Pinning
from services.runtime.runner import RunFinished, Runner


def error_reason(error: BaseException) -> str:
    """The ErrorInfo reason a failed run is recorded with."""
    if isinstance(error, SagaError):
        return error.reason
    if isinstance(error, grpc.aio.AioRpcError):
        return describe(error).reason or f"UPSTREAM_{error.code().name}"
    return "INTERNAL"


def _weights(options: options_pb2.ExecuteOptions) -> tuple[float, float, float, float] | None:
    """The run's CUSTOM weights; None when it sets none (the router checks them)."""
    if not options.HasField("weights"):
        return None
    w = options.weights
    return (w.cost, w.latency, w.quality, w.reliability)


class RuntimeServicer(runtime_pb2_grpc.RuntimeServiceServicer):
    """Runs patterns; RPCs not overridden here answer UNIMPLEMENTED."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        registry: CapabilityRegistry,
        pinning: Pinning,
        executions: ExecutionStore,
        verifier: ContextVerifier,
        max_parallel_steps: int = 4,
    ) -> None:
        self._patterns = dict(catalog.patterns)
        self._problems = sorted(catalog.problems, key=lambda p: p.source)
        self._registry = registry
        self._runner = Runner(registry, max_parallel_steps)
        self._pinning = pinning
        self._executions = executions
        self._verifier = verifier

    def _find(self, pattern_id: str) -> Pattern:
        pattern = self._patterns.get(pattern_id)
        if pattern is None:
            raise NotFound(
                f"no pattern {pattern_id[:64]!r}",
                reason="PATTERN_NOT_FOUND",
                metadata={"patternId": pattern_id[:64]},
            )
        return pattern

    async def RunPattern(  # type: ignore[override]
        self, request: runtime_pb2.RunPatternRequest, context: Context
    ) -> AsyncIterator[bytes]:
        """Run a pattern, streaming serialized RunPatternResponses (see the module doc)."""
        verified = await self._verifier.verify(
            metadata_token(context.invocation_metadata()), request.execution_id
        )
        execution_id = check_execution_id(request.execution_id)
        refuse_unbuilt(request.session_id, request.options)
        pattern = self._find(request.pattern_id)
        inputs = check_inputs(pattern, json_format.MessageToDict(request.inputs))
        asof = resolve_asof(request.asof)
        options = request.options
        if options.allow_stale_pack and not verified.has_scope("pack:stale"):
            raise PermissionDenied(
                "allow_stale_pack needs scope pack:stale",
                reason="SCOPE_MISSING",
                metadata={"scope": "pack:stale"},
            )
        pins = await self._pinning.pin(asof, options, pattern.requires_pack)
        pack_id, commit = pins.pricing_pack_id, pins.ledger_commit_hash
        span = trace.get_current_span()
        span_context = span.get_span_context()
        trace_id = format(span_context.trace_id, "032x") if span_context.is_valid else ""
        span.set_attributes(
            {
                "saga.execution_id": execution_id,
                "saga.pattern_id": pattern.id,
                "saga.pricing_pack_id": pack_id,
                "saga.ledger_commit_hash": commit,
            }
        )
        remaining = context.time_remaining()
        scope = RunScope(
            execution_id=execution_id,
            pattern_id=pattern.id,
            user_id=verified.user_id,
            session_id=request.session_id,
            asof=asof,
            pricing_pack_id=pack_id,
            ledger_commit_hash=commit,
            context_token=verified.token,
            strategy=options.strategy,
            preferred_providers=tuple(options.preferred_providers),
            max_cost_micro_usd=options.max_cost_micro_usd,
            allowed_providers=tuple(options.allowed_providers),
            disable_fallback=options.disable_fallback,
            weights=_weights(options),
            deadline=None if remaining is None else time.monotonic() + remaining,
        )
        recording = self._executions.begin(
            ExecutionRecord(
                execution_id=execution_id,
                user_id=verified.user_id,
                pattern_id=pattern.id,
                session_id=request.session_id,
                asof=asof,
                pricing_pack_id=pack_id,
                ledger_commit_hash=commit,
                trace_id=trace_id,
            )
        )
        pinned = messages.Pinned(
            execution_id=execution_id,
            pricing_pack_id=pack_id,
            ledger_commit_hash=commit,
            trace_id=trace_id,
            asof=asof,
        )
        sequence = 1
        try:
            yield messages.accepted(pinned, sequence)
            ctx = {
                "asof": asof,
                "execution_id": execution_id,
                "ledger_commit_hash": commit,
                "pricing_pack_id": pack_id,
            }
            async for event in self._runner.run(pattern, inputs, scope, ctx, trace_id):
                sequence += 1
                if isinstance(event, Relayed):  # the hot path: one per token
                    yield wire.step_event(event.field, event.step_id, event.payload, sequence)
                    continue
                if isinstance(event, RunFinished):
                    # Recorded before the last event: a caller that saw Completed finds it.
                    await recording.succeeded(event.usage, event.cost_micro_usd)
                yield messages.run_event(event, pinned, sequence)
        except (asyncio.CancelledError, GeneratorExit):
            recording.abandoned("CANCELLED")
            raise
        except Exception as error:
            await recording.failed(error_reason(error))
            raise

    async def ListPatterns(
        self, request: runtime_pb2.ListPatternsRequest, context: Context
    ) -> runtime_pb2.ListPatternsResponse:
        """Every loaded pattern, by id, and the refused files, by source."""
        return runtime_pb2.ListPatternsResponse(
            patterns=[messages.pattern(self._patterns[k]) for k in sorted(self._patterns)],
            problems=[messages.problem(p) for p in self._problems],
        )

    async def GetPattern(
        self, request: runtime_pb2.GetPatternRequest, context: Context
    ) -> runtime_pb2.GetPatternResponse:
        """One pattern; NOT_FOUND PATTERN_NOT_FOUND when unknown."""
        return runtime_pb2.GetPatternResponse(
            pattern=messages.pattern(self._find(request.pattern_id))
        )

    async def ListCapabilities(
        self, request: runtime_pb2.ListCapabilitiesRequest, context: Context
    ) -> runtime_pb2.ListCapabilitiesResponse:
        """Every registered capability with its owner and schemas, by name."""
        capabilities = self._registry.capabilities()
        return runtime_pb2.ListCapabilitiesResponse(
            capabilities=[
                runtime_pb2.Capability(
                    name=c.name,
                    agent=c.agent,
                    description=c.description,
                    input_schema=messages.struct(json_schema(c.args)),
                    output_schema=messages.struct(json_schema(c.outputs)),
                )
                for c in (capabilities[k] for k in sorted(capabilities))
            ]
        )


def registration(servicer: RuntimeServicer) -> Registration:
    """The Registration of `servicer`: RunPattern streams bytes it serialized itself."""
    return Registration.of(servicer, raw_responses={"RunPattern"})
