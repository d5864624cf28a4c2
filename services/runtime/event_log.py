"""The event log of executions: every event a run's caller was sent, with its sequence, so
WatchExecution can replay it.

A live run keeps its events in memory (`LiveRun`, the serialized responses exactly as they
were sent, event `i` at index `i - 1`): a watcher on the same replica follows it there, so
the seam between what was replayed and what is live has no gap and no duplicate. The
database copy is written in batches by one task per replica (`EventWriter`), never by the
stream: the per-token cost is two list appends. A run's end waits for its events to be
durable (`EventWriter.flush`) before the final record is written, so a finished run's log
is complete; watchers on other replicas read the database.

A detached run may move to another replica when its own dies (durable runs): what it sent
but had not yet written would be lost with the replica, and a client that saw it could not
resume exactly. So every stream of such a run (`LiveRun.movable`) is sent only what is
durable (`LiveRun.durable`, advanced by the writer after each batch): at most a batch
window later than the live events, and never an event the log could lose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from google.rpc import status_pb2

from services.common.backoff import Backoff
from services.common.database import Database

log = logging.getLogger("saga.runtime.event_log")

FLUSH_INTERVAL_SECONDS = 0.05
"""How long the writer gathers events before it writes them (the batch's window); a run
that ends (`flush`) cuts the window short."""

MAX_BATCH_ROWS = 500
"""Rows per INSERT statement (3 parameters each; SQLite allows 32,766)."""

FLUSH_WAIT_SECONDS = 10.0
"""How long a run's end waits for its events to be durable before it goes on (and logs it)."""

_RETRY = Backoff(initial=0.1, maximum=5.0, jitter=0.2)


class LiveRun:
    """The events of one run in progress on this replica, and its end."""

    __slots__ = (
        "_changed",
        "_writer",
        "_written",
        "durable",
        "ended",
        "events",
        "execution_id",
        "final",
        "movable",
    )

    def __init__(
        self,
        execution_id: str,
        writer: EventWriter,
        movable: bool = False,
        recorded: Sequence[bytes] = (),
    ) -> None:
        self.execution_id = execution_id
        self._writer = writer
        self.events: list[bytes] = list(recorded)
        self.ended = False
        self.final: status_pb2.Status | None = None
        """How the run's stream ended: None for success, else its status."""
        self.movable = movable
        """The run may move to another replica: its streams see only durable events."""
        self._written = len(self.events)
        self.durable = len(self.events)
        """How many of `events` are written (the first `durable`)."""
        self._changed: asyncio.Event | None = None

    def append(self, event: bytes) -> None:
        """Record the next event (the hot path: one per token)."""
        self.events.append(event)
        self._writer.track(self)
        if not self.movable:  # followers of a movable run wait for it to be durable
            self._wake()

    def end(self, final: status_pb2.Status | None) -> None:
        """The run is over: `final` is the status its stream ended with (None: success)."""
        self.final = final
        self.ended = True
        self._wake()

    def written(self, count: int) -> None:
        """The first `count` events are durable."""
        if count > self.durable:
            self.durable = count
            if self.movable:
                self._wake()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def changed(self) -> None:
        """Wait for the next event or the end."""
        if self._changed is None:
            self._changed = asyncio.Event()
        await self._changed.wait()

    def unwritten(self) -> tuple[int, Sequence[bytes]]:
        """(the sequence of the first event not yet written, the events from it on), taken."""
        start = self._written
        rows = self.events[start:]
        self._written += len(rows)
        return start + 1, rows


class EventWriter:
    """Writes the events of this replica's live runs to `execution_events`, in batches."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._dirty: dict[str, LiveRun] = {}
        self._pending: list[tuple[str, int, bytes]] = []
        self._marks: list[tuple[LiveRun, int]] = []
        """(run, how many of its events are durable once `_pending` is written)."""
        self._forgotten: set[str] = set()
        """Runs another replica continues: their events are not written from here."""
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._appended = 0
        self._written = 0
        self._progress = asyncio.Condition()

    def start(
        self, execution_id: str, movable: bool = False, recorded: Sequence[bytes] = ()
    ) -> LiveRun:
        """The log of a run that starts now (`recorded`: the events a moved run's log holds
        already, in order from sequence 1)."""
        return LiveRun(execution_id, self, movable, recorded)

    def track(self, run: LiveRun) -> None:
        """`run` has events to write (called per event; cheap when it is already tracked)."""
        self._appended += 1
        if run.execution_id not in self._dirty:
            self._dirty[run.execution_id] = run
            self._wake.set()

    async def flush(self) -> bool:
        """Wait until every event tracked before the call is written (at most
        FLUSH_WAIT_SECONDS); whether it was."""
        target = self._appended
        if self._written >= target:
            return True
        self._wake.set()
        self._urgent.set()
        try:
            async with asyncio.timeout(FLUSH_WAIT_SECONDS), self._progress:
                await self._progress.wait_for(lambda: self._written >= target)
            return True
        except TimeoutError:
            log.error("event log writes are behind; a run ends before its events are durable")
            return False

    async def run(self) -> None:
        """The writer task: gather for FLUSH_INTERVAL_SECONDS, write, repeat; a failed write
        is logged and retried with backoff (the events stay in memory meanwhile)."""
        failures = 0
        while True:
            if not self._pending:
                await self._wake.wait()
                self._wake.clear()
                if not self._urgent.is_set():  # gather a batch, unless a run is ending
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._urgent.wait(), FLUSH_INTERVAL_SECONDS)
                self._urgent.clear()
                self._pending = self._take()
            self._drop_forgotten()
            try:
                await self._write(self._pending)
            except Exception:
                failures += 1
                log.exception("event log write failed", extra={"rows": len(self._pending)})
                await asyncio.sleep(_RETRY.delay(failures))
                continue
            failures = 0
            self._durable()
            async with self._progress:
                self._written += len(self._pending)
                self._progress.notify_all()
            self._pending = []

    async def close(self) -> None:
        """On stop, after the writer task ended: write what is left (rows the task had taken
        are written again; duplicates are ignored)."""
        await self._write([*self._pending, *self._take()])
        self._durable()
        self._pending = []

    def _durable(self) -> None:
        marks, self._marks = self._marks, []
        for run, count in marks:
            run.written(count)

    async def _write(self, rows: Sequence[tuple[str, int, bytes]]) -> None:
        for start in range(0, len(rows), MAX_BATCH_ROWS):
            await self._insert(rows[start : start + MAX_BATCH_ROWS])

    def forget(self, execution_id: str) -> None:
        """Drop the unwritten events of a run that another replica continues (they would
        take sequences that are its now); they count as written for `flush`."""
        self._forgotten.add(execution_id)
        run = self._dirty.pop(execution_id, None)
        if run is not None:
            self._written += len(run.unwritten()[1])

    def _drop_forgotten(self) -> None:
        if not self._forgotten:
            return
        kept = [row for row in self._pending if row[0] not in self._forgotten]
        self._written += len(self._pending) - len(kept)
        self._pending = kept

    def _take(self) -> list[tuple[str, int, bytes]]:
        rows: list[tuple[str, int, bytes]] = []
        runs, self._dirty = self._dirty, {}
        for run in runs.values():
            first, events = run.unwritten()
            rows.extend((run.execution_id, first + i, e) for i, e in enumerate(events))
            self._marks.append((run, first + len(events) - 1))
        return rows

    async def _insert(self, rows: Sequence[tuple[str, int, bytes]]) -> None:
        values = ", ".join(f"(${3 * i + 1}, ${3 * i + 2}, ${3 * i + 3})" for i in range(len(rows)))
        args = [value for row in rows for value in row]
        sql = f"INSERT INTO execution_events (execution_id, sequence, payload) VALUES {values}"  # noqa: S608 (placeholders only)
        await self._db.execute(sql + " ON CONFLICT (execution_id, sequence) DO NOTHING", *args)
