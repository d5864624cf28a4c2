"""The durable outbox: every attempt's outcome is stored locally before the caller sees the
call's Final event, and shipped to the optimizer's `RecordOutcomes` in the background.

Writing. `add` queues an outcome and returns a future that resolves once it is committed.
One writer task commits whatever has queued in one transaction (group commit: under load,
many calls share one disk sync), so the servicer awaits the futures of a call before it
sends Final — a crash after that loses nothing — without one sync per attempt. The
transaction is one `Database.batch` (on SQLite a single trip to the worker thread): an
attempt's hold-before-send gate waits for it. The store is
the router's own database (`<data_dir>/router.db`, or its PostgreSQL schema), table
`outbox`, keyed by the outcome's idempotent id.

Shipping. A shipper task, woken by every commit, reads the oldest rows (at most
`batch_size`), sends them, and deletes them only once the optimizer acknowledged them. When
the optimizer is down or answers an error, the rows stay and the shipper tries again after
an exponential, jittered pause capped at `max_backoff`; a restarted router ships what it
left. A row may therefore be sent more than once (acknowledged, then the delete lost), or by
two replicas sharing a PostgreSQL schema — never lost; the optimizer counts each outcome id
once, so nothing is doubled either.

Acknowledgement, one outcome at a time. The optimizer answers which outcomes it holds
(`accepted_ids`) and which it refused (`rejected`, with the field and its bound); each row is
dealt with on its own, so one bad outcome never holds up the others. A refused outcome can
never be accepted (resent unchanged it is refused again): it moves to the dead-letter table
`outbox_dead_letters`, counted by `saga_router_outbox_dead_letters_total` and logged at
ERROR (its id, field and bound — never the values). An optimizer that refuses a whole batch
(INVALID_ARGUMENT: an older one, or too big a batch) gets its rows again one by one, and a
row it refuses alone is dead-lettered. The bounds are the optimizer's (`outcome_bounds`):
`add` clips descriptive fields to them and dead-letters at once what still breaks one (the
router refuses calls whose identity fields are too long before any provider is called).

Attempts in flight. `hold` stores (or raises) an attempt's provisional, estimated outcome
(`attempts.InFlight`) in `outbox_attempts`, in the same queue and commits as `add`, owned by
this process under a lease it renews every `KEEP_INTERVAL_SECONDS`; the attempt's real
outcome, added when it ends, replaces it in the same transaction, under the same id. A row
whose lease ran out `LEASE_SECONDS` ago belongs to a router that crashed (or hung that long):
its outcome moves to `outbox` as it is — estimated, flagged — and is shipped. Should its
router come back after all, its real outcome has the same id and the optimizer keeps the one
it got first: never doubled. An attempt whose hold could not be stored never calls its
provider (`call_steps`' gate); `withdraw` deletes its provisional record — which may have
committed after all, its acknowledgement lost — so it is never adopted as a call, and it
leaves no outcome: the ledger counts provider calls, not calls Saga refused.

Backlog. Every `KEEP_INTERVAL_SECONDS` the keeper also reads the backlog (rows, the oldest's
age, attempts in flight, dead letters): `status()` for ListProviders reads them afresh,
`gauges()` (the metrics, at scrape time) the latest reading, with the age as of the scrape.

Traces. Each row keeps the W3C `traceparent` of the Reason call that produced it, and its
outcome travels with it (`Outcome.traceparent`): the optimizer records each call's outcomes
in a span of that call's trace. So a round is one RecordOutcomes call, however many calls'
outcomes it holds — one call per Reason cost the router and the optimizer a gRPC call's CPU
each (bench/README.md, "one RecordOutcomes per round") — and it is sent untraced.

Rounds. A commit wakes the shipper, which then lets `linger` (`SHIP_LINGER_SECONDS`) pass
before it reads, so that under load one round gathers the outcomes of many commits; it goes
on at once while full rounds (`batch_size`) are waiting. An outcome therefore reaches the
optimizer's live metrics about that much later than it is committed; it is durable from the
commit on.

Running and stopping. `run_in(lifecycle)` spawns the writer, the shipper and the keeper as
supervised tasks and registers `flush`, which waits for what is queued to be committed, as shutdown
work that runs before they are cancelled; outcomes still queued when the writer is cancelled
fail their futures. Unshipped rows stay stored for the next start.

The database out of reach. A batch whose write fails `Unavailable` fails its futures at once
(the call ends UNAVAILABLE `USAGE_NOT_STORED`: no caller waits on an outage) but is not
dropped: the provider was called, so the batch goes back to the head of the queue and is
written, with backoff, once the database answers — in memory meanwhile, so a router stopped
during the outage loses those outcomes but not their provisional records, which the next
router adopts. Any other write error drops the batch, as before (retrying it could not help).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from opentelemetry import context as otel_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from saga.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
from services.common import outcome_bounds
from services.common.backoff import Backoff
from services.common.database import Database, Statement
from services.common.errors import Unavailable
from services.common.lifecycle import Lifecycle, Phase
from services.router.metrics import DEAD_LETTERS

log = logging.getLogger("saga.router.outbox")

SEND_TIMEOUT_SECONDS = 5.0
INITIAL_BACKOFF_SECONDS = 0.2
MAX_WRITE_BATCH = 500  # rows per commit, to bound a statement's size
SHIP_LINGER_SECONDS = 0.05
"""How long the shipper lets outcomes gather before a round that is not full."""
KEEP_INTERVAL_SECONDS = 1.0
"""How often the keeper renews leases, adopts crashed routers' attempts and reads the
backlog."""
LEASE_SECONDS = 5.0
"""How long a provisional record stays its router's without a renewal."""
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


def _outcome(row: _Row) -> optimizer_pb2.Outcome:
    """A stored row's outcome as shipped: with its call's traceparent (kept in its own
    column, so rows stored before the field existed carry it too)."""
    outcome = optimizer_pb2.Outcome.FromString(row.payload)
    outcome.traceparent = row.traceparent
    return outcome


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _placeholders(count: int, width: int, first: int = 0) -> str:
    """`($1, $2), ($3, $4)…` for `count` rows of `width` values."""
    rows = []
    for i in range(count):
        base = first + width * i
        rows.append("(" + ", ".join(f"${base + k + 1}" for k in range(width)) + ")")
    return ", ".join(rows)


class _Kind(enum.Enum):
    FINAL = 1  # an attempt's outcome, as it ended
    HELD = 2  # an attempt's provisional outcome, while it runs
    UNSENT = 3  # an attempt that never called its provider: its provisional record goes


@dataclass(frozen=True)
class _Row:
    outcome_id: str
    payload: bytes
    traceparent: str
    created_at: float


@dataclass(frozen=True)
class OutboxStatus:
    """The outbox as last read."""

    backlog: int = 0
    """Outcomes stored and not yet acknowledged."""
    oldest_created: float = 0.0
    """Epoch seconds the oldest of them was stored (0 without a backlog)."""
    in_flight: int = 0
    """Provisional records of attempts in flight (every router sharing the database)."""
    dead_letters: int = 0
    """Outcomes in the dead-letter table."""

    def oldest_age(self, now: float) -> float:
        """Seconds the oldest outcome has waited, as of `now` (0 without a backlog)."""
        return max(0.0, now - self.oldest_created) if self.backlog else 0.0


_Queued = tuple[_Kind, optimizer_pb2.Outcome, str, asyncio.Future[None]]


class Outbox:
    """Stores outcomes durably and ships them to the optimizer (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        channel: grpc.aio.Channel,
        *,
        batch_size: int = 200,
        max_backoff: float = 10.0,
        linger: float = SHIP_LINGER_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._clock = clock  # wall-clock seconds: row times, leases
        self._stub = optimizer_pb2_grpc.OptimizerServiceStub(channel)
        self._batch_size = batch_size
        self._max_backoff = max_backoff
        self._linger = linger
        self._queue: list[_Queued] = []
        self._owner = secrets.token_hex(8)  # this process, as the owner of held attempts
        self._held: set[str] = set()  # ids held by this process and not yet ended
        self._status = OutboxStatus()
        self._queued = asyncio.Event()
        self._committed = asyncio.Event()
        self._unstored: set[asyncio.Future[None]] = set()
        self.shipped = 0
        """Outcomes the optimizer acknowledged since start."""
        self.dead_lettered = 0
        """Outcomes moved to the dead-letter table since start."""
        self.adopted = 0
        """Crashed routers' attempts moved to the outbox since start."""

    def add(self, outcome: optimizer_pb2.Outcome, traceparent: str) -> asyncio.Future[None]:
        """Queue `outcome` for the store (replacing its provisional record, if any); the
        future resolves once it is committed (or fails with the storage error). Never
        blocks, so it may be called while a call is being cancelled."""
        clipped = outcome_bounds.clip(outcome)
        if clipped:
            log.warning(
                "outcome fields clipped to their bound",
                extra={"outcome_id": outcome.outcome_id[:256], "fields": clipped},
            )
        self._held.discard(outcome.outcome_id)
        return self._enqueue(_Kind.FINAL, outcome, traceparent)

    def hold(self, outcome: optimizer_pb2.Outcome, traceparent: str) -> asyncio.Future[None]:
        """Queue the provisional `outcome` of an attempt in flight (replacing the one held
        before); the future resolves once it is committed."""
        outcome_bounds.clip(outcome)
        self._held.add(outcome.outcome_id)
        return self._enqueue(_Kind.HELD, outcome, traceparent)

    def withdraw(self, outcome_id: str) -> asyncio.Future[None]:
        """Delete the provisional record of an attempt whose request never left (its hold
        failed, so its provider was not called): nothing to ship. Queued behind that hold,
        so a hold that did commit (its acknowledgement lost) or is queued for a retry goes
        too — else a later router would adopt it as a call that was never made."""
        self._held.discard(outcome_id)
        return self._enqueue(_Kind.UNSENT, optimizer_pb2.Outcome(outcome_id=outcome_id), "")

    def _enqueue(
        self, kind: _Kind, outcome: optimizer_pb2.Outcome, traceparent: str
    ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A cancelled call never awaits its futures: mark their errors seen (they are logged).
        future.add_done_callback(_retrieve)
        self._unstored.add(future)
        future.add_done_callback(self._unstored.discard)
        self._queue.append((kind, outcome, traceparent, future))
        self._queued.set()
        return future

    async def pending(self) -> int:
        """Rows stored and not yet acknowledged by the optimizer."""
        return int(await _shielded(self._db.fetchval("SELECT COUNT(*) FROM outbox")) or 0)

    async def status(self) -> OutboxStatus:
        """The outbox read now (and kept for `gauges`)."""
        row = await _shielded(
            self._db.fetchrow("SELECT COUNT(*) AS backlog, MIN(created_at) AS oldest FROM outbox")
        )
        in_flight = await _shielded(self._db.fetchval("SELECT COUNT(*) FROM outbox_attempts"))
        dead = await _shielded(self._db.fetchval("SELECT COUNT(*) FROM outbox_dead_letters"))
        backlog = int(row["backlog"] or 0) if row else 0
        oldest = float(row["oldest"] or 0.0) if row and backlog else 0.0
        self._status = OutboxStatus(backlog, oldest, int(in_flight or 0), int(dead or 0))
        return self._status

    def gauges(self) -> tuple[int, float, int]:
        """(backlog, the oldest outcome's age in seconds as of now, attempts in flight), as
        last read (at most `KEEP_INTERVAL_SECONDS` old): for the metrics, read at scrape
        time."""
        s = self._status
        return s.backlog, s.oldest_age(self._clock()), s.in_flight

    def run_in(self, lifecycle: Lifecycle) -> None:
        """Run the writer, the shipper and the keeper in `lifecycle`; at shutdown, flush
        first."""
        lifecycle.spawn("outbox-writer", self.write_forever)
        lifecycle.spawn("outbox-shipper", self.ship_forever)
        lifecycle.spawn("outbox-keeper", self.keep_forever)
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
            for _, _, _, future in self._queue:
                if not future.done():
                    future.set_exception(RuntimeError("the router stopped before storing it"))
            raise

    async def _write(self) -> None:
        failures = 0
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
                    for _, _, _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    if isinstance(error, Unavailable):
                        # The database is out of reach: the callers heard so (the call
                        # ends USAGE_NOT_STORED), but the provider was called, so the
                        # outcomes are kept and written once it answers again.
                        self._queue[:0] = batch
                        failures += 1
                        await asyncio.sleep(self._backoff(failures))
                    continue
                failures = 0
                for _, _, _, future in batch:
                    if not future.done():
                        future.set_result(None)
                self._committed.set()

    async def _store(self, batch: Sequence[_Queued]) -> None:
        await _shielded(self._store_in_one(batch))

    async def _store_in_one(self, batch: Sequence[_Queued]) -> None:
        """One transaction: the provisional records raised, then the outcomes that ended
        (stored, their provisional records deleted) and the attempts never sent (their
        provisional records deleted), so a crash leaves one or the other."""
        now = self._clock()
        finals: dict[str, tuple[optimizer_pb2.Outcome, str]] = {}
        refused: list[tuple[optimizer_pb2.Outcome, outcome_bounds.Problem]] = []
        held: dict[str, tuple[optimizer_pb2.Outcome, str]] = {}
        unsent: list[str] = []
        for kind, outcome, traceparent, _ in batch:
            if kind is _Kind.HELD:
                held[outcome.outcome_id] = (outcome, traceparent)  # the latest claim counts
                continue
            if kind is _Kind.UNSENT:
                unsent.append(outcome.outcome_id)
                continue
            found = outcome_bounds.problem(outcome)
            if found is None:
                finals[outcome.outcome_id] = (outcome, traceparent)
            else:
                refused.append((outcome, found))
        ended = [*finals, *(o.outcome_id for o, _ in refused), *unsent]
        for outcome_id in ended:
            held.pop(outcome_id, None)
        # One batch: on SQLite one trip to the worker thread (BEGIN, the statements, COMMIT),
        # which an attempt's gate waits for before its provider is called.
        statements: list[Statement] = []
        if held:
            statements.append(self._held_rows(list(held.values()), now))
        if finals:
            args: list[object] = []
            for i, (outcome, traceparent) in enumerate(finals.values()):
                payload = outcome.SerializeToString()
                args += [outcome.outcome_id, payload, traceparent, now + i * 1e-6]
            # Placeholders only: the values travel as parameters.
            statements.append(
                (
                    "INSERT INTO outbox (outcome_id, payload, traceparent, created_at) "  # noqa: S608
                    f"VALUES {_placeholders(len(finals), 4)} ON CONFLICT (outcome_id) DO NOTHING",
                    args,
                )
            )
        for outcome, found in refused:
            statements += self._burial(outcome.outcome_id, outcome.SerializeToString(), now, found)
        if ended:
            statements.append(
                (
                    f"DELETE FROM outbox_attempts WHERE outcome_id IN ({_in(len(ended))})",  # noqa: S608
                    ended,
                )
            )
        await self._db.batch(statements)
        for outcome, found in refused:
            self._dead_lettered(outcome.outcome_id, str(found))

    def _held_rows(self, held: list[tuple[optimizer_pb2.Outcome, str]], now: float) -> Statement:
        args: list[object] = []
        lease = _micros(now + LEASE_SECONDS)
        for outcome, traceparent in held:
            payload = outcome.SerializeToString()
            args += [outcome.outcome_id, payload, traceparent, self._owner, lease, _micros(now)]
        # Placeholders only: the values travel as parameters.
        return (
            "INSERT INTO outbox_attempts "  # noqa: S608
            "(outcome_id, payload, traceparent, owner, lease_until_us, created_us) "
            f"VALUES {_placeholders(len(held), 6)} ON CONFLICT (outcome_id) DO UPDATE SET "
            "payload = excluded.payload, lease_until_us = excluded.lease_until_us, "
            "owner = excluded.owner",
            args,
        )

    def _burial(
        self, outcome_id: str, payload: bytes, stored: float, found: object
    ) -> list[Statement]:
        """The statements that move one outcome to the dead-letter table."""
        return [
            (
                "INSERT INTO outbox_dead_letters "
                "(outcome_id, payload, problem, stored_us, dead_us) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (outcome_id) DO NOTHING",
                (outcome_id, payload, str(found)[:1024], _micros(stored), _micros(self._clock())),
            ),
            ("DELETE FROM outbox WHERE outcome_id = $1", (outcome_id,)),
        ]

    def _dead_lettered(self, outcome_id: str, problem: str) -> None:
        """Count and announce one dead letter: an operator must look (ids and the bound
        only — no values, no secrets)."""
        self.dead_lettered += 1
        DEAD_LETTERS.inc()
        log.error(
            "usage outcome dead-lettered: the optimizer can never accept it",
            extra={"outcome_id": outcome_id[:256], "problem": problem[:1024]},
        )

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
                    await asyncio.sleep(self._linger)  # let the next commits join
                    continue
                await self._send(rows)
                failures = 0
                if len(rows) < self._batch_size:
                    await asyncio.sleep(self._linger)
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
                "SELECT outcome_id, payload, traceparent, created_at FROM outbox "
                "ORDER BY created_at LIMIT $1",
                self._batch_size,
            )
        )
        return [
            _Row(r["outcome_id"], bytes(r["payload"]), r["traceparent"], float(r["created_at"]))
            for r in rows
        ]

    async def _send(self, rows: list[_Row]) -> None:
        """One RecordOutcomes call for `rows`, each outcome with its call's traceparent;
        delete the rows the optimizer acknowledged and dead-letter those it refused. A
        refusal of the whole call (INVALID_ARGUMENT) sends the rows again one by one."""
        request = optimizer_pb2.RecordOutcomesRequest(outcomes=[_outcome(r) for r in rows])
        # Untraced: the call carries many runs' outcomes (the peer channel would otherwise
        # inject whatever context is current).
        token = otel_context.attach(otel_context.Context())
        try:
            reply = await self._stub.RecordOutcomes(iter([request]), timeout=SEND_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as error:
            if error.code() is not grpc.StatusCode.INVALID_ARGUMENT:
                raise
            if len(rows) > 1:
                for row in rows:
                    await self._send([row])
                return
            await self._dead_letter(rows[0], error.details() or "refused")
            return
        finally:
            otel_context.detach(token)
        by_id = {r.outcome_id: r for r in rows}
        if not reply.accepted_ids and not reply.rejected:
            acknowledged = list(by_id)  # an optimizer without per-outcome answers: all held
        else:
            acknowledged = [i for i in reply.accepted_ids if i in by_id]
        for rejected in reply.rejected:
            refused = by_id.get(rejected.outcome_id)
            if refused is None and 0 <= rejected.index < len(rows):
                refused = rows[rejected.index]
            if refused is not None and refused.outcome_id not in acknowledged:
                await self._dead_letter(refused, f"{rejected.field}: {rejected.problem}")
        if acknowledged:
            await _shielded(
                self._db.execute(
                    f"DELETE FROM outbox WHERE outcome_id IN ({_in(len(acknowledged))})",  # noqa: S608
                    *acknowledged,
                )
            )
        self.shipped += len(acknowledged)

    async def _dead_letter(self, row: _Row, problem: str) -> None:
        await _shielded(
            self._db.batch(self._burial(row.outcome_id, row.payload, row.created_at, problem))
        )
        self._dead_lettered(row.outcome_id, problem)

    # ------------------------------------------------------------------ keeping

    async def keep_forever(self) -> None:
        """Every `KEEP_INTERVAL_SECONDS`: renew this process's leases, adopt the attempts of
        routers that crashed, read the backlog; until cancelled."""
        while True:
            try:
                await self.keep()
            except Exception:
                log.exception("outbox upkeep failed; trying again")
            await asyncio.sleep(KEEP_INTERVAL_SECONDS)

    async def keep(self) -> None:
        """One round of upkeep (see `keep_forever`)."""
        now = self._clock()
        if self._held:
            await _shielded(
                self._db.execute(
                    "UPDATE outbox_attempts SET lease_until_us = $1 WHERE owner = $2",
                    _micros(now + LEASE_SECONDS),
                    self._owner,
                )
            )
        if await self._adopt(now):
            self._committed.set()  # wake the shipper
        await self.status()

    async def _adopt(self, now: float) -> int:
        """Move the provisional records whose lease ran out (a crashed router's) to the
        outbox, as they are: estimated and flagged. The number moved."""
        expired = _micros(now)

        async def move() -> int:
            async with self._db.transaction() as tx:
                rows = await tx.fetch(
                    "SELECT outcome_id, payload, traceparent, created_us FROM outbox_attempts "
                    "WHERE lease_until_us < $1 AND owner <> $2 ORDER BY created_us LIMIT $3",
                    expired,
                    self._owner,
                    MAX_WRITE_BATCH,
                )
                if not rows:
                    return 0
                args: list[object] = []
                for r in rows:
                    args += [
                        r["outcome_id"],
                        bytes(r["payload"]),
                        r["traceparent"],
                        r["created_us"] / 1_000_000,
                    ]
                # Placeholders only: the values travel as parameters.
                await tx.execute(
                    "INSERT INTO outbox (outcome_id, payload, traceparent, created_at) "  # noqa: S608
                    f"VALUES {_placeholders(len(rows), 4)} ON CONFLICT (outcome_id) DO NOTHING",
                    *args,
                )
                ids = [r["outcome_id"] for r in rows]
                await tx.execute(
                    f"DELETE FROM outbox_attempts WHERE outcome_id IN ({_in(len(ids))})",  # noqa: S608
                    *ids,
                )
                return len(rows)

        moved = await _shielded(move())
        if moved:
            self.adopted += moved
            log.warning(
                "attempts of a stopped router billed as estimated",
                extra={"count": moved},
            )
        return moved


def _in(count: int, first: int = 0) -> str:
    """`$1, $2, …` for an IN list of `count` values."""
    return ", ".join(f"${first + i + 1}" for i in range(count))
