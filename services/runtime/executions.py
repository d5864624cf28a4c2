"""Execution records: one row per run, written twice — RUNNING when it starts, its outcome
when it ends — so the stream is never held up by per-event writes.

The start write runs beside the first step rather than before the first event, and the end
write happens before the last event is sent, so a caller that saw Completed finds the record
SUCCEEDED. A run that its process did not finish (a crash, a forced stop) is marked
INTERRUPTED: the record says so. The events themselves are in the event log
(`event_log.py`).

Several replicas may share one database, so each record names the replica running it, and
each replica holds a lease (`lease_seconds`) it renews every third of it. A replica that
starts sweeps the RUNNING runs of its own previous life (its id is stable: host name and
port) and of replicas whose lease ran out; each renewal sweeps again, so the runs of a
replica that died for good are found within the lease and a renewal. A live replica's runs
are never touched. A swept run that is *resumable* — detached, with what it needs to
continue stored with it (its request and request context) and its context not expired, and
moved fewer than `MAX_MOVES` times — is claimed by the sweeping replica, which continues it
(durable runs, `servicer.py`); the others become INTERRUPTED. A claim is an update
conditional on the run's `moves` count, so of two replicas sweeping at once exactly one wins.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

from services.common.database import Database, Row, Tx
from services.common.errors import AlreadyExists
from services.common.lifecycle import InFlight
from services.common.usage import Usage, usage_from_json, usage_json

log = logging.getLogger("saga.runtime.executions")

LEASE_SECONDS = 30.0
"""How long a replica counts as alive after its last renewal, by default
(`runtime.replica_lease_seconds`); it renews every third of it, so two renewals may fail
in a row."""

PRUNE_SECONDS = 600.0
"""How often retention deletes old event logs."""

MAX_MOVES = 3
"""How often a run may move to another replica: a run whose replica keeps dying (it may be
what kills them) is interrupted instead of being passed on for ever."""


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
    error_status: bytes | None = None
    """The serialized google.rpc.Status a failed run's stream ended with."""
    idempotency_key: str = ""
    request_digest: str = ""
    """What the request asked for (see `admission.request_digest`): a retry's is the same."""
    events_pruned: bool = False
    """The run's event log was deleted by retention (the record stays)."""
    resume_request: bytes | None = None
    """A detached run's serialized RunPatternRequest, to continue it elsewhere; None: the run
    cannot move (it is not detached)."""
    context_token: str = ""
    """The request context the run acts with (only stored with `resume_request`)."""
    resume_until_ms: int = 0
    """Until when the run may continue elsewhere (ms since the epoch): its deadline, or its
    context's expiry if earlier."""
    moves: int = 0
    """How often the run moved to another replica."""
    replica_id: str = ""
    """The replica that runs (or ran) it."""

    def resumable(self, now_ms: int) -> bool:
        """Whether the run may continue on another replica at `now_ms`."""
        return (
            self.resume_request is not None
            and self.resume_until_ms > now_ms
            and self.moves < MAX_MOVES
        )


@dataclass(frozen=True)
class ExecutionQuery:
    """Which records ListExecutions wants: one user's (None: everyone's), newest first."""

    user_id: str | None
    status: ExecutionStatus | None = None
    pattern_id: str = ""
    created_after: str = ""
    """ISO timestamps, inclusive lower and exclusive upper bound; empty = unbounded."""
    created_before: str = ""
    after: tuple[str, str] | None = None
    """The (created_at, execution_id) of the last record of the previous page."""


def _record(row: Row) -> ExecutionRecord:
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
        usage=usage_from_json(row["usage"]),
        cost_micro_usd=row["cost_micro_usd"],
        error_reason=row["error_reason"],
        error_status=bytes(row["error_status"]) if row["error_status"] is not None else None,
        idempotency_key=row["idempotency_key"],
        request_digest=row["request_digest"],
        events_pruned=bool(row["events_pruned"]),
        resume_request=(
            bytes(row["resume_request"]) if row["resume_request"] is not None else None
        ),
        context_token=row["context_token"],
        resume_until_ms=int(row["resume_until_ms"]),
        moves=int(row["moves"]),
        replica_id=row["replica_id"],
    )


_ORPHANS = (
    "SELECT * FROM executions WHERE status = $1 AND replica_id NOT IN "
    "(SELECT replica_id FROM replicas WHERE expires_at_ms > $2 AND replica_id <> $3)"
)
"""RUNNING runs of replicas without a live lease ($3: our own previous life, at start)."""


async def clear_session(tx: Tx, session_id: str) -> None:
    """Detach every execution from `session_id` (the session is being deleted: the
    executions stay, without it)."""
    await tx.execute("UPDATE executions SET session_id = '' WHERE session_id = $1", session_id)


class ExecutionStore:
    """Execution records in the runtime's database, written by one replica."""

    def __init__(
        self,
        db: Database,
        replica_id: str,
        clock: Callable[[], float],
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self._db = db
        self._clock = clock
        self.replica_id = replica_id
        self._lease_ms = int(lease_seconds * 1000)
        self._writes = InFlight()
        self._claimed_at_open: list[ExecutionRecord] = []

    @classmethod
    async def open(
        cls,
        db: Database,
        replica_id: str,
        clock: Callable[[], float] = time.time,
        lease_seconds: float = LEASE_SECONDS,
    ) -> ExecutionStore:
        """The store in `db` for the replica `replica_id` (stable across its restarts): runs
        left RUNNING by its previous life, or by replicas whose lease ran out, are swept
        (claimed to continue here when resumable, else INTERRUPTED — the claimed ones are
        handed to `keep_alive`'s `adopt`); then this replica holds its lease. `clock` gives
        seconds since the epoch (every replica's clock is trusted to within a few seconds)."""
        store = cls(db, replica_id, clock, lease_seconds)
        async with db.transaction() as tx:
            # Our previous life no longer runs anything: its runs are orphans like any other.
            store._claimed_at_open = await store._sweep(tx, previous_life=True)
        return store

    async def renew(self) -> list[ExecutionRecord]:
        """Extend this replica's lease and sweep the runs of replicas that are gone; the
        runs this replica claimed (to continue them)."""
        async with self._db.transaction() as tx:
            return await self._sweep(tx)

    async def _sweep(self, tx: Tx, previous_life: bool = False) -> list[ExecutionRecord]:
        now_ms = int(self._clock() * 1000)
        await tx.execute("DELETE FROM replicas WHERE expires_at_ms <= $1", now_ms)
        # Our lease first: a run claimed below is never an orphan of this sweep's replica.
        await tx.execute(
            "INSERT INTO replicas (replica_id, expires_at_ms) VALUES ($1, $2) "
            "ON CONFLICT (replica_id) DO UPDATE SET expires_at_ms = excluded.expires_at_ms",
            self.replica_id,
            now_ms + self._lease_ms,
        )
        orphans = await tx.fetch(
            _ORPHANS, ExecutionStatus.RUNNING, now_ms, self.replica_id if previous_life else ""
        )
        claimed: list[ExecutionRecord] = []
        interrupted = 0
        for row in orphans:
            record = _record(row)
            # Conditional on `moves` as read: another replica sweeping at once has claimed
            # the run (or interrupted it) when it changed, and then this update does nothing.
            if record.resumable(now_ms):
                if await tx.execute(
                    "UPDATE executions SET replica_id = $1, moves = $2 "
                    "WHERE execution_id = $3 AND status = $4 AND moves = $5",
                    self.replica_id,
                    record.moves + 1,
                    record.execution_id,
                    ExecutionStatus.RUNNING,
                    record.moves,
                ):
                    # Still naming the replica it moves from (the marker event says so).
                    claimed.append(dataclasses.replace(record, moves=record.moves + 1))
                    log.warning(
                        "run claimed from a stopped replica",
                        extra={
                            "execution_id": record.execution_id,
                            "from_replica": record.replica_id,
                        },
                    )
                continue
            interrupted += await tx.execute(
                "UPDATE executions SET status = $1, completed_at = $2, context_token = '' "
                "WHERE execution_id = $3 AND status = $4 AND moves = $5",
                ExecutionStatus.INTERRUPTED,
                _now(),
                record.execution_id,
                ExecutionStatus.RUNNING,
                record.moves,
            )
        if interrupted:
            log.warning("runs interrupted by a stop", extra={"count": interrupted})
        return claimed

    async def keep_alive(
        self,
        adopt: Callable[[list[ExecutionRecord]], None],
        running: Callable[[], Collection[str]] = tuple,
        lose: Callable[[list[str]], None] = lambda lost: None,
    ) -> None:
        """Hand the runs claimed at open to `adopt`, then renew the lease every third of it
        until cancelled, handing it the runs each sweep claims; a failed renewal is logged
        and retried at the next tick (the lease outlasts two misses). When a renewal comes
        after the lease lapsed (the database was out of reach that long), another replica
        may have presumed this one dead and claimed some of the runs it still runs
        (`running`: their execution ids): those are handed to `lose`, to stop them here."""
        claimed, self._claimed_at_open = self._claimed_at_open, []
        if claimed:
            adopt(claimed)
        renewed = self._clock()
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            try:
                claimed = await self.renew()
                lapsed = self._clock() - renewed > self._lease_ms / 1000
                renewed = self._clock()
                lost = await self.taken(running()) if lapsed else []
            except Exception:
                log.exception("execution lease renewal failed", extra={"replica": self.replica_id})
                continue
            if lost:
                log.error(
                    "runs continued by another replica while this one was presumed dead",
                    extra={"replica": self.replica_id, "count": len(lost)},
                )
                lose(lost)
            if claimed:
                adopt(claimed)

    async def taken(self, execution_ids: Collection[str]) -> list[str]:
        """Those of `execution_ids` whose record names another replica (it claimed them)."""
        ids = list(execution_ids)
        taken: list[str] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join(f"${i + 2}" for i in range(len(chunk)))
            rows = await self._db.fetch(
                "SELECT execution_id FROM executions WHERE replica_id <> $1 "  # noqa: S608 (placeholders only)
                f"AND execution_id IN ({marks})",
                self.replica_id,
                *chunk,
            )
            taken += [row["execution_id"] for row in rows]
        return taken

    async def interrupt(self, execution_id: str) -> None:
        """Mark a RUNNING run of this replica INTERRUPTED (a claimed run that cannot
        continue after all)."""
        await self._db.execute(
            "UPDATE executions SET status = $1, completed_at = $2, context_token = '' "
            "WHERE execution_id = $3 AND status = $4 AND replica_id = $5",
            ExecutionStatus.INTERRUPTED,
            _now(),
            execution_id,
            ExecutionStatus.RUNNING,
            self.replica_id,
        )

    async def insert(self, record: ExecutionRecord) -> None:
        """Store a new record; AlreadyExists when the execution id was used before."""
        inserted = await self._db.execute(
            "INSERT INTO executions (execution_id, user_id, pattern_id, session_id, asof, "
            "status, error_reason, created_at, completed_at, usage, cost_micro_usd, "
            "pricing_pack_id, ledger_commit_hash, trace_id, replica_id, idempotency_key, "
            "request_digest, resume_request, context_token, resume_until_ms) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, "
            "$18, $19, $20) ON CONFLICT (execution_id) DO NOTHING",
            record.execution_id,
            record.user_id,
            record.pattern_id,
            record.session_id,
            record.asof,
            record.status,
            record.error_reason,
            record.created_at,
            record.completed_at,
            usage_json(record.usage),
            record.cost_micro_usd,
            record.pricing_pack_id,
            record.ledger_commit_hash,
            record.trace_id,
            self.replica_id,
            record.idempotency_key,
            record.request_digest,
            record.resume_request,
            record.context_token,
            record.resume_until_ms,
        )
        if not inserted:
            raise AlreadyExists(
                "this execution id was already used",
                reason="EXECUTION_EXISTS",
                metadata={"executionId": record.execution_id},
            )

    async def finish(
        self,
        execution_id: str,
        status: ExecutionStatus,
        usage: Usage = Usage(),  # noqa: B008 (frozen, immutable default)
        cost_micro_usd: int = 0,
        error_reason: str = "",
        error_status: bytes | None = None,
    ) -> None:
        """Record how a RUNNING run ended."""
        await self._db.execute(
            # The context is erased with the run's end: nothing can use it any more.
            "UPDATE executions SET status = $1, completed_at = $2, context_token = '', "
            "usage = $3, cost_micro_usd = $4, error_reason = $5, error_status = $6 "
            "WHERE execution_id = $7 AND status = $8",
            status,
            _now(),
            usage_json(usage),
            cost_micro_usd,
            error_reason,
            error_status,
            execution_id,
            ExecutionStatus.RUNNING,
        )

    async def get(self, execution_id: str) -> ExecutionRecord | None:
        """The record of `execution_id`, if any."""
        row = await self._db.fetchrow(
            "SELECT * FROM executions WHERE execution_id = $1", execution_id
        )
        return _record(row) if row is not None else None

    async def search(self, query: ExecutionQuery, limit: int) -> list[ExecutionRecord]:
        """At most `limit` records matching `query`, newest first."""
        where: list[str] = []
        args: list[object] = []

        def arg(value: object) -> str:
            args.append(value)
            return f"${len(args)}"

        if query.user_id is not None:
            where.append(f"user_id = {arg(query.user_id)}")
        if query.status is not None:
            where.append(f"status = {arg(query.status)}")
        if query.pattern_id:
            where.append(f"pattern_id = {arg(query.pattern_id)}")
        if query.created_after:
            where.append(f"created_at >= {arg(query.created_after)}")
        if query.created_before:
            where.append(f"created_at < {arg(query.created_before)}")
        if query.after is not None:
            created, execution_id = query.after
            c, e = arg(created), arg(execution_id)
            where.append(f"(created_at < {c} OR (created_at = {c} AND execution_id < {e}))")
        sql = "SELECT * FROM executions"  # the conditions hold placeholders only
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY created_at DESC, execution_id DESC LIMIT {arg(limit)}"
        return [_record(row) for row in await self._db.fetch(sql, *args)]

    async def claim(self, record: ExecutionRecord, window_seconds: float) -> ExecutionRecord | None:
        """Insert the record of a run with an idempotency key, unless the user's key already
        names a run younger than `window_seconds`: then that run's record (and nothing is
        inserted). The key of an older run, or of one cancelled or interrupted, is released
        first, so the key starts a new run."""
        cutoff = (
            datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=window_seconds)
        ).isoformat()
        async with self._db.transaction() as tx:
            # A key is released when its window passed, or when its run was cancelled or
            # interrupted (it will not complete: the retry is a new run).
            await tx.execute(
                "UPDATE executions SET idempotency_key = '' WHERE user_id = $1 "
                "AND idempotency_key = $2 AND (created_at < $3 OR status IN ($4, $5))",
                record.user_id,
                record.idempotency_key,
                cutoff,
                ExecutionStatus.CANCELLED,
                ExecutionStatus.INTERRUPTED,
            )
            existing = await tx.fetchrow(
                "SELECT * FROM executions WHERE user_id = $1 AND idempotency_key = $2",
                record.user_id,
                record.idempotency_key,
            )
            if existing is not None:
                return _record(existing)
        try:
            await self.insert(record)
        except Exception:
            # Another replica (or call) claimed the key between the read and the insert.
            winner = await self._db.fetchrow(
                "SELECT * FROM executions WHERE user_id = $1 AND idempotency_key = $2",
                record.user_id,
                record.idempotency_key,
            )
            if winner is None:
                raise
            return _record(winner)
        return None

    async def prune_events(self, max_age_seconds: float, max_runs: int, batch: int = 500) -> int:
        """Delete the event logs of finished runs older than `max_age_seconds`, and of the
        oldest finished runs beyond the newest `max_runs` with logs; their records stay,
        marked `events_pruned`. At most `batch` runs per call; how many were pruned."""
        cutoff = (
            datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=max_age_seconds)
        ).isoformat()
        async with self._db.transaction() as tx:
            rows = await tx.fetch(
                "SELECT execution_id FROM executions WHERE status <> $1 AND NOT events_pruned "
                "AND (completed_at < $2 OR execution_id NOT IN (SELECT execution_id FROM "
                "executions WHERE NOT events_pruned ORDER BY created_at DESC LIMIT $3)) "
                "ORDER BY created_at LIMIT $4",
                ExecutionStatus.RUNNING,
                cutoff,
                max_runs,
                batch,
            )
            for row in rows:
                await tx.execute(
                    "DELETE FROM execution_events WHERE execution_id = $1", row["execution_id"]
                )
                await tx.execute(
                    "UPDATE executions SET events_pruned = TRUE WHERE execution_id = $1",
                    row["execution_id"],
                )
        return len(rows)

    async def keep_pruning(self, max_age_seconds: float, max_runs: int) -> None:
        """Prune event logs every `PRUNE_SECONDS` until cancelled (a batch at a time, so a
        large backlog never holds one long transaction)."""
        while True:
            try:
                pruned = await self.prune_events(max_age_seconds, max_runs)
                while pruned:
                    pruned = await self.prune_events(max_age_seconds, max_runs)
            except Exception:
                log.exception("event log pruning failed")
            await asyncio.sleep(PRUNE_SECONDS)

    async def events(
        self, execution_id: str, after_sequence: int, limit: int | None = 500
    ) -> list[tuple[int, bytes]]:
        """The logged events of `execution_id` after `after_sequence` (sequence, serialized
        response), oldest first, at most `limit` (the log is written by `event_log`)."""
        rows = await self._db.fetch(
            "SELECT sequence, payload FROM execution_events WHERE execution_id = $1 "
            "AND sequence > $2 ORDER BY sequence LIMIT $3",
            execution_id,
            after_sequence,
            limit if limit is not None else 2**62,
        )
        return [(int(r["sequence"]), bytes(r["payload"])) for r in rows]

    def begin(self, record: ExecutionRecord, *, inserted: bool = False) -> Recording:
        """Start recording a run: the RUNNING row is written in the background (unless it is
        `inserted` already, by `claim`)."""
        return Recording(self, record, inserted)

    async def drain(self) -> None:
        """Wait for writes still in flight (on shutdown, before the database closes)."""
        await self._writes.wait()

    async def close(self) -> None:
        """On a clean stop: wait for writes in flight, then give up the lease, so a run still
        RUNNING (the process is stopping without finishing it) is interrupted at once — or,
        when it is resumable, left for the next replica that sweeps (another one, or this
        one's next life), which continues it."""
        await self.drain()
        now_ms = int(self._clock() * 1000)
        async with self._db.transaction() as tx:
            await tx.execute("DELETE FROM replicas WHERE replica_id = $1", self.replica_id)
            await tx.execute(
                "UPDATE executions SET status = $1, completed_at = $2, context_token = '' "
                "WHERE status = $3 AND replica_id = $4 AND (resume_request IS NULL "
                "OR resume_until_ms <= $5 OR moves >= $6)",
                ExecutionStatus.INTERRUPTED,
                _now(),
                ExecutionStatus.RUNNING,
                self.replica_id,
                now_ms,
                MAX_MOVES,
            )


async def _done() -> None:
    return None


class Recording:
    """The record of one run in progress; settle it exactly once."""

    def __init__(self, store: ExecutionStore, record: ExecutionRecord, inserted: bool) -> None:
        self._store = store
        self._record = record
        self._inserted = store._writes.start(_done() if inserted else store.insert(record))

    async def succeeded(self, usage: Usage, cost_micro_usd: int) -> None:
        """Mark the run SUCCEEDED; AlreadyExists if its id turned out to be taken."""
        await self._inserted
        await self._store.finish(
            self._record.execution_id, ExecutionStatus.SUCCEEDED, usage, cost_micro_usd
        )

    async def failed(
        self,
        reason: str,
        error_status: bytes | None = None,
        status: ExecutionStatus = ExecutionStatus.FAILED,
    ) -> None:
        """Mark the run FAILED (or CANCELLED) with the ErrorInfo reason and the status that
        ended it. A run whose record could not be created (a reused id) leaves the existing
        record alone."""
        try:
            await asyncio.shield(self._inserted)
        except Exception:
            return
        await self._store.finish(
            self._record.execution_id, status, error_reason=reason, error_status=error_status
        )

    def abandoned(
        self, reason: str, error_status: bytes, first: Callable[[], Awaitable[object]]
    ) -> None:
        """The caller went away: mark the run CANCELLED in the background (the handler is
        being cancelled and cannot wait for the write), after `first` (the run's events made
        durable, so a watcher that sees CANCELLED finds every event the run sent)."""

        async def settle() -> None:
            await first()
            await self.failed(reason, error_status, ExecutionStatus.CANCELLED)

        self._store._writes.start(settle())
