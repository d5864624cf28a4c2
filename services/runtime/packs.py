"""Pricing packs in the runtime's database, and their reconciliation in the background (the
values and rules are `pack_rules.py`, re-exported here).

`publish` stores a pack WARMING and schedules its reconciliation (after
`runtime.pack_warmup_seconds`); the task reads the pack back from storage (so a content that
changed since is caught by its checksum), asks the ledger which symbols are held on the
pack's date, and moves the pack to FRESH or ERROR once, with the summary. A replica that
starts reconciles the packs left WARMING (by a crash, or by another replica that stopped):
reconciliation is deterministic and its update applies only to a WARMING row, so two replicas
doing it agree.

Health is read from the database on every call (an indexed query of one date, no prices
parsed for other dates), so every replica sees every replica's publications; the gateway
caches it for at most a second.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, fields, replace
from typing import Any

from services.common import page_tokens
from services.common.database import Database, Row, Tx
from services.common.errors import FieldViolation, InvalidArgument, NotFound
from services.runtime.pack_rules import (
    ERROR,
    FRESH,
    WARMING,
    Health,
    Pack,
    PackHead,
    Price,
    Reconciliation,
    check_publication,
    new_pack,
    pack_checksum,
    reconcile,
    select,
    status_at,
)
from services.runtime.schema import exclusive

__all__ = [
    "ERROR",
    "FRESH",
    "WARMING",
    "Health",
    "Pack",
    "PackHead",
    "PackStore",
    "Price",
    "Reconciliation",
    "new_pack",
    "pack_checksum",
]

log = logging.getLogger("saga.runtime.packs")

HeldSymbols = Callable[[str], Awaitable[set[str]]]
"""The symbols the ledger holds on a date (YYYY-MM-DD)."""
Clock = Callable[[], datetime.datetime]

RECONCILE_ESTIMATE = datetime.timedelta(seconds=1)
"""What a reconciliation itself is expected to take (added to the warm-up for
estimated_ready)."""
MAX_PACK_ID = 64
"""Longer than any id `new_pack` makes (`PP_YYYY-MM-DD_` and 8 hex): no query for it."""
DEFAULT_PAGE = 50
MAX_PAGE = 500


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _head(row: Row) -> PackHead:
    return PackHead(
        pack_id=row["pack_id"],
        asof=row["asof"],
        source=row["source"],
        status=row["status"],
        created_at=row["created_at"],
        checksum=row["checksum"],
        price_count=row["price_count"],
        reconciliation=Reconciliation.from_json(row["reconciliation"]),
        ready_by=row["ready_by"],
    )


def _pack(row: Row) -> Pack:
    head = _head(row)
    return Pack(
        **{f.name: getattr(head, f.name) for f in fields(PackHead)},
        prices=tuple(Price(**p) for p in json.loads(row["prices"])),
    )


_HEAD = "pack_id, asof, source, status, created_at, checksum, price_count, reconciliation, ready_by"
_LATEST_FRESH = (
    "SELECT * FROM packs WHERE status = 'FRESH' ORDER BY asof DESC, created_at DESC LIMIT 1"
)
_OF_DATE = f"SELECT {_HEAD} FROM packs WHERE asof = $1 ORDER BY created_at DESC, pack_id DESC"  # noqa: S608 (constant columns)
_CARRIED = (
    f"SELECT {_HEAD} FROM packs WHERE status = 'FRESH' AND asof < $1 "  # noqa: S608 (constant columns)
    "ORDER BY asof DESC, created_at DESC LIMIT 1"
)


async def _insert(tx: Tx, pack: Pack) -> None:
    await tx.execute(
        "INSERT INTO packs (pack_id, asof, source, status, created_at, prices, checksum, "
        "reconciliation, ready_by, price_count) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        pack.pack_id,
        pack.asof,
        pack.source,
        pack.status,
        pack.created_at,
        json.dumps([asdict(p) for p in pack.prices], separators=(",", ":")),
        pack.checksum,
        pack.reconciliation.to_json() if pack.reconciliation else "",
        pack.ready_by,
        pack.price_count,
    )


class PackStore:
    """Packs in the runtime's database; see the module docstring."""

    def __init__(
        self,
        db: Database,
        latest: Pack | None,
        *,
        held: HeldSymbols | None = None,
        max_age_days: int = 3,
        warmup_seconds: float = 0.0,
        clock: Clock = _utc_now,
    ) -> None:
        self._db = db
        self._latest = latest
        self._held = held
        self._max_age_days = max_age_days
        self._warmup = warmup_seconds
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(
        cls,
        db: Database,
        *,
        held: HeldSymbols | None = None,
        max_age_days: int = 3,
        warmup_seconds: float = 0.0,
        clock: Clock = _utc_now,
    ) -> PackStore:
        """The store in `db`, with its newest FRESH pack loaded. Without `held` it cannot
        reconcile (a read-only view, as tools and tests use)."""
        row = await db.fetchrow(_LATEST_FRESH)
        return cls(
            db,
            _pack(row) if row is not None else None,
            held=held,
            max_age_days=max_age_days,
            warmup_seconds=warmup_seconds,
            clock=clock,
        )

    def latest(self) -> Pack | None:
        """The newest FRESH pack (by asof, then creation) this replica knows of, or None."""
        return self._latest

    async def get(self, pack_id: str) -> Pack | None:
        """The pack called `pack_id`."""
        row = await self._db.fetchrow("SELECT * FROM packs WHERE pack_id = $1", pack_id)
        return _pack(row) if row is not None else None

    async def seed(self, pack: Pack) -> bool:
        """Store `pack` only if every pack stored is of its source and of an earlier date — a
        first start, or a later day of a store no operator has published to (so the demo
        pack never goes stale under a demo) — checked in the same exclusive transaction, so of
        several replicas starting together exactly one seeds; whether it did. A FRESH pack is
        reconciled first when the store can (ERROR if that fails). Either way the newest FRESH
        pack is then reloaded."""
        if pack.status == FRESH and self._held is not None:
            summary = reconcile(pack, await self._held(pack.asof), self._clock())
            pack = replace(pack, status=FRESH if summary.passed else ERROR, reconciliation=summary)
        async with self._db.transaction() as tx:
            await exclusive(self._db.dialect, tx, "packs")
            seeded = (
                await tx.fetchval(
                    "SELECT 1 FROM packs WHERE source <> $1 OR asof >= $2 LIMIT 1",
                    pack.source,
                    pack.asof,
                )
                is None
            )
            if seeded:
                await _insert(tx, pack)
            row = await tx.fetchrow(_LATEST_FRESH)
        self._latest = _pack(row) if row is not None else None
        return seeded

    async def publish(self, asof: str, source: str, prices: Sequence[Price]) -> Pack:
        """Store a new pack WARMING and schedule its reconciliation; the same content
        published again is the pack already stored (whatever its state)."""
        check_publication(source, prices)
        now = self._clock()
        pack = new_pack(asof, source, prices, WARMING, now=now)
        ready_by = now + datetime.timedelta(seconds=self._warmup) + RECONCILE_ESTIMATE
        pack = replace(pack, ready_by=ready_by.isoformat())
        async with self._db.transaction() as tx:
            existing = await tx.fetchrow("SELECT * FROM packs WHERE pack_id = $1", pack.pack_id)
            if existing is None:
                await _insert(tx, pack)
        if existing is not None:
            return _pack(existing)
        log.info("pack published", extra={"pack_id": pack.pack_id, "prices": len(prices)})
        self._schedule(pack.pack_id, self._warmup)
        return pack

    def start(self) -> None:
        """Reconcile, in the background, the packs left WARMING."""
        self._spawn(self._resume())

    async def _resume(self) -> None:
        rows = await self._db.fetch("SELECT pack_id FROM packs WHERE status = $1", WARMING)
        for row in rows:
            self._schedule(row["pack_id"], 0.0)

    def _schedule(self, pack_id: str, delay: float) -> None:
        if self._held is not None:
            self._spawn(self._reconcile(pack_id, delay))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reconcile(self, pack_id: str, delay: float) -> None:
        assert self._held is not None
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            pack = await self.get(pack_id)
            if pack is None or pack.status != WARMING:
                return
            summary = reconcile(pack, await self._held(pack.asof), self._clock())
            status = FRESH if summary.passed else ERROR
            await self._db.execute(
                "UPDATE packs SET status = $1, reconciliation = $2, ready_by = '' "
                "WHERE pack_id = $3 AND status = $4",
                status,
                summary.to_json(),
                pack_id,
                WARMING,
            )
            log.info("pack reconciled", extra={"pack_id": pack_id, "status": status})
            if status == FRESH:
                row = await self._db.fetchrow(_LATEST_FRESH)
                self._latest = _pack(row) if row is not None else None
        except asyncio.CancelledError:
            raise
        except Exception:  # stays WARMING; the next start retries it
            log.exception("pack reconciliation failed", extra={"pack_id": pack_id})

    async def settled(self) -> None:
        """Wait until every scheduled reconciliation has run (for tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop the reconciliations still running (their packs stay WARMING until a start)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def health(self, asof: str) -> Health:
        """The pack serving `asof` and its status for that date (see `packs.select`)."""
        rows = await self._db.fetch(_OF_DATE, asof)
        pack = select([_head(r) for r in rows])
        carried = False
        if pack is None:
            row = await self._db.fetchrow(_CARRIED, asof)
            if row is None:
                return Health(asof=asof)
            pack, carried = _head(row), True
        status = status_at(pack.status, pack.asof, asof, self._max_age_days)
        return Health(asof=asof, pack=pack, status=status, carried_forward=carried)

    async def health_of(self, pack_id: str, asof: str) -> Health:
        """A given pack and its status for a run of `asof`; NOT_FOUND PACK_NOT_FOUND."""
        row = None
        if len(pack_id) <= MAX_PACK_ID:
            row = await self._db.fetchrow(
                f"SELECT {_HEAD} FROM packs WHERE pack_id = $1",  # noqa: S608 (constant columns)
                pack_id,
            )
        if row is None:
            raise NotFound(
                f"no pack {pack_id[:64]!r}",
                reason="PACK_NOT_FOUND",
                metadata={"packId": pack_id[:64]},
            )
        pack = _head(row)
        status = status_at(pack.status, pack.asof, max(asof, pack.asof), self._max_age_days)
        return Health(asof=asof, pack=pack, status=status)

    async def page(self, page_size: int, page_token: str, today: str) -> tuple[list[Health], str]:
        """Packs newest asof first (then newest publication), each with its status today."""
        if page_size < 0:
            raise InvalidArgument(
                "page_size must not be negative",
                reason="PAGE_SIZE_INVALID",
                field_violations=[FieldViolation("page_size", "must not be negative")],
            )
        size = min(page_size or DEFAULT_PAGE, MAX_PAGE)
        after = page_tokens.decode(page_token, (), 3)
        if after is not None:
            asof, created_at, pack_id = after
            rows = await self._db.fetch(
                f"SELECT {_HEAD} FROM packs WHERE asof < $1 OR (asof = $1 AND (created_at < $2 "  # noqa: S608 (constant columns)
                "OR (created_at = $2 AND pack_id < $3))) "
                "ORDER BY asof DESC, created_at DESC, pack_id DESC LIMIT $4",
                asof,
                created_at,
                pack_id,
                size + 1,
            )
        else:
            rows = await self._db.fetch(
                f"SELECT {_HEAD} FROM packs "  # noqa: S608 (constant columns)
                "ORDER BY asof DESC, created_at DESC, pack_id DESC LIMIT $1",
                size + 1,
            )
        packs = [_head(r) for r in rows[:size]]
        last = packs[-1] if len(rows) > size else None
        token = page_tokens.encode((last.asof, last.created_at, last.pack_id), ()) if last else ""
        healths = [
            Health(
                asof=p.asof,
                pack=p,
                status=status_at(p.status, p.asof, max(today, p.asof), self._max_age_days),
            )
            for p in packs
        ]
        return healths, token
