"""The demo portfolio and pricing pack seeded on first start, so a fresh install runs every
sample pattern and every run carries a real ledger commit and pack id.

The transactions are fixed, so every fresh install reaches the same ledger head.
"""

from __future__ import annotations

import datetime
import logging

from services.runtime.ledger import Ledger, Transaction
from services.runtime.packs import FRESH, PackStore, Price, new_pack

log = logging.getLogger("saga.runtime.demo")

PORTFOLIO = "demo"
SOURCE = "demo"

_MICRO = 1_000_000

TRANSACTIONS = (
    Transaction(PORTFOLIO, "2024-01-02", "AAPL", "buy", 50 * _MICRO, 185_640_000, "USD"),
    Transaction(PORTFOLIO, "2024-01-03", "MSFT", "buy", 30 * _MICRO, 370_600_000, "USD"),
    Transaction(PORTFOLIO, "2024-01-04", "NVDA", "buy", 20 * _MICRO, 479_980_000, "USD"),
    Transaction(PORTFOLIO, "2024-01-05", "VOO", "buy", 40 * _MICRO, 429_140_000, "USD"),
    Transaction(PORTFOLIO, "2024-02-01", "AAPL", "buy", 25 * _MICRO, 186_860_000, "USD"),
)
"""A few buys of real symbols (prices in millionths of a dollar)."""

PRICES = (
    Price("AAPL", 229_870_000, "USD", "demo-close"),
    Price("MSFT", 417_140_000, "USD", "demo-close"),
    Price("NVDA", 124_580_000, "USD", "demo-close"),
    Price("VOO", 531_250_000, "USD", "demo-close"),
)
"""A price for every symbol the demo portfolio holds."""


async def seed(ledger: Ledger, packs: PackStore, today: datetime.date | None = None) -> None:
    """Seed the demo ledger where still empty, and a FRESH demo pack as of `today` (UTC)
    unless an operator published a pack or today's demo pack exists (see `PackStore.seed`)."""
    if await ledger.seed(TRANSACTIONS):
        log.info("demo ledger seeded", extra={"head": ledger.head()})
    asof = (today or datetime.datetime.now(datetime.UTC).date()).isoformat()
    if await packs.seed(new_pack(asof, SOURCE, PRICES, FRESH)):
        latest = packs.latest()
        log.info("demo pack seeded", extra={"pack_id": latest.pack_id if latest else ""})
