"""The ledger: append-only portfolio transactions with a hash chain.

Each transaction is hashed with the hash before it —
`hash = sha256(prev_hash || canonical JSON of the transaction)`, starting from 64 zeros — so
the latest hash (the head, a run's `ledger_commit_hash`) commits to every transaction ever
written: the same transactions give the same head, and changing any row breaks the chain
from that row on, which `verify` reports. Positions computed at a commit are therefore
reproducible.

Holdings are what the transactions up to a commit add up to: per symbol the quantity held and
its cost basis by average cost (a sell takes its share of the cost at the position's average
price), in exact `Decimal` arithmetic. Selling more than is held is refused.

The chain arithmetic (`Transaction`, `chain_hash`, `verify_chain`, `holdings`) is pure;
`Ledger` keeps it in the runtime's database (SQLite or PostgreSQL). Appends from every
replica take turns (see `schema.exclusive`) and read the head inside their transaction; a
row's `prev_hash` is also unique, so even a writer that bypassed the turn could not fork the
chain: it would fail.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal

from services.common.database import Database, Row, Tx
from services.common.errors import Aborted, NotFound
from services.runtime.schema import exclusive

log = logging.getLogger("saga.runtime.ledger")

HEAD_REFRESH_SECONDS = 1.0
"""How stale a replica's head may be after another replica's import."""

GENESIS = "0" * 64
"""The head of an empty ledger."""

SIDES = ("buy", "sell")


@dataclass(frozen=True)
class Transaction:
    """One trade. Quantities and prices are integers in millionths (no float rounding)."""

    portfolio: str
    trade_date: str  # YYYY-MM-DD
    symbol: str
    side: str  # "buy" or "sell"
    quantity_micro: int
    price_micro: int
    currency: str

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {self.side!r}")
        if self.quantity_micro <= 0 or self.price_micro <= 0:
            raise ValueError("quantity and price must be positive")
        datetime.date.fromisoformat(self.trade_date)

    def canonical(self) -> bytes:
        """The transaction as canonical JSON: sorted keys, no spaces, UTF-8."""
        return json.dumps(
            asdict(self), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()


def chain_hash(prev_hash: str, transaction: Transaction) -> str:
    """The hash of `transaction` appended after `prev_hash` (64 hex digits)."""
    return hashlib.sha256(prev_hash.encode("ascii") + transaction.canonical()).hexdigest()


def chain_head(transactions: Iterable[Transaction], start: str = GENESIS) -> str:
    """The head after appending `transactions`, in order, to a chain whose head is `start`."""
    head = start
    for transaction in transactions:
        head = chain_hash(head, transaction)
    return head


@dataclass(frozen=True)
class ChainRow:
    """A stored transaction with its position and the hashes stored beside it."""

    seq: int
    transaction: Transaction
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Verification:
    """What `verify_chain` found: the head it reached and the first broken row, if any."""

    rows: int
    head: str
    broken_seq: int | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        """Whether every row links to the one before and matches its content."""
        return self.broken_seq is None


def verify_chain(rows: Iterable[ChainRow]) -> Verification:
    """Recompute the chain over `rows` (in order) and report the first row that breaks it."""
    head = GENESIS
    count = 0
    for row in rows:
        count += 1
        if row.prev_hash != head:
            return Verification(count, head, row.seq, "prev_hash is not the hash of the row before")
        expected = chain_hash(head, row.transaction)
        if row.hash != expected:
            return Verification(count, head, row.seq, "hash does not match the row's content")
        head = row.hash
    return Verification(count, head)


MICRO = Decimal("0.000001")
"""The ledger's unit: amounts are integers of millionths."""


@dataclass(frozen=True)
class Holding:
    """What a portfolio holds of one symbol: the quantity and its cost basis (average cost),
    both exact, in units of the symbol and of `currency`."""

    symbol: str
    currency: str
    quantity: Decimal
    cost_basis: Decimal


class Oversold(ValueError):
    """A sell of more than the portfolio holds (or a trade in another currency than its
    holding); `index` is the offending transaction's position in the sequence checked."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


def holdings(transactions: Iterable[Transaction]) -> dict[tuple[str, str], Holding]:
    """(portfolio, symbol) -> what the transactions, in order, leave held; symbols sold out
    are left out. Oversold when a sell exceeds the holding or changes its currency."""
    held: dict[tuple[str, str], Holding] = {}
    for index, t in enumerate(transactions):
        key = (t.portfolio, t.symbol)
        quantity = Decimal(t.quantity_micro) * MICRO
        before = held.get(key)
        if before is not None and before.currency != t.currency:
            raise Oversold(
                f"{t.symbol} is held in {before.currency} in portfolio {t.portfolio!r}, "
                f"not {t.currency}",
                index,
            )
        if t.side == "buy":
            cost = quantity * Decimal(t.price_micro) * MICRO
            if before is None:
                held[key] = Holding(t.symbol, t.currency, quantity, cost)
            else:
                held[key] = Holding(
                    t.symbol, t.currency, before.quantity + quantity, before.cost_basis + cost
                )
            continue
        if before is None or quantity > before.quantity:
            have = before.quantity if before is not None else Decimal(0)
            raise Oversold(
                f"sells {quantity} {t.symbol} but portfolio {t.portfolio!r} holds {have}",
                index,
            )
        left = before.quantity - quantity
        if left == 0:
            del held[key]
        else:
            # Average cost: the remaining shares keep their share of the cost basis.
            held[key] = Holding(
                t.symbol, t.currency, left, before.cost_basis * left / before.quantity
            )
    return held


_COLUMNS = "portfolio, trade_date, symbol, side, quantity_micro, price_micro, currency"


def _row(row: Row) -> ChainRow:
    return ChainRow(
        seq=row["seq"],
        transaction=Transaction(
            portfolio=row["portfolio"],
            trade_date=row["trade_date"],
            symbol=row["symbol"],
            side=row["side"],
            quantity_micro=row["quantity_micro"],
            price_micro=row["price_micro"],
            currency=row["currency"],
        ),
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


_HEAD = "SELECT hash FROM ledger_transactions ORDER BY seq DESC LIMIT 1"


async def _head(source: Tx | Database) -> str:
    head = await source.fetchval(_HEAD)
    return str(head) if head is not None else GENESIS


async def _insert(tx: Tx, transactions: Sequence[Transaction]) -> str:
    head = await _head(tx)
    now = datetime.datetime.now(datetime.UTC).isoformat()
    for transaction in transactions:
        new = chain_hash(head, transaction)
        await tx.execute(
            f"INSERT INTO ledger_transactions ({_COLUMNS}, prev_hash, hash, recorded_at) "  # noqa: S608 (constant columns)
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            *asdict(transaction).values(),
            head,
            new,
            now,
        )
        head = new
    return head


class Ledger:
    """The ledger in the runtime's database. The head is kept in memory (read at open, moved
    by this replica's writes, re-read every `HEAD_REFRESH_SECONDS` by `follow` to see other
    replicas' imports), so a run reads it without touching the disk."""

    def __init__(self, db: Database, head: str) -> None:
        self._db = db
        self._head = head
        # This process's writes and refreshes take turns, so a refresh that read the stored
        # head before a local append committed cannot move the head back after it.
        self._moving = asyncio.Lock()

    @classmethod
    async def open(cls, db: Database) -> Ledger:
        """The ledger stored in `db`, with its current head."""
        return cls(db, await _head(db))

    def head(self) -> str:
        """The latest hash: the commit a run reads positions at (GENESIS when empty)."""
        return self._head

    async def refresh(self) -> str:
        """Re-read the stored head (another replica may have appended since); the head."""
        async with self._moving:
            self._head = await _head(self._db)
        return self._head

    async def follow(self) -> None:
        """`refresh` every HEAD_REFRESH_SECONDS until cancelled (a background task); a failed
        read is logged and retried at the next tick."""
        while True:
            await asyncio.sleep(HEAD_REFRESH_SECONDS)
            try:
                await self.refresh()
            except Exception:
                log.exception("ledger head refresh failed")

    async def append(self, *transactions: Transaction) -> str:
        """Append `transactions` atomically, in order, after the stored head; the new head."""
        async with self._moving, self._db.transaction() as tx:
            await exclusive(self._db.dialect, tx, "ledger")
            head = await _insert(tx, transactions)
        self._head = head  # no await since the commit: a refresh cannot come between
        return head

    async def import_transactions(
        self, transactions: Sequence[Transaction], expected_head: str = ""
    ) -> tuple[str, str]:
        """Append `transactions` atomically after checking them against what is already held
        (Oversold, its `index` into `transactions`, when a sell exceeds a holding); (the head
        before, the head after). ABORTED LEDGER_HEAD_MOVED, nothing appended, when
        `expected_head` is set and is not the stored head."""
        portfolios = sorted({t.portfolio for t in transactions})
        async with self._moving, self._db.transaction() as tx:
            await exclusive(self._db.dialect, tx, "ledger")
            before = await _head(tx)
            if expected_head and expected_head != before:
                raise Aborted(
                    f"the ledger head is {before[:12]}…, not the expected {expected_head[:12]}…",
                    reason="LEDGER_HEAD_MOVED",
                    metadata={"ledgerCommitHash": before, "expectedHead": expected_head[:64]},
                )
            held: list[Transaction] = []
            for portfolio in portfolios:
                rows = await tx.fetch(
                    f"SELECT seq, {_COLUMNS}, prev_hash, hash FROM ledger_transactions "  # noqa: S608 (constant columns)
                    "WHERE portfolio = $1 ORDER BY seq",
                    portfolio,
                )
                held.extend(_row(r).transaction for r in rows)
            try:
                holdings([*held, *transactions])
            except Oversold as error:
                raise Oversold(str(error), error.index - len(held)) from None
            after = await _insert(tx, transactions)
        self._head = after
        return before, after

    async def seed(self, transactions: Sequence[Transaction]) -> bool:
        """Append `transactions` only if the ledger is empty (checked in the same exclusive
        transaction, so of several replicas starting together exactly one seeds); whether it
        did. Either way the head is then the stored one."""
        async with self._moving, self._db.transaction() as tx:
            await exclusive(self._db.dialect, tx, "ledger")
            seeded = await tx.fetchval("SELECT 1 FROM ledger_transactions LIMIT 1") is None
            head = await _insert(tx, transactions) if seeded else await _head(tx)
        self._head = head
        return seeded

    async def transactions_at(
        self, commit: str, portfolio: str, asof: str | None = None
    ) -> list[Transaction]:
        """The transactions of `portfolio` recorded up to and including `commit` (and traded
        on or before `asof`), in the order they were recorded; NOT_FOUND
        LEDGER_COMMIT_NOT_FOUND when `commit` is not a hash of this ledger."""
        if commit == GENESIS:
            return []
        seq = await self.commit_seq(commit)
        rows = await self._db.fetch(
            f"SELECT seq, {_COLUMNS}, prev_hash, hash FROM ledger_transactions "  # noqa: S608 (constant columns)
            "WHERE portfolio = $1 AND seq <= $2 AND trade_date <= $3 ORDER BY seq",
            portfolio,
            seq,
            asof or "9999-12-31",
        )
        return [_row(r).transaction for r in rows]

    async def commit_seq(self, commit: str) -> int:
        """The position in the chain of the row whose hash is `commit`; NOT_FOUND
        LEDGER_COMMIT_NOT_FOUND when it is not a hash of this ledger."""
        seq = None
        if len(commit) == len(GENESIS):
            seq = await self._db.fetchval(
                "SELECT seq FROM ledger_transactions WHERE hash = $1", commit
            )
        if seq is None:
            raise NotFound(
                f"ledger commit {commit[:64]!r} is not in the ledger",
                reason="LEDGER_COMMIT_NOT_FOUND",
                metadata={"ledgerCommitHash": commit[:64]},
            )
        return int(seq)

    async def rows(self) -> list[ChainRow]:
        """Every stored transaction, oldest first."""
        rows = await self._db.fetch(
            f"SELECT seq, {_COLUMNS}, prev_hash, hash FROM ledger_transactions ORDER BY seq"  # noqa: S608 (constant columns)
        )
        return [_row(r) for r in rows]

    async def verify(self) -> Verification:
        """Recompute the stored chain; `broken_seq` names the first row that breaks it."""
        return verify_chain(await self.rows())
