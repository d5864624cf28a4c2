"""Execution records: one row per run, written twice — RUNNING when it starts, its outcome
when it ends — so the stream is never held up by per-event writes.

The start write runs beside the first step rather than before the first event, and the end
write happens before the last event is sent, so a caller that saw Completed finds the record
SUCCEEDED. A run that the process did not finish (a crash, a forced stop) is marked
INTERRUPTED when the store opens next: the record says so. (The event log for
WatchExecution comes with that RPC.)
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import json
import logging
import sqlite3
from dataclasses import asdict, dataclass, field

from services.common.errors import AlreadyExists
from services.common.storage import Database
from services.runtime.usage import Usage

log = logging.getLogger("saga.runtime.executions")


class ExecutionStatus(enum.StrEnum):
    """Lifecycle of a run (names as in saga.execution.v1.ExecutionStatus)."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    INTERRUPTED = "INTERRUPTED"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


@dataclass(frozen=True)
class ExecutionRecord:
    """The persisted record of one run."""

    execution_id: str
    user_id: str
    pattern_id: str
    session_id: str
    asof: str
    pricing_pack_id: str
    ledger_commit_hash: str
    trace_id: str
    status: ExecutionStatus = ExecutionStatus.RUNNING
    created_at: str = field(default_factory=_now)
    completed_at: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost_micro_usd: int = 0
    error_reason: str = ""


def _record(row: sqlite3.Row) -> ExecutionRecord:
    return ExecutionRecord(
        execution_id=row["execution_id"],
        user_id=row["user_id"],
        pattern_id=row["pattern_id"],
        session_id=row["session_id"],
        asof=row["asof"],
        pricing_pack_id=row["pricing_pack_id"],
        ledger_commit_hash=row["ledger_commit_hash"],
        trace_id=row["trace_id"],
        status=ExecutionStatus(row["status"]),
        created_at=row["created_at"],
        completed_at=row["completed_at"],
        usage=Usage(**json.loads(row["usage"])),
        cost_micro_usd=row["cost_micro_usd"],
        error_reason=row["error_reason"],
    )


class ExecutionStore:
    """Execution records in the runtime's database."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(cls, db: Database) -> ExecutionStore:
        """The store in `db`; runs left RUNNING by a previous process become INTERRUPTED."""
        interrupted = await db.execute(
            "UPDATE executions SET status = ?, completed_at = ? WHERE status = ?",
            (ExecutionStatus.INTERRUPTED, _now(), ExecutionStatus.RUNNING),
        )
        if interrupted:
            log.warning("runs interrupted by the last stop", extra={"count": interrupted})
        return cls(db)

    async def insert(self, record: ExecutionRecord) -> None:
        """Store a new record; AlreadyExists when the execution id was used before."""

        def work(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO executions (execution_id, user_id, pattern_id, session_id, asof, "
                "status, error_reason, created_at, completed_at, usage, cost_micro_usd, "
                "pricing_pack_id, ledger_commit_hash, trace_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.execution_id,
                    record.user_id,
                    record.pattern_id,
                    record.session_id,
                    record.asof,
                    record.status,
                    record.error_reason,
                    record.created_at,
                    record.completed_at,
                    json.dumps(asdict(record.usage)),
                    record.cost_micro_usd,
                    record.pricing_pack_id,
                    record.ledger_commit_hash,
                    record.trace_id,
                ),
            )

        try:
            await self._db.run(work)
        except sqlite3.IntegrityError:
            raise AlreadyExists(
                "this execution id was already used",
                reason="EXECUTION_EXISTS",
                metadata={"executionId": record.execution_id},
            ) from None

    async def finish(
        self,
        execution_id: str,
        status: ExecutionStatus,
        usage: Usage = Usage(),  # noqa: B008 (frozen, immutable default)
        cost_micro_usd: int = 0,
        error_reason: str = "",
    ) -> None:
        """Record how a RUNNING run ended."""
        await self._db.execute(
            "UPDATE executions SET status = ?, completed_at = ?, usage = ?, cost_micro_usd = ?, "
            "error_reason = ? WHERE execution_id = ? AND status = ?",
            (
                status,
                _now(),
                json.dumps(asdict(usage)),
                cost_micro_usd,
                error_reason,
                execution_id,
                ExecutionStatus.RUNNING,
            ),
        )

    async def get(self, execution_id: str) -> ExecutionRecord | None:
        """The record of `execution_id`, if any."""
        row = await self._db.fetchone(
            "SELECT * FROM executions WHERE execution_id = ?", (execution_id,)
        )
        return _record(row) if row is not None else None

    def begin(self, record: ExecutionRecord) -> Recording:
        """Start recording a run: the RUNNING row is written in the background."""
        return Recording(self, record)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for writes still in flight (on shutdown, before the database closes)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


class Recording:
    """The record of one run in progress; settle it exactly once."""

    def __init__(self, store: ExecutionStore, record: ExecutionRecord) -> None:
        self._store = store
        self._record = record
        self._inserted: asyncio.Task[None] = asyncio.ensure_future(store.insert(record))
        store._track(self._inserted)

    async def succeeded(self, usage: Usage, cost_micro_usd: int) -> None:
        """Mark the run SUCCEEDED; AlreadyExists if its id turned out to be taken."""
        await self._inserted
        await self._store.finish(
            self._record.execution_id, ExecutionStatus.SUCCEEDED, usage, cost_micro_usd
        )

    async def failed(self, reason: str, status: ExecutionStatus = ExecutionStatus.FAILED) -> None:
        """Mark the run FAILED (or CANCELLED) with the ErrorInfo reason that ended it. A run
        whose record could not be created (a reused id) leaves the existing record alone."""
        try:
            await asyncio.shield(self._inserted)
        except Exception:
            return
        await self._store.finish(self._record.execution_id, status, error_reason=reason)

    def abandoned(self, reason: str) -> None:
        """The caller went away: mark the run CANCELLED in the background (the handler is
        being cancelled and cannot wait for the write)."""
        task = asyncio.ensure_future(self.failed(reason, ExecutionStatus.CANCELLED))
        self._store._track(task)
