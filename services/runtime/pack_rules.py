"""Pricing packs: immutable, versioned sets of prices by symbol, each with its source — the
values and the rules, without storage (that is `packs.py`).

A pack's id is `PP_<asof>_<first 8 hex of its checksum>`; the checksum is the SHA-256 of the
pack's canonical content (asof, source, prices sorted by symbol), so the id names exactly one
content and publishing the same content twice is the same pack.

Lifecycle: a published pack is WARMING until reconciled against the ledger (`reconcile`:
every symbol held on its asof priced, every price positive, no symbol twice, the stored
content still matching its checksum), then FRESH or ERROR for good. STALE is not stored: it
is what a FRESH pack is when the run's asof is more than the maximum age after the pack's
(`status_at`), so the same pack is FRESH for a rerun of its own date and STALE for today.

Which pack serves an asof (`select`): the newest FRESH pack of that date (a newer pack
supersedes an older one only once FRESH); else the newest WARMING one (runs wait for it);
else its newest ERROR one (runs are refused); with no pack of that date at all, the newest
FRESH pack of an earlier date, flagged `carried_forward` (and STALE past the maximum age).
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from services.common.errors import FieldViolation, InvalidArgument
from services.runtime.ledger import Transaction

WARMING = "WARMING"
FRESH = "FRESH"
STALE = "STALE"
ERROR = "ERROR"
STATUSES = (WARMING, FRESH, STALE, ERROR)
STORED_STATUSES = (WARMING, FRESH, ERROR)

MAX_PRICES = 10_000
MAX_SYMBOL = 32
MAX_SOURCE = 64


@dataclass(frozen=True)
class Price:
    """The price of one symbol, in millionths of `currency`, and where it came from."""

    symbol: str
    price_micro: int
    currency: str
    source: str


@dataclass(frozen=True)
class Reconciliation:
    """What reconciling a pack against the ledger found."""

    reconciled_at: str
    held_symbols: int
    missing_symbols: tuple[str, ...] = ()
    non_positive_symbols: tuple[str, ...] = ()
    duplicate_symbols: tuple[str, ...] = ()
    checksum_mismatch: bool = False

    @property
    def passed(self) -> bool:
        """Whether no check failed."""
        return not (
            self.missing_symbols
            or self.non_positive_symbols
            or self.duplicate_symbols
            or self.checksum_mismatch
        )

    def to_json(self) -> str:
        """The summary as stored."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Reconciliation | None:
        """The stored summary; None for a pack not reconciled yet ('')."""
        if not text:
            return None
        data = json.loads(text)
        return cls(
            reconciled_at=str(data["reconciled_at"]),
            held_symbols=int(data["held_symbols"]),
            missing_symbols=tuple(data["missing_symbols"]),
            non_positive_symbols=tuple(data["non_positive_symbols"]),
            duplicate_symbols=tuple(data["duplicate_symbols"]),
            checksum_mismatch=bool(data["checksum_mismatch"]),
        )


@dataclass(frozen=True)
class PackHead:
    """A stored pack without its prices: what selection, health and listing read (so a run
    that pins a pack of 10,000 prices parses none of them). `status` is the stored one
    (WARMING, FRESH or ERROR)."""

    pack_id: str
    asof: str
    source: str
    status: str
    created_at: str
    checksum: str
    price_count: int
    reconciliation: Reconciliation | None = None
    ready_by: str = ""  # while WARMING: when it is expected to be reconciled (ISO 8601)


@dataclass(frozen=True)
class Pack(PackHead):
    """A stored pricing pack with its prices (sorted by symbol)."""

    prices: tuple[Price, ...] = ()


@dataclass(frozen=True)
class Health:
    """The pack serving an asof (or a pinned pack) and what it is for that date."""

    asof: str
    pack: PackHead | None = None
    status: str = ""  # "" when there is no pack
    carried_forward: bool = False

    @property
    def pack_id(self) -> str:
        """The pack's id; empty when there is none."""
        return self.pack.pack_id if self.pack is not None else ""


def pack_checksum(asof: str, source: str, prices: Iterable[Price]) -> str:
    """SHA-256 (hex) of the pack's canonical content."""
    content = {
        "asof": asof,
        "source": source,
        "prices": [asdict(p) for p in sorted(prices, key=lambda p: p.symbol)],
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def new_pack(
    asof: str,
    source: str,
    prices: Iterable[Price],
    status: str,
    now: datetime.datetime | None = None,
) -> Pack:
    """A pack (not yet stored) with its id and checksum computed from its content."""
    ordered = tuple(sorted(prices, key=lambda p: p.symbol))
    datetime.date.fromisoformat(asof)
    if status not in STORED_STATUSES:
        raise ValueError(f"status must be one of {STORED_STATUSES}, got {status!r}")
    checksum = pack_checksum(asof, source, ordered)
    return Pack(
        pack_id=f"PP_{asof}_{checksum[:8]}",
        asof=asof,
        source=source,
        status=status,
        created_at=(now or datetime.datetime.now(datetime.UTC)).isoformat(),
        checksum=checksum,
        price_count=len(ordered),
        prices=ordered,
    )


def _text_problem(value: str, limit: int, what: str) -> str:
    if not value:
        return f"{what} is required"
    if len(value) > limit:
        return f"at most {limit} characters"
    if not value.isprintable() or any(c.isspace() for c in value):
        return "printable characters without spaces"
    return ""


def check_publication(source: str, prices: Sequence[Price]) -> None:
    """Refuse a publication that is malformed (not one that merely fails reconciliation:
    a zero price or a symbol twice is stored, and the pack ends in ERROR saying so):
    INVALID_ARGUMENT PACK_INVALID with a violation per bad field."""
    violations: list[FieldViolation] = []
    if problem := _text_problem(source, MAX_SOURCE, "source"):
        violations.append(FieldViolation("source", problem))
    if not prices:
        violations.append(FieldViolation("prices", "at least one price"))
    elif len(prices) > MAX_PRICES:
        violations.append(FieldViolation("prices", f"at most {MAX_PRICES} prices"))
    for i, price in enumerate(prices[:MAX_PRICES]):
        if problem := _text_problem(price.symbol, MAX_SYMBOL, "symbol"):
            violations.append(FieldViolation(f"prices[{i}].symbol", problem))
        if len(price.currency) != 3 or not price.currency.isascii() or not price.currency.isupper():
            violations.append(FieldViolation(f"prices[{i}].currency", "an ISO 4217 code (USD)"))
        if price.source and (problem := _text_problem(price.source, MAX_SOURCE, "source")):
            violations.append(FieldViolation(f"prices[{i}].source", problem))
    if violations:
        raise InvalidArgument(
            f"invalid pack: {violations[0].field}: {violations[0].description}",
            reason="PACK_INVALID",
            field_violations=violations,
        )


def held_symbols(transactions: Iterable[Transaction], asof: str) -> set[str]:
    """Symbols some portfolio holds (net quantity above zero) with the trades up to `asof`."""
    net: dict[tuple[str, str], int] = {}
    for t in transactions:
        if t.trade_date <= asof:
            key = (t.portfolio, t.symbol)
            signed = t.quantity_micro if t.side == "buy" else -t.quantity_micro
            net[key] = net.get(key, 0) + signed
    return {symbol for (_, symbol), quantity in net.items() if quantity > 0}


def reconcile(pack: Pack, held: set[str], now: datetime.datetime) -> Reconciliation:
    """Check `pack` (as read back from storage) against the symbols the ledger holds."""
    seen: set[str] = set()
    duplicates: set[str] = set()
    for price in pack.prices:
        (duplicates if price.symbol in seen else seen).add(price.symbol)
    return Reconciliation(
        reconciled_at=now.isoformat(),
        held_symbols=len(held),
        missing_symbols=tuple(sorted(held - seen)),
        non_positive_symbols=tuple(sorted({p.symbol for p in pack.prices if p.price_micro <= 0})),
        duplicate_symbols=tuple(sorted(duplicates)),
        checksum_mismatch=pack_checksum(pack.asof, pack.source, pack.prices) != pack.checksum,
    )


def age_days(pack_asof: str, asof: str) -> int:
    """Days from the pack's date to `asof`."""
    return (datetime.date.fromisoformat(asof) - datetime.date.fromisoformat(pack_asof)).days


def status_at(stored: str, pack_asof: str, asof: str, max_age_days: int) -> str:
    """What a pack is for a run of `asof`: a FRESH pack more than `max_age_days` older is
    STALE; WARMING and ERROR stay what they are."""
    if stored == FRESH and age_days(pack_asof, asof) > max_age_days:
        return STALE
    return stored


def select(same_date: Sequence[PackHead]) -> PackHead | None:
    """The pack that serves a date, among the packs of that date (newest first): see the
    module docstring."""
    for wanted in (FRESH, WARMING, ERROR):
        for row in same_date:
            if row.status == wanted:
                return row
    return None
