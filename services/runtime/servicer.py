"""`saga.runtime.v1.RuntimeService`: translation between protobuf and the runtime's domain.

RunPattern verifies the caller's request context (bound to the execution), admits the
request (pattern, inputs, asof, execution id), pins the run's data (`pins.py`: the pack
serving its asof, through the freshness gate when the pattern requires a pack, and the ledger
head — or the pack and commit the options name), checks an export against the rights registry
(before anything is recorded or run), and streams the runner's events as
`RunPatternResponse`s numbered 1, 2, 3… The stream is written as serialized bytes (the
service is registered with `raw_responses`): a token from the router becomes a response by
prefixing its bytes (see `wire.py`), so the per-token path decodes nothing and does no I/O;
the other events are built in `messages.py`. The execution record is written once as the run
starts (beside the first step) and once as it ends, before the last event; a failure is
recorded with its reason before the error — the router's status, its code, reason and
domain kept, with the step and trace ids added (runner.py) — ends the stream. A run in a
session must name one of the caller's (NOT_FOUND before anything runs); its templates see
the session's newest stages as the `session` root (`session_root.py`), and it appends its
stage there, with its inputs, once it completed, also before the last event.

A detached run is stored with its request and context, so that when its replica dies
another one that claims it (`executions.py`) continues it here (`adopt`): admitted again
with the same pins, its log read (`moves.py`), the steps that ended reused, and its stream
continued from the next sequence with a RunMoved marker (docs/architecture.md, "Durable
runs").
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format
from opentelemetry import trace

from saga.execution.v1 import options_pb2
from saga.runtime.v1 import runtime_pb2, runtime_pb2_grpc
from services.common import page_tokens
from services.common.context import ContextVerifier, RequestContext, metadata_token
from services.common.database import now_micros
from services.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SagaError,
)
from services.common.guard import Context
from services.common.lifecycle import InFlight
from services.common.server import Registration
from services.common.status import describe, status_for
from services.common.timestamps import from_iso
from services.common.usage_messages import usage_from_proto
from services.runtime import messages, moves, wire
from services.runtime.admission import (
    check_execution_id,
    check_idempotency_key,
    check_inputs,
    request_digest,
    resolve_asof,
)
from services.runtime.agents.step import Relayed, RunScope
from services.runtime.capabilities import CapabilityRegistry, json_schema
from services.runtime.event_log import EventWriter, LiveRun
from services.runtime.execution_queries import (
    MAX_EXECUTION_ID_CHARS,
    READ_ANY_SCOPES,
    execution_query,
    page_size,
)
from services.runtime.executions import (
    ExecutionRecord,
    ExecutionStatus,
    ExecutionStore,
    Recording,
)
from services.runtime.head_start import HeadStart
from services.runtime.patterns import Catalog, Pattern
from services.runtime.pins import Pinning
from services.runtime.rights import RightsRegistry, RunRights
from services.runtime.runner import RunEvent, RunFinished, Runner, StepFinished
from services.runtime.session_root import HISTORY_STAGES, session_root
from services.runtime.sessions import SessionStore
from services.runtime.watch import (
    cancelled_status,
    follow,
    interrupted_status,
    moving_status,
    watch,
)

_log = logging.getLogger("saga.runtime.runs")

DOMAIN = "runtime.saga"
"""The ErrorInfo domain of the runtime's errors (the guard's, for the statuses it records)."""


def error_reason(error: BaseException) -> str:
    """The ErrorInfo reason a failed run is recorded with."""
    if isinstance(error, SagaError):
        return error.reason
    if isinstance(error, grpc.aio.AioRpcError):
        return describe(error).reason or f"UPSTREAM_{error.code().name}"
    return "INTERNAL"


async def _drain(run: AsyncIterator[bytes]) -> None:
    """Drive a detached run to its end; how it ended is in its record and its log."""
    with contextlib.suppress(Exception):
        async for _ in run:
            pass


def _weights(options: options_pb2.ExecuteOptions) -> tuple[float, float, float, float] | None:
    """The run's CUSTOM weights; None when it sets none (the router checks them)."""
    if not options.HasField("weights"):
        return None
    w = options.weights
    return (w.cost, w.latency, w.quality, w.reliability)


def export_format(options: options_pb2.ExecuteOptions) -> str:
    """ "" when the run is not an export, else "json" or "csv" (`export_format` is read only
    with `export`, as the contract says); a format the contract does not define is
    INVALID_ARGUMENT OPTION_INVALID (the gateway refuses it first)."""
    chosen = options.export_format
    if chosen not in options_pb2.ExportFormat.values():
        problem = "one of " + ", ".join(options_pb2.ExportFormat.keys())
        raise InvalidArgument(
            f"invalid Execute option export_format: {problem}",
            reason="OPTION_INVALID",
            field_violations=[FieldViolation("options.export_format", problem)],
        )
    if not options.export:
        return ""
    return "csv" if chosen == options_pb2.EXPORT_FORMAT_CSV else "json"


@dataclass(frozen=True)
class _Admitted:
    """A run whose request was checked and whose data is pinned: what running it needs."""

    pattern: Pattern
    inputs: Mapping[str, Any]
    asof: str
    session: Mapping[str, Any] | None
    scope: RunScope
    record: ExecutionRecord
    pinned: messages.Pinned
    rights: RunRights
    ctx: dict[str, str]
    started_at_us: int


class RuntimeServicer(runtime_pb2_grpc.RuntimeServiceServicer):
    """Runs patterns; RPCs not overridden here answer UNIMPLEMENTED."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        registry: CapabilityRegistry,
        pinning: Pinning,
        executions: ExecutionStore,
        sessions: SessionStore,
        events: EventWriter,
        verifier: ContextVerifier,
        rights: RightsRegistry,
        max_parallel_steps: int = 4,
        idempotency_window_seconds: float = 86_400.0,
        detached_grace_seconds: float = 10.0,
        session_history_max_tokens: int = 8_000,
    ) -> None:
        self._patterns = dict(catalog.patterns)
        self._problems = sorted(catalog.problems, key=lambda p: p.source)
        self._registry = registry
        self._runner = Runner(registry, max_parallel_steps)
        self._pinning = pinning
        self._executions = executions
        self._sessions = sessions
        self._events = events
        self._live: dict[str, LiveRun] = {}
        """The runs in progress on this replica, which watchers here follow in memory."""
        self._detached = InFlight()
        """Runs with detach_on_disconnect, each a task of its own."""
        self._movable: dict[str, asyncio.Task[None]] = {}
        """Those tasks by execution id (another replica may claim one: `lose`)."""
        self._idempotency_window = idempotency_window_seconds
        self._grace = detached_grace_seconds
        self._history_tokens = session_history_max_tokens
        self._verifier = verifier
        self._rights = rights

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
        span = trace.get_current_span()
        span_context = span.get_span_context()
        trace_id = format(span_context.trace_id, "032x") if span_context.is_valid else ""
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.time() + remaining
        run = await self._admit(request, verified, deadline, trace_id)
        span.set_attributes(
            {
                "saga.execution_id": run.record.execution_id,
                "saga.pattern_id": run.pattern.id,
                "saga.pricing_pack_id": run.pinned.pricing_pack_id,
                "saga.ledger_commit_hash": run.pinned.ledger_commit_hash,
            }
        )
        options = request.options
        record = dataclasses.replace(
            run.record, idempotency_key=check_idempotency_key(options.idempotency_key)
        )
        detached = options.detach_on_disconnect
        if detached:
            # What another replica needs to continue the run if this one dies (durable
            # runs): the request as admitted (its asof resolved) and its context, usable
            # until the run's deadline or the context's expiry, whichever comes first.
            stored = runtime_pb2.RunPatternRequest()
            stored.CopyFrom(request)
            stored.asof = run.asof
            until = verified.expires_at if deadline is None else min(verified.expires_at, deadline)
            record = dataclasses.replace(
                record,
                resume_request=stored.SerializeToString(),
                context_token=verified.token,
                resume_until_ms=int(until * 1000),
            )
        if record.idempotency_key:
            record = dataclasses.replace(record, request_digest=request_digest(request))
            first = await self._executions.claim(record, self._idempotency_window)
            if first is not None:
                # A retry: the first run's events, replayed and then followed.
                if first.request_digest != record.request_digest:
                    raise FailedPrecondition(
                        "this idempotency_key was used for another request",
                        reason="IDEMPOTENCY_KEY_REUSED",
                        metadata={"executionId": first.execution_id},
                    )
                async for event in watch(self._executions, self._live, first, 0):
                    yield event
                return
        recording = self._executions.begin(record, inserted=bool(record.idempotency_key))
        log = self._events.start(record.execution_id, movable=detached)
        self._live[record.execution_id] = log
        events = self._drive(
            log,
            recording,
            run,
            self._runner.run(run.pattern, run.inputs, run.scope, run.ctx, trace_id, run.session),
            detached,
            messages.accepted(run.pinned, 1),
        )
        if not detached:
            # Closed with this call however it ends, so the run's own cleanup (record,
            # log) happens now and not when the generator is collected.
            async with contextlib.aclosing(events):
                async for event in events:
                    yield event
            return
        # The run is the task's: this call only follows it, and may go away.
        self._run_detached(record.execution_id, _drain(events))
        async for event in follow(log, 0):
            yield event

    async def _admit(
        self,
        request: runtime_pb2.RunPatternRequest,
        verified: RequestContext,
        deadline: float | None,
        trace_id: str,
        moved: bool = False,
    ) -> _Admitted:
        """Check a run's request and pin its data (raising what refuses it); `deadline` is
        when it must end (seconds since the epoch; None: none). A `moved` run was admitted
        once already: its stale-pack override is its pin's, not a new request's."""
        execution_id = check_execution_id(request.execution_id)
        pattern = self._find(request.pattern_id)
        inputs = check_inputs(pattern, json_format.MessageToDict(request.inputs))
        asof = resolve_asof(request.asof)
        session = None
        if request.session_id:  # not the caller's (or no such) session: nothing runs
            stages = await self._sessions.recent_stages(
                verified.user_id, request.session_id, HISTORY_STAGES
            )
            session = session_root(request.session_id, stages, self._history_tokens)
        options = request.options
        if options.allow_stale_pack and not moved and not verified.has_scope("pack:stale"):
            raise PermissionDenied(
                "allow_stale_pack needs scope pack:stale",
                reason="SCOPE_MISSING",
                metadata={"scope": "pack:stale"},
            )
        pins = await self._pinning.pin(asof, options, pattern.requires_pack)
        pack_id, commit = pins.pricing_pack_id, pins.ledger_commit_hash
        # Before anything is recorded or run: an export the rights registry denies never starts.
        rights = self._rights.admit(
            pattern,
            self._registry.capabilities(),
            pins.pack_source,
            export_format(request.options),
            execution_id,
        )
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
            deadline=None if deadline is None else time.monotonic() + deadline - time.time(),
        )
        record = ExecutionRecord(
            execution_id=execution_id,
            user_id=verified.user_id,
            pattern_id=pattern.id,
            session_id=request.session_id,
            asof=asof,
            pricing_pack_id=pack_id,
            ledger_commit_hash=commit,
            trace_id=trace_id,
        )
        pinned = messages.Pinned(
            execution_id=execution_id,
            pricing_pack_id=pack_id,
            ledger_commit_hash=commit,
            trace_id=trace_id,
            asof=asof,
        )
        ctx = {
            "asof": asof,
            "execution_id": execution_id,
            "ledger_commit_hash": commit,
            "pricing_pack_id": pack_id,
        }
        return _Admitted(
            pattern, inputs, asof, session, scope, record, pinned, rights, ctx, now_micros()
        )

    def adopt(self, claimed: list[ExecutionRecord]) -> None:
        """Continue the runs this replica claimed from stopped replicas, each as a detached
        run (ExecutionStore.keep_alive hands them over)."""
        for record in claimed:
            self._run_detached(record.execution_id, self._continue(record))

    def _run_detached(self, execution_id: str, work: Coroutine[Any, Any, None]) -> None:
        task = self._detached.start(work)
        self._movable[execution_id] = task
        task.add_done_callback(lambda _: self._movable.pop(execution_id, None))

    def running(self) -> list[str]:
        """The execution ids of the detached runs this replica runs."""
        return list(self._movable)

    def lose(self, execution_ids: list[str]) -> None:
        """Stop running these detached runs here: another replica claimed them while this
        one was presumed dead. Their unwritten events are dropped (the sequences are the
        claimant's now); their watchers here are told to watch again (EXECUTION_MOVING)."""
        for execution_id in execution_ids:
            self._events.forget(execution_id)
            task = self._movable.get(execution_id)
            if task is not None:
                task.cancel()

    async def _continue(self, record: ExecutionRecord) -> None:
        """Continue a claimed run to its end; one that cannot continue is INTERRUPTED."""
        try:
            events = await self._moved(record)
        except Exception as error:
            # An expired context, a pattern this replica does not have, a log with a gap:
            # the run cannot go on, and its record says so.
            _log.warning(
                "a claimed run cannot continue: interrupted",
                extra={"execution_id": record.execution_id, "reason": error_reason(error)},
            )
            await self._executions.interrupt(record.execution_id)
            return
        if events is not None:
            await _drain(events)

    async def _moved(self, record: ExecutionRecord) -> AsyncGenerator[bytes, None] | None:
        """The continuation of a claimed run (None: its log shows it had completed, and its
        record is settled now)."""
        assert record.resume_request is not None
        request = runtime_pb2.RunPatternRequest.FromString(record.resume_request)
        verified = await self._verifier.verify(record.context_token, record.execution_id)
        logged = await self._executions.events(record.execution_id, 0, limit=None)
        past = moves.history(logged)
        if past.completed is not None:
            done = past.completed
            await self._executions.finish(
                record.execution_id,
                ExecutionStatus.SUCCEEDED,
                usage_from_proto(done.usage),
                done.cost_micro_usd,
            )
            return None
        # The same pins as the first admission, whatever was published since.
        options = request.options
        if record.pricing_pack_id:
            options.pricing_pack_id = record.pricing_pack_id
            options.allow_stale_pack = True
        options.ledger_commit_hash = record.ledger_commit_hash
        run = await self._admit(
            request, verified, record.resume_until_ms / 1000, record.trace_id, moved=True
        )
        # Its session stage, if it gets one, started when the run did, not here.
        run = dataclasses.replace(run, started_at_us=from_iso(record.created_at).ToMicroseconds())
        order = {step.id: i for i, step in enumerate(run.pattern.steps)}
        for recorded in past.reuse.values():
            if isinstance(recorded, StepFinished):
                run.rights.used(recorded.capability)
        marker = messages.run_moved(
            replica=self._executions.replica_id,
            from_replica=record.replica_id,
            reused=sorted(past.reuse, key=lambda s: order.get(s, len(order))),
            restarted=sorted(past.restarted, key=lambda s: order.get(s, len(order))),
            moves=record.moves,
            after_sequence=past.last_sequence,
        )
        log = self._events.start(
            record.execution_id, movable=True, recorded=[payload for _, payload in logged]
        )
        self._live[record.execution_id] = log
        _log.info(
            "run continues here",
            extra={
                "execution_id": record.execution_id,
                "from_replica": record.replica_id,
                "reused": len(past.reuse),
                "restarted": list(past.restarted),
            },
        )
        return self._drive(
            log,
            self._executions.begin(run.record, inserted=True),
            run,
            self._runner.run(
                run.pattern,
                run.inputs,
                run.scope,
                run.ctx,
                run.record.trace_id,
                run.session,
                reuse=past.reuse,
            ),
            True,
            marker,
            past.last_sequence + 1,
        )

    async def _drive(
        self,
        log: LiveRun,
        recording: Recording,
        run: _Admitted,
        run_events: AsyncGenerator[RunEvent, None],
        detached: bool,
        opening: bytes,
        sequence: int = 1,
    ) -> AsyncGenerator[bytes, None]:
        """The run's responses from `opening` (its Accepted, or a moved run's marker, at
        `sequence`) on, each logged before it is sent, and its record settled. The run starts
        while `opening` is written (`HeadStart`)."""
        pinned, rights = run.pinned, run.rights
        events = HeadStart(run_events)
        stage = None
        if run.record.session_id:
            session_id, user_id = run.record.session_id, run.record.user_id

            async def stage(outputs: Mapping[str, Any]) -> None:
                """The completed run becomes a stage of its session."""
                await self._sessions.append(
                    user_id,
                    session_id,
                    pinned.execution_id,
                    run.pattern.id,
                    outputs,
                    run.started_at_us,
                    run.inputs,
                )

        try:
            log.append(opening)
            yield opening
            async for event in events:
                sequence += 1
                if isinstance(event, Relayed):  # the hot path: one per token
                    response = wire.step_event(event.field, event.step_id, event.payload, sequence)
                    log.append(response)
                    yield response
                    continue
                if isinstance(event, StepFinished):
                    rights.used(event.capability)
                release = (
                    rights.release(event.outputs, pinned.pricing_pack_id, pinned.ledger_commit_hash)
                    if isinstance(event, RunFinished)
                    else None
                )
                response = messages.run_event(event, pinned, sequence, release)
                log.append(response)
                if isinstance(event, RunFinished):
                    # Logged and recorded before the last event is sent: a caller that saw
                    # Completed finds the record SUCCEEDED and the whole log.
                    await self._events.flush()
                    await recording.succeeded(event.usage, event.cost_micro_usd)
                    if stage is not None:
                        await stage(event.outputs)
                    log.end(None)
                yield response
        except (asyncio.CancelledError, GeneratorExit):
            if detached:
                # Only the shutdown cancels a detached run: the record stays RUNNING until
                # the replica gives up its lease, which marks it INTERRUPTED — or leaves it
                # to the next replica that sweeps, which continues it (its watchers here
                # are told to watch again).
                log.end(moving_status() if log.movable else interrupted_status())
            else:
                cancelled = cancelled_status()
                log.end(cancelled)
                recording.abandoned(
                    "CANCELLED", cancelled.SerializeToString(), first=self._events.flush
                )
            raise
        except Exception as error:
            final = status_for(error, DOMAIN)
            await self._events.flush()
            await recording.failed(error_reason(error), final.SerializeToString())
            log.end(final)
            raise
        finally:
            del self._live[pinned.execution_id]
            await events.aclose()

    async def stop_detached(self) -> None:
        """On shutdown: give detached runs the drain grace, then stop them (INTERRUPTED)."""
        await self._detached.wait(grace=self._grace)

    async def _reader(self, context: Context) -> tuple[str, bool]:
        """(the caller's user id, whether it may read every user's executions)."""
        verified = await self._verifier.verify(metadata_token(context.invocation_metadata()))
        return verified.user_id, any(verified.has_scope(s) for s in READ_ANY_SCOPES)

    async def _readable(self, execution_id: str, context: Context) -> ExecutionRecord:
        user_id, any_user = await self._reader(context)
        record = None
        if len(execution_id) <= MAX_EXECUTION_ID_CHARS:
            record = await self._executions.get(execution_id)
        if record is None or not (any_user or record.user_id == user_id):
            # Another user's execution is as absent as one that never existed.
            raise NotFound(
                f"no execution {execution_id[:MAX_EXECUTION_ID_CHARS]!r}",
                reason="EXECUTION_NOT_FOUND",
                metadata={"executionId": execution_id[:MAX_EXECUTION_ID_CHARS]},
            )
        return record

    async def GetExecution(
        self, request: runtime_pb2.GetExecutionRequest, context: Context
    ) -> runtime_pb2.GetExecutionResponse:
        """One execution the caller may read; NOT_FOUND EXECUTION_NOT_FOUND otherwise."""
        record = await self._readable(request.execution_id, context)
        return runtime_pb2.GetExecutionResponse(execution=messages.execution(record))

    async def ListExecutions(
        self, request: runtime_pb2.ListExecutionsRequest, context: Context
    ) -> runtime_pb2.ListExecutionsResponse:
        """The executions the query asks for, newest first, one page."""
        user_id, any_user = await self._reader(context)
        query = execution_query(request, user_id, any_user)
        size = page_size(request.page_size)
        filters = (
            query.user_id,
            query.status,
            query.pattern_id,
            query.created_after,
            query.created_before,
        )
        position = page_tokens.decode(request.page_token, filters, 2)
        if position is not None:
            query = dataclasses.replace(query, after=(position[0], position[1]))
        records = await self._executions.search(query, size + 1)
        token = ""
        if len(records) > size:
            records = records[:size]
            token = page_tokens.encode((records[-1].created_at, records[-1].execution_id), filters)
        return runtime_pb2.ListExecutionsResponse(
            executions=[messages.execution(r) for r in records], next_page_token=token
        )

    async def WatchExecution(  # type: ignore[override]
        self, request: runtime_pb2.WatchExecutionRequest, context: Context
    ) -> AsyncIterator[bytes]:
        """The run's events after `after_sequence`, then live ones, then its end (see
        services/runtime/watch.py); serialized WatchExecutionResponses, which share
        RunPatternResponse's field numbers."""
        record = await self._readable(request.execution_id, context)
        async for event in watch(self._executions, self._live, record, request.after_sequence):
            yield event

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
        """Every registered capability with its owner, schemas and the owner's circuit state,
        by name."""
        capabilities = self._registry.capabilities()
        circuits = self._registry.circuits.states()
        return runtime_pb2.ListCapabilitiesResponse(
            capabilities=[
                runtime_pb2.Capability(
                    name=c.name,
                    agent=c.agent,
                    description=c.description,
                    input_schema=messages.struct(json_schema(c.args)),
                    output_schema=messages.struct(json_schema(c.outputs)),
                    circuit_state=circuits[c.agent].value,  # type: ignore[arg-type]
                )
                for c in (capabilities[k] for k in sorted(capabilities))
            ]
        )


def registration(servicer: RuntimeServicer) -> Registration:
    """The Registration of `servicer`: RunPattern streams bytes it serialized itself."""
    return Registration.of(servicer, raw_responses={"RunPattern", "WatchExecution"})
