"""`saga.gateway.v1.ExecutionService`: run a pattern and relay its events to the caller.

Before the runtime is called: scopes, bounds, the asof (a real date, not after today; empty =
today, resolved here so the whole run sees one date), the freshness gate
(`pack_health.PackGate`, cached: no RPC per Execute while its entries live) and, last, the
rate limits (`admission.Admission`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from saga.execution.v1 import common_pb2, options_pb2
from saga.gateway.v1 import execution_pb2, execution_pb2_grpc
from saga.runtime.v1 import runtime_pb2
from services.common.asof import resolve_asof
from services.common.call_options import MAX_COST_MICRO_USD, names_problem, weights_problem
from services.common.errors import FieldViolation, InvalidArgument
from services.common.guard import Context
from services.gateway.admission import Admission, RateLimited
from services.gateway.authn import Principal
from services.gateway.edge import Edge, new_execution_id, new_request_id
from services.gateway.pack_health import PackGate
from services.gateway.relay import Relay, scoped_relay

MAX_PATTERN_ID = 128
MAX_INPUT_BYTES = 1024 * 1024

# RunPatternResponse and ExecuteResponse share every field number (docs/architecture.md), so
# the runtime's bytes are parsed straight into the gateway's message: no copy per event.
_RUN_PATTERN = "/saga.runtime.v1.RuntimeService/RunPattern"
_WATCH = "/saga.runtime.v1.RuntimeService/WatchExecution"
_GET = "/saga.runtime.v1.RuntimeService/GetExecution"
_LIST = "/saga.runtime.v1.RuntimeService/ListExecutions"
READ_ANY = ("usage:read:all", "admin")
"""Scopes that read executions without running them (an auditor's key needs no `execute`)."""


def _validate(request: execution_pb2.ExecuteRequest) -> None:
    violations = []
    if not request.pattern_id:
        violations.append(FieldViolation("pattern_id", "name the pattern to run"))
    elif len(request.pattern_id) > MAX_PATTERN_ID:
        violations.append(FieldViolation("pattern_id", f"at most {MAX_PATTERN_ID} characters"))
    if request.inputs.ByteSize() > MAX_INPUT_BYTES:
        violations.append(FieldViolation("inputs", f"at most {MAX_INPUT_BYTES} bytes"))
    if violations:
        raise InvalidArgument("invalid Execute request", field_violations=violations)
    _validate_options(request.options)


def _option_invalid(field: str, description: str, reason: str) -> InvalidArgument:
    return InvalidArgument(
        f"invalid Execute option {field}: {description}",
        reason=reason,
        field_violations=[FieldViolation(f"options.{field}", description)],
    )


def _validate_options(options: options_pb2.ExecuteOptions) -> None:
    """The call options' bounds (`services.common.call_options`, which the router checks
    too); whether named providers are configured is the router's check (UNKNOWN_PROVIDER),
    when a step calls it."""
    for field in ("preferred_providers", "allowed_providers"):
        if problem := names_problem(getattr(options, field)):
            raise _option_invalid(field, problem, "OPTION_INVALID")
    if not 0 <= options.max_cost_micro_usd <= MAX_COST_MICRO_USD:
        raise _option_invalid(
            "max_cost_micro_usd", f"0 (no limit) to {MAX_COST_MICRO_USD}", "OPTION_INVALID"
        )
    if options.HasField("weights"):
        if options.strategy != common_pb2.STRATEGY_CUSTOM:
            raise _option_invalid(
                "weights", "only with strategy STRATEGY_CUSTOM", "WEIGHTS_INVALID"
            )
        w = options.weights
        if problem := weights_problem((w.cost, w.latency, w.quality, w.reliability)):
            raise _option_invalid("weights", problem, "WEIGHTS_INVALID")


def _check_enums(request: execution_pb2.ExecuteRequest) -> None:
    """An enum number the contract does not define is refused, never read as the default
    (proto3 keeps unknown enum numbers as they came)."""
    if request.options.export_format not in options_pb2.ExportFormat.values():
        raise InvalidArgument(
            f"options.export_format {request.options.export_format} is not an export format",
            reason="OPTION_INVALID",
            field_violations=[
                FieldViolation(
                    "options.export_format",
                    "one of " + ", ".join(options_pb2.ExportFormat.keys()),
                )
            ],
        )


class ExecutionServicer(execution_pb2_grpc.ExecutionServiceServicer):
    """Execute, and the execution records (scope `execute`; the runtime decides whose)."""

    def __init__(
        self,
        edge: Edge,
        runtime: grpc.aio.Channel,
        relay: Relay,
        gate: PackGate,
        admission: Admission,
    ) -> None:
        self._edge = edge
        self._admission = admission
        self._relay = relay
        self._gate = gate
        # No response deserializer: the runtime's events share ExecuteResponse's field
        # numbers, so the gRPC door relays their bytes as they are (registered with
        # `raw_responses`); only the HTTP edges decode them (`execute_events`).
        self._run_pattern = runtime.unary_stream(
            _RUN_PATTERN,
            request_serializer=runtime_pb2.RunPatternRequest.SerializeToString,
            response_deserializer=None,
        )
        # The gateway's watch request and response share the runtime's field numbers.
        self._watch = runtime.unary_stream(
            _WATCH,
            request_serializer=execution_pb2.WatchExecutionRequest.SerializeToString,
            response_deserializer=execution_pb2.WatchExecutionResponse.FromString,
        )

    # Relayed to the runtime, which answers only what the caller may read.
    GetExecution = scoped_relay("execute", _GET, execution_pb2.GetExecutionResponse, *READ_ANY)
    ListExecutions = scoped_relay("execute", _LIST, execution_pb2.ListExecutionsResponse, *READ_ANY)

    async def WatchExecution(
        self, request: execution_pb2.WatchExecutionRequest, context: Context
    ) -> AsyncIterator[execution_pb2.WatchExecutionResponse]:
        """Relay the runtime's watch for as long as the caller's deadline allows."""
        principal = await self._edge.principal(context)
        principal.require("execute", *READ_ANY)
        ttl = self._edge.deadline(context)
        call = self._watch(
            request,
            metadata=self._edge.context_metadata(principal, new_request_id(), ttl),
            timeout=ttl,
        )
        try:
            async for event in call:
                yield event
        finally:
            # A caller that went away cancels the call down the chain now, not when the
            # call object is collected (the runtime would run, and bill, to the end).
            call.cancel()

    async def execute_events(
        self, request: execution_pb2.ExecuteRequest, context: Context
    ) -> AsyncIterator[execution_pb2.ExecuteResponse]:
        """Execute's events as messages, for the HTTP edges that read them."""
        async for event in self.Execute(request, context):
            yield execution_pb2.ExecuteResponse.FromString(event)

    async def Execute(  # type: ignore[override]  # bytes: registered with raw_responses
        self, request: execution_pb2.ExecuteRequest, context: Context
    ) -> AsyncIterator[bytes]:
        """Authenticate, check scopes, rate-limit (`Admission`: the run holds its concurrency
        slot to its end), mint the request context, relay the runtime's stream (each event's
        serialized bytes: a token is never decoded and re-encoded here)."""
        principal = await self._edge.principal(context)
        principal.require("execute")
        if request.options.allow_stale_pack:
            principal.require("pack:stale")
        _validate(request)
        _check_enums(request)
        asof = resolve_asof(request.asof)
        await self._gate.check(request.pattern_id, asof, request.options)
        # Counted last, so a request refused for any other reason costs no quota.
        try:
            admitted = await self._admission.admit(principal)
        except RateLimited as refused:
            # The HTTP door turns initial metadata into response headers; gRPC clients
            # read the same values from the trailers too.
            if refused.headers:
                await context.send_initial_metadata(refused.headers)
                context.set_trailing_metadata(refused.headers)
            raise
        async with self._admission.held(admitted):  # from here on, the slot is given back
            if admitted.headers:
                await context.send_initial_metadata(admitted.headers)
            async for event in self._run(request, asof, principal, context):
                yield event

    async def _run(
        self,
        request: execution_pb2.ExecuteRequest,
        asof: str,
        principal: Principal,
        context: Context,
    ) -> AsyncIterator[bytes]:
        execution_id = new_execution_id()
        ttl = self._edge.deadline(context)
        call = self._run_pattern(
            runtime_pb2.RunPatternRequest(
                pattern_id=request.pattern_id,
                inputs=request.inputs,
                asof=asof,
                session_id=request.session_id,
                options=request.options,
                execution_id=execution_id,
            ),
            metadata=self._edge.context_metadata(principal, execution_id, ttl),
            timeout=ttl,
        )
        try:
            async for event in call:
                yield event
        finally:
            # A caller that went away cancels the call down the chain now, not when the
            # call object is collected (the runtime would run, and bill, to the end).
            call.cancel()
