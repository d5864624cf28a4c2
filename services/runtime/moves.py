"""Durable runs: what a run that moved to this replica takes from its event log.

The log holds every event the run's streams were sent (only durable events are ever sent for
a run that may move, see `event_log`). A step with a recorded StepCompleted or StepSkipped
ended: its recorded output, usage and cost are reused, never run or billed again. A step with
a StepStarted and no end was cut mid-way: it starts again from the beginning. A log that ends
with Completed belongs to a run that finished before its record was settled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf import json_format

from saga.execution.v1 import events_pb2
from saga.runtime.v1 import runtime_pb2
from services.common.usage_messages import usage_from_proto
from services.runtime.agents.step import StepResult
from services.runtime.runner import Recorded, StepFinished, StepSkipped


@dataclass(frozen=True)
class History:
    """What a moved run's log says about its steps."""

    last_sequence: int
    reuse: dict[str, Recorded]
    """The steps that ended, by id."""
    restarted: tuple[str, ...]
    """The steps that started and did not end (they run again), in the order they started."""
    completed: events_pb2.Completed | None
    """The run's Completed, when its log already has it."""


class LogIncomplete(Exception):
    """The log has a gap: the run cannot be continued from it."""


def history(events: Sequence[tuple[int, bytes]]) -> History:
    """The history of a run from its logged (sequence, payload) rows, oldest first;
    LogIncomplete unless the sequences are 1, 2, 3 …"""
    started: dict[str, None] = {}
    reuse: dict[str, Recorded] = {}
    completed = None
    for expected, (sequence, payload) in enumerate(events, start=1):
        if sequence != expected:
            raise LogIncomplete(f"sequence {sequence} where {expected} was expected")
        event = runtime_pb2.RunPatternResponse.FromString(payload)
        kind = event.WhichOneof("event")
        if kind == "step_started":
            started[event.step_started.step_id] = None
        elif kind == "step_completed":
            done = event.step_completed
            reuse[done.step_id] = StepFinished(
                done.step_id,
                done.agent,
                done.capability,
                done.duration_ms,
                StepResult(
                    output=json_format.MessageToDict(done.output),
                    usage=usage_from_proto(done.usage),
                    provider=done.provider,
                    model=done.model,
                    cost_micro_usd=done.cost_micro_usd,
                ),
            )
        elif kind == "step_skipped":
            skipped = event.step_skipped
            reuse[skipped.step_id] = StepSkipped(
                skipped.step_id, skipped.agent, skipped.capability, skipped.reason
            )
        elif kind == "completed":
            completed = event.completed
    return History(
        last_sequence=len(events),
        reuse=reuse,
        restarted=tuple(s for s in started if s not in reuse),
        completed=completed,
    )
