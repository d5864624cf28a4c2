"""Pricing packs: immutable, versioned sets of prices by symbol, each with its source.

A pack's id is `PP_<asof>_<first 8 hex of its checksum>`; the checksum is the SHA-256 of the
pack's canonical content (asof, source, prices sorted by symbol), so the id names exactly one
content. A run pins the newest FRESH pack (`latest`), kept in memory so pinning costs no I/O.
Publication, reconciliation against the ledger and the WARMING/STALE/ERROR lifecycle come
with PackService.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from services.common.database import Database, Row, Tx
from services.runtime.schema import exclusive

FRESH = "FRESH"
STATUSES = ("WARMING", FRESH, "STALE", "ERROR")


@dataclass(frozen=True)
class Price:
    """The price of one symbol, in millionths of `currency`, and where it came from."""

    symbol: str
    price_micro: int
    currency: str
    source: str


@dataclass(frozen=True)
class Pack:
    """A stored pricing pack."""

    pack_id: str
    asof: str
    source: str
    status: str
    created_at: str
    prices: tuple[Price, ...]
    checksum: str


def pack_checksum(asof: str, source: str, prices: Iterable[Price]) -> str:
    """SHA-256 (hex) of the pack's canonical content."""
    content = {
        "asof": asof,
        "source": source,
        "prices": [asdict(p) for p in sorted(prices, key=lambda p: p.symbol)],
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def new_pack(asof: str, source: str, prices: Iterable[Price], status: str) -> Pack:
    """A pack (not yet stored) with its id and checksum computed from its content."""
    ordered = tuple(sorted(prices, key=lambda p: p.symbol))
    datetime.date.fromisoformat(asof)
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    checksum = pack_checksum(asof, source, ordered)
    return Pack(
        pack_id=f"PP_{asof}_{checksum[:8]}",
        asof=asof,
        source=source,
        status=status,
        created_at=datetime.datetime.now(datetime.UTC).isoformat(),
        prices=ordered,
        checksum=checksum,
    )


def _pack(row: Row) -> Pack:
    return Pack(
        pack_id=row["pack_id"],
        asof=row["asof"],
        source=row["source"],
        status=row["status"],
        created_at=row["created_at"],
        prices=tuple(Price(**p) for p in json.loads(row["prices"])),
        checksum=row["checksum"],
    )


_LATEST_FRESH = (
    "SELECT * FROM packs WHERE status = 'FRESH' ORDER BY asof DESC, created_at DESC LIMIT 1"
)


async def _insert(tx: Tx, pack: Pack) -> None:
    await tx.execute(
        "INSERT INTO packs (pack_id, asof, source, status, created_at, prices, checksum) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        pack.pack_id,
        pack.asof,
        pack.source,
        pack.status,
        pack.created_at,
        json.dumps([asdict(p) for p in pack.prices], separators=(",", ":")),
        pack.checksum,
    )


class PackStore:
    """Packs in the runtime's database; the newest FRESH one is kept in memory."""

    def __init__(self, db: Database, latest: Pack | None) -> None:
        self._db = db
        self._latest = latest

    @classmethod
    async def open(cls, db: Database) -> PackStore:
        """The store in `db`, with its newest FRESH pack loaded."""
        row = await db.fetchrow(_LATEST_FRESH)
        return cls(db, _pack(row) if row is not None else None)

    def latest(self) -> Pack | None:
        """The newest FRESH pack (by asof, then creation), or None."""
        return self._latest

    async def get(self, pack_id: str) -> Pack | None:
        """The pack called `pack_id`."""
        row = await self._db.fetchrow("SELECT * FROM packs WHERE pack_id = $1", pack_id)
        return _pack(row) if row is not None else None

    async def seed(self, pack: Pack) -> bool:
        """Store `pack` only if there is no pack at all (checked in the same exclusive
        transaction, so of several replicas starting together exactly one seeds); whether it
        did. Either way the newest FRESH pack is then reloaded."""
        async with self._db.transaction() as tx:
            await exclusive(self._db.dialect, tx, "packs")
            seeded = await tx.fetchval("SELECT 1 FROM packs LIMIT 1") is None
            if seeded:
                await _insert(tx, pack)
            row = await tx.fetchrow(_LATEST_FRESH)
        self._latest = _pack(row) if row is not None else None
        return seeded
