"""WatchExecution: a run's recorded events after a sequence, then its live ones, then its end.

A run live on this replica is followed in memory (`LiveRun`: every event it sent, in order),
so what was sent before the watch and what comes after it are one list — no gap, no
duplicate at the seam. A finished run, or one running on another replica, is read from the
event log in the database; a running one there is polled until it ends. Either way the
stream ends the way the run ended: cleanly after Completed, with the failed run's own status,
or CANCELLED / ABORTED for a cancelled or interrupted run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from google.rpc import status_pb2

from saga.runtime.v1 import runtime_pb2
from services.common.errors import (
    Aborted,
    Cancelled,
    DataLoss,
    FailedPrecondition,
    Internal,
    SagaError,
    Unavailable,
)
from services.common.status import RemoteError, to_status_proto
from services.runtime.event_log import LiveRun
from services.runtime.executions import ExecutionRecord, ExecutionStatus, ExecutionStore

POLL_SECONDS = 0.25
"""How often a watcher of a run on another replica looks for new events."""


def cancelled_status() -> status_pb2.Status:
    """The status a watcher of a cancelled run ends with."""
    return to_status_proto(_cancelled(), "runtime.saga")


def interrupted_status() -> status_pb2.Status:
    """The status a watcher of an interrupted run ends with."""
    return to_status_proto(_interrupted(), "runtime.saga")


def moving_status() -> status_pb2.Status:
    """The status a watcher on a stopping replica ends with when the run continues on
    another: UNAVAILABLE, so the client watches again after the last sequence it saw."""
    return to_status_proto(
        Unavailable(
            "the replica running this run is stopping; the run continues on another: "
            "watch it again after the last sequence you received",
            reason="EXECUTION_MOVING",
        ),
        "runtime.saga",
    )


def _interrupted() -> Aborted:
    return Aborted(
        "the run was interrupted: the process running it stopped before it finished",
        reason="EXECUTION_INTERRUPTED",
    )


def _cancelled() -> Cancelled:
    return Cancelled("the run was cancelled by its caller", reason="EXECUTION_CANCELLED")


def ending(record: ExecutionRecord) -> SagaError | None:
    """How a watch of a finished run ends: None (cleanly) or the error to end it with."""
    if record.status == ExecutionStatus.SUCCEEDED:
        return None
    if record.status == ExecutionStatus.CANCELLED:
        return _cancelled()
    if record.status == ExecutionStatus.INTERRUPTED:
        return _interrupted()
    if record.error_status is not None:
        return RemoteError(status_pb2.Status.FromString(record.error_status))
    return Internal("the run failed", reason=record.error_reason or "EXECUTION_FAILED")


async def follow(run: LiveRun, after_sequence: int) -> AsyncIterator[bytes]:
    """The events of a run live on this replica after `after_sequence`, until it ends — of
    a run that may move, only the durable ones (see `event_log`)."""
    sent = after_sequence
    while True:
        events = run.events
        ended = run.ended  # as of the bound: the run may end while the events are sent
        # A run that ended successfully has its whole log durable (or gave up waiting).
        movable = run.movable and not (ended and run.final is None)
        limit = run.durable if movable else len(events)
        while sent < limit:
            yield events[sent]
            sent += 1
        if ended:
            break
        if sent < (run.durable if movable else len(events)) or run.ended:
            continue  # more came while these were sent
        await run.changed()
    if run.final is not None:
        raise RemoteError(run.final)


async def replay(
    store: ExecutionStore, record: ExecutionRecord, after_sequence: int
) -> AsyncIterator[bytes]:
    """The recorded events of `record`'s run after `after_sequence`, polling while it runs
    elsewhere, then its end."""
    if record.events_pruned:
        raise FailedPrecondition(
            "the run's events were deleted by retention; GetExecution still has its record",
            reason="EVENT_LOG_PRUNED",
            metadata={"executionId": record.execution_id},
        )
    sent = after_sequence
    last: bytes | None = None
    while True:
        rows = await store.events(record.execution_id, sent)
        for sequence, payload in rows:
            if sequence != sent + 1:
                raise _incomplete(record.execution_id)
            yield payload
            sent, last = sequence, payload
        if rows:
            continue
        current = await store.get(record.execution_id)
        if current is None or current.status != ExecutionStatus.RUNNING:
            # Events written between the last read and the status are read once more.
            if await store.events(record.execution_id, sent, limit=1):
                continue
            break
        await asyncio.sleep(POLL_SECONDS)
    error = ending(current if current is not None else record)
    if error is not None:
        raise error
    # A succeeded run's log ends with Completed; a caller that had it all gets nothing more.
    if (last is None and sent == 0) or (last is not None and not _is_completed(last)):
        raise _incomplete(record.execution_id)


def _is_completed(payload: bytes | None) -> bool:
    if payload is None:
        return False
    return runtime_pb2.RunPatternResponse.FromString(payload).WhichOneof("event") == "completed"


def _incomplete(execution_id: str) -> DataLoss:
    return DataLoss(
        "the run's event log is incomplete",
        reason="EVENT_LOG_INCOMPLETE",
        metadata={"executionId": execution_id},
    )


async def watch(
    store: ExecutionStore,
    live: Mapping[str, LiveRun],
    record: ExecutionRecord,
    after_sequence: int,
) -> AsyncIterator[bytes]:
    """The events of `record`'s run after `after_sequence`, then its end (see the module)."""
    run = live.get(record.execution_id)
    source = (
        follow(run, after_sequence) if run is not None else replay(store, record, after_sequence)
    )
    async for event in source:
        yield event
