"""The durable outbox: every attempt's outcome is stored locally before the caller sees the
call's Final event, and shipped to the optimizer's `RecordOutcomes` in the background.

Writing. `add` queues an outcome and returns a future that resolves once it is committed.
One writer task commits whatever has queued in one transaction (group commit: under load,
many calls share one disk sync), so the servicer awaits the futures of a call before it
sends Final — a crash after that loses nothing — without one sync per attempt. The store is
the router's own database (`<data_dir>/router.db`, or its PostgreSQL schema), table
`outbox`, keyed by the outcome's idempotent id.

Shipping. A shipper task, woken by every commit, reads the oldest rows (at most
`batch_size`), sends them, and deletes them only once the optimizer acknowledged them. When
the optimizer is down or answers an error, the rows stay and the shipper tries again after
an exponential, jittered pause capped at `max_backoff`; a restarted router ships what it
left. A row may therefore be sent more than once (acknowledged, then the delete lost), or by
two replicas sharing a PostgreSQL schema — never lost; the optimizer counts each outcome id
once, so nothing is doubled either.

Traces. Each row keeps the W3C `traceparent` of the Reason call that produced it. Rows are
shipped grouped by it: while a round holds at most `traced_groups` calls' outcomes (the
normal case: the shipper keeps up), each group is one RecordOutcomes call sent under its own
trace context, so the optimizer's span joins the run's trace. A larger round (a backlog, after
the optimizer was down) goes as one untraced call: catching up quickly matters more then
than trace links to runs that ended long ago.

Running and stopping. `run_in(lifecycle)` spawns the writer and the shipper as supervised
tasks and registers `flush`, which waits for what is queued to be committed, as shutdown
work that runs before they are cancelled; outcomes still queued when the writer is cancelled
fail their futures. Unshipped rows stay stored for the next start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from opentelemetry import context as otel_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from saga.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
from services.common.backoff import Backoff
from services.common.database import Database
from services.common.lifecycle import Lifecycle, Phase

log = logging.getLogger("saga.router.outbox")

SEND_TIMEOUT_SECONDS = 5.0
INITIAL_BACKOFF_SECONDS = 0.2
MAX_WRITE_BATCH = 500  # rows per commit, to bound a statement's size
_propagator = TraceContextTextMapPropagator()
T = TypeVar("T")


def current_traceparent() -> str:
    """The W3C traceparent of the current span ("" outside a trace)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent", "")


async def _shielded(statement: Coroutine[Any, Any, T]) -> T:
    """Run a database statement to its end even if the caller is cancelled (at shutdown):
    outcomes whose write has begun are kept, not rolled back with the cancelled task."""
    return await asyncio.shield(statement)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


@dataclass(frozen=True)
class _Row:
    outcome_id: str
    payload: bytes
    traceparent: str


class Outbox:
    """Stores outcomes durably and ships them to the optimizer (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        channel: grpc.aio.Channel,
        *,
        batch_size: int = 200,
        max_backoff: float = 10.0,
        traced_groups: int = 8,
    ) -> None:
        self._db = db
        self._stub = optimizer_pb2_grpc.OptimizerServiceStub(channel)
        self._batch_size = batch_size
        self._max_backoff = max_backoff
        self._traced_groups = traced_groups
        self._queue: list[tuple[optimizer_pb2.Outcome, str, asyncio.Future[None]]] = []
        self._queued = asyncio.Event()
        self._committed = asyncio.Event()
        self._unstored: set[asyncio.Future[None]] = set()
        self.shipped = 0
        """Outcomes the optimizer acknowledged since start."""

    def add(self, outcome: optimizer_pb2.Outcome, traceparent: str) -> asyncio.Future[None]:
        """Queue `outcome` for the store; the future resolves once it is committed (or
        fails with the storage error). Never blocks, so it may be called while a call is
        being cancelled."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A cancelled call never awaits its futures: mark their errors seen (they are logged).
        future.add_done_callback(_retrieve)
        self._unstored.add(future)
        future.add_done_callback(self._unstored.discard)
        self._queue.append((outcome, traceparent, future))
        self._queued.set()
        return future

    async def pending(self) -> int:
        """Rows stored and not yet acknowledged by the optimizer."""
        return int(await _shielded(self._db.fetchval("SELECT COUNT(*) FROM outbox")) or 0)

    def run_in(self, lifecycle: Lifecycle) -> None:
        """Run the writer and the shipper in `lifecycle`; at shutdown, flush first."""
        lifecycle.spawn("outbox-writer", self.write_forever)
        lifecycle.spawn("outbox-shipper", self.ship_forever)
        lifecycle.on_stop(self.flush, Phase.FINISH)

    async def flush(self, grace: float = 5.0) -> None:
        """Wait (at most `grace` seconds) until what is queued has been committed."""
        if self._unstored:
            await asyncio.wait(set(self._unstored), timeout=grace)

    # ------------------------------------------------------------------ writing

    async def write_forever(self) -> None:
        """Commit what is queued, batch by batch, until cancelled; then fail the futures of
        what is left."""
        try:
            await self._write()
        except asyncio.CancelledError:
            for _, _, future in self._queue:
                if not future.done():
                    future.set_exception(RuntimeError("the router stopped before storing it"))
            raise

    async def _write(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._queue:
                batch = self._queue[:MAX_WRITE_BATCH]
                del self._queue[:MAX_WRITE_BATCH]
                try:
                    await self._store(batch)
                except Exception as error:
                    log.exception("outcomes not stored", extra={"count": len(batch)})
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for _, _, future in batch:
                    if not future.done():
                        future.set_result(None)
                self._committed.set()

    async def _store(
        self, batch: Sequence[tuple[optimizer_pb2.Outcome, str, asyncio.Future[None]]]
    ) -> None:
        now = time.time()
        values = []
        args: list[object] = []
        for i, (outcome, traceparent, _) in enumerate(batch):
            base = 4 * i
            values.append(f"(${base + 1}, ${base + 2}, ${base + 3}, ${base + 4})")
            args += [outcome.outcome_id, outcome.SerializeToString(), traceparent, now + i * 1e-6]
        # Placeholders only: the values travel as parameters.
        sql = (
            "INSERT INTO outbox (outcome_id, payload, traceparent, created_at) VALUES "  # noqa: S608
            + ", ".join(values)
            + " ON CONFLICT (outcome_id) DO NOTHING"
        )
        await _shielded(self._db.execute(sql, *args))

    # ------------------------------------------------------------------ shipping

    async def ship_forever(self) -> None:
        """Ship the oldest rows whenever there are some, until cancelled."""
        failures = 0
        while True:
            try:
                rows = await self._oldest()
                if not rows:
                    self._committed.clear()
                    # Re-check: a commit may have landed between the read and the clear.
                    if not await self._oldest():
                        await self._committed.wait()
                    continue
                await self._ship(rows)
                failures = 0
            except grpc.aio.AioRpcError as error:
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(
                    level,
                    "outcomes not shipped; retrying",
                    extra={"code": error.code().name, "failures": failures},
                )
                await asyncio.sleep(self._backoff(failures))
            except Exception:
                failures += 1
                log.exception("outbox shipping failed; retrying", extra={"failures": failures})
                await asyncio.sleep(self._backoff(failures))

    def _backoff(self, failures: int) -> float:
        return Backoff(INITIAL_BACKOFF_SECONDS, self._max_backoff).delay(failures)

    async def _oldest(self) -> list[_Row]:
        rows = await _shielded(
            self._db.fetch(
                "SELECT outcome_id, payload, traceparent FROM outbox ORDER BY created_at LIMIT $1",
                self._batch_size,
            )
        )
        return [_Row(r["outcome_id"], bytes(r["payload"]), r["traceparent"]) for r in rows]

    async def _ship(self, rows: list[_Row]) -> None:
        groups: dict[str, list[_Row]] = {}
        for row in rows:
            groups.setdefault(row.traceparent, []).append(row)
        if len(groups) <= self._traced_groups:
            results = await asyncio.gather(
                *(self._send(group, tp) for tp, group in groups.items()), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        else:
            await self._send(rows, "")

    async def _send(self, rows: list[_Row], traceparent: str) -> None:
        """One RecordOutcomes call for `rows` under `traceparent`; delete them once
        acknowledged."""
        request = optimizer_pb2.RecordOutcomesRequest(
            outcomes=[optimizer_pb2.Outcome.FromString(r.payload) for r in rows]
        )
        # The peer channel injects the current context: make it the row's.
        token = otel_context.attach(
            _propagator.extract({"traceparent": traceparent})
            if traceparent
            else otel_context.Context()
        )
        try:
            await self._stub.RecordOutcomes(iter([request]), timeout=SEND_TIMEOUT_SECONDS)
        finally:
            otel_context.detach(token)
        ids = [r.outcome_id for r in rows]
        placeholders = ", ".join(f"${i + 1}" for i in range(len(ids)))
        await _shielded(
            self._db.execute(
                f"DELETE FROM outbox WHERE outcome_id IN ({placeholders})",  # noqa: S608
                *ids,
            )
        )
        self.shipped += len(ids)
