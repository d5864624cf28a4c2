"""The runtime's domain values as `saga.runtime.v1` messages: patterns, and RunPattern's
stream — the runner's events as serialized `RunPatternResponse`s.

RunPattern's servicer writes bytes, not messages (see `Registration.of(raw_responses=…)`):
a relayed token becomes a response by prefixing its bytes (`wire.step_event`, the hot path,
which the servicer calls itself); the few other events of a run are built and serialized here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2

from saga.execution.v1 import events_pb2, records_pb2
from saga.runtime.v1 import runtime_pb2
from services.common.timestamps import from_iso
from services.common.usage_messages import usage_proto
from services.runtime.capabilities import json_schema
from services.runtime.executions import ExecutionRecord
from services.runtime.patterns import Pattern, Problem
from services.runtime.rights import Release
from services.runtime.runner import RunFinished, StepBegan, StepFinished, StepSkipped


def execution(record: ExecutionRecord) -> records_pb2.Execution:
    """The Execution message of a stored record."""
    out = records_pb2.Execution(
        execution_id=record.execution_id,
        pattern_id=record.pattern_id,
        user_id=record.user_id,
        session_id=record.session_id,
        status=records_pb2.ExecutionStatus.Value(f"EXECUTION_STATUS_{record.status}"),
        usage=usage_proto(record.usage),
        cost_micro_usd=record.cost_micro_usd,
        pricing_pack_id=record.pricing_pack_id,
        ledger_commit_hash=record.ledger_commit_hash,
        trace_id=record.trace_id,
        error_reason=record.error_reason,
        asof=record.asof,
    )
    out.created_at.CopyFrom(from_iso(record.created_at))
    if record.completed_at:
        out.completed_at.CopyFrom(from_iso(record.completed_at))
    return out


def struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    """`values` as a protobuf Struct."""
    out = struct_pb2.Struct()
    out.update(dict(values))
    return out


def pattern(value: Pattern) -> runtime_pb2.Pattern:
    """The Pattern message of a loaded pattern."""
    return runtime_pb2.Pattern(
        pattern_id=value.id,
        description=value.description,
        requires_pack=value.requires_pack,
        input_schema=struct(json_schema(value.inputs)),
        steps=[
            runtime_pb2.PatternStep(
                step_id=s.id,
                capability=s.capability,
                depends_on=s.depends_on,
                when=s.when.source if s.when is not None else "",
                as_name=s.state_key,
                timeout_ms=int(s.timeout * 1000) if s.timeout is not None else 0,
                retry_attempts=s.retry.max_attempts if s.retry is not None else 0,
                on_error=s.on_error,
            )
            for s in value.steps
        ],
        source=value.source,
    )


def problem(value: Problem) -> runtime_pb2.PatternProblem:
    """The PatternProblem message of a refused pattern file."""
    return runtime_pb2.PatternProblem(source=value.source, field=value.field, message=value.message)


@dataclass(frozen=True)
class Pinned:
    """What a run is pinned to, echoed in its Accepted and Completed events."""

    execution_id: str
    pricing_pack_id: str
    ledger_commit_hash: str
    trace_id: str
    asof: str


def _response(**event: Any) -> bytes:
    return runtime_pb2.RunPatternResponse(**event).SerializeToString()


def accepted(pinned: Pinned, sequence: int) -> bytes:
    """The run's first response: it was admitted, and what it is pinned to."""
    return _response(
        accepted=events_pb2.Accepted(
            execution_id=pinned.execution_id,
            pricing_pack_id=pinned.pricing_pack_id,
            ledger_commit_hash=pinned.ledger_commit_hash,
            trace_id=pinned.trace_id,
            asof=pinned.asof,
        ),
        sequence=sequence,
    )


def run_moved(
    *,
    replica: str,
    from_replica: str,
    reused: Sequence[str],
    restarted: Sequence[str],
    moves: int,
    after_sequence: int,
) -> bytes:
    """The marker that opens a moved run's continuation, at `after_sequence + 1`."""
    return _response(
        run_moved=events_pb2.RunMoved(
            replica=replica,
            from_replica=from_replica,
            reused_step_ids=reused,
            restarted_step_ids=restarted,
            moves=moves,
            resumed_after_sequence=after_sequence,
        ),
        sequence=after_sequence + 1,
    )


def run_event(
    event: StepBegan | StepFinished | StepSkipped | RunFinished,
    pinned: Pinned,
    sequence: int,
    release: Release | None = None,
) -> bytes:
    """The response for one of the runner's step or run events (`release`: the rights
    registry's attributions, watermark and export document of a finished run)."""
    if isinstance(event, StepBegan):
        return _response(
            step_started=events_pb2.StepStarted(
                step_id=event.step_id, agent=event.agent, capability=event.capability
            ),
            sequence=sequence,
        )
    if isinstance(event, StepSkipped):
        return _response(
            step_skipped=events_pb2.StepSkipped(
                step_id=event.step_id,
                agent=event.agent,
                capability=event.capability,
                reason=event.reason,
            ),
            sequence=sequence,
        )
    if isinstance(event, StepFinished):
        result = event.result
        recovered = event.recovered
        return _response(
            step_completed=events_pb2.StepCompleted(
                step_id=event.step_id,
                agent=event.agent,
                capability=event.capability,
                duration_ms=event.duration_ms,
                output=struct(result.output),
                usage=usage_proto(result.usage),
                provider=result.provider,
                model=result.model,
                cost_micro_usd=result.cost_micro_usd,
                recovered_reason=recovered.reason if recovered is not None else "",
                recovered_message=recovered.message if recovered is not None else "",
            ),
            sequence=sequence,
        )
    release = release or Release(())
    return _response(
        completed=events_pb2.Completed(
            outputs=struct(event.outputs),
            usage=usage_proto(event.usage),
            cost_micro_usd=event.cost_micro_usd,
            pricing_pack_id=pinned.pricing_pack_id,
            ledger_commit_hash=pinned.ledger_commit_hash,
            attributions=[
                events_pb2.Attribution(source=a.source, text=a.text) for a in release.attributions
            ],
            watermark=release.watermark,
            export_document=release.document,
        ),
        sequence=sequence,
    )
