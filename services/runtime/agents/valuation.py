"""Portfolio arithmetic of the `financial_analyst` agent: valuing holdings with a pack's prices
and the metrics over them. Pure and exact: `Decimal` throughout, never a float.

How amounts travel between steps (JSON-safe, so they survive a protobuf Struct, whose numbers
are doubles): every amount of money or quantity is a decimal string with exactly six
fractional digits, the ledger's micro-unit precision (`"11493.500000"`); ratios (weights,
shares, the Herfindahl index, returns) are decimal strings rounded half-even to six places
(`"0.253112"`), each with an integer twin in basis points (`weight_bp`, `hhi_bp`: 0-10000)
for `when` conditions, which compare numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

SIX_PLACES = Decimal("0.000001")
_BASIS_POINTS = Decimal(10_000)
_DECIMAL = re.compile(r"-?\d{1,18}(\.\d{1,12})?")


def amount(value: Decimal) -> str:
    """`value` as a decimal string with six fractional digits (half-even)."""
    return str(value.quantize(SIX_PLACES, rounding=ROUND_HALF_EVEN))


def basis_points(ratio: Decimal) -> int:
    """`ratio` (1 = 100 %) in whole basis points, half-even."""
    return int((ratio * _BASIS_POINTS).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def parse_amount(value: Any) -> Decimal | None:
    """A decimal string (or an integer) as a Decimal; None when it is neither — floats
    included, since they would carry binary rounding into money."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        return Decimal(value)
    return None


@dataclass(frozen=True)
class Valued:
    """A holding valued at a price: quantity, cost basis and market value."""

    symbol: str
    currency: str
    quantity: Decimal
    cost_basis: Decimal
    price: Decimal
    price_source: str

    @property
    def market_value(self) -> Decimal:
        """Quantity times price."""
        return self.quantity * self.price

    @property
    def unrealised_pnl(self) -> Decimal:
        """Market value less cost basis."""
        return self.market_value - self.cost_basis

    def as_output(self) -> dict[str, Any]:
        """The position as `pricing.apply_pack` outputs it."""
        return {
            "symbol": self.symbol,
            "currency": self.currency,
            "quantity": amount(self.quantity),
            "cost_basis": amount(self.cost_basis),
            "price": amount(self.price),
            "price_source": self.price_source,
            "market_value": amount(self.market_value),
            "unrealised_pnl": amount(self.unrealised_pnl),
        }


@dataclass(frozen=True)
class Line:
    """What `metrics.compute` needs of one position."""

    symbol: str
    currency: str
    market_value: Decimal
    cost_basis: Decimal


def _ratio(part: Decimal, whole: Decimal) -> Decimal:
    return part / whole if whole else Decimal(0)


def metrics(
    lines: Sequence[Line], top_n: int, sectors: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Market value, cost basis, unrealised P&L and return, weights, concentration (the
    Herfindahl index: the sum of squared weights, 1 for a single holding) and the share of the
    `top_n` largest positions; by sector too when `sectors` (symbol → sector) is given.
    Every line must be in the same currency (the caller checks)."""
    total = sum((line.market_value for line in lines), Decimal(0))
    cost = sum((line.cost_basis for line in lines), Decimal(0))
    ranked = sorted(lines, key=lambda line: (-line.market_value, line.symbol))
    # Exact up to the one division: sum of squared values over the squared total.
    hhi = _ratio(sum((line.market_value**2 for line in lines), Decimal(0)), total * total)
    top = _ratio(sum((line.market_value for line in ranked[:top_n]), Decimal(0)), total)
    out: dict[str, Any] = {
        "currency": lines[0].currency if lines else "",
        "count": len(lines),
        "market_value": amount(total),
        "cost_basis": amount(cost),
        "unrealised_pnl": amount(total - cost),
        "unrealised_return": amount(_ratio(total - cost, cost)),
        "positions": [
            {
                "symbol": line.symbol,
                "market_value": amount(line.market_value),
                "unrealised_pnl": amount(line.market_value - line.cost_basis),
                "weight": amount(_ratio(line.market_value, total)),
                "weight_bp": basis_points(_ratio(line.market_value, total)),
            }
            for line in ranked
        ],
        "hhi": amount(hhi),
        "hhi_bp": basis_points(hhi),
        "top_n": top_n,
        "top_n_share": amount(top),
        "top_n_share_bp": basis_points(top),
    }
    if sectors is not None:
        out["sectors"] = _by_sector(ranked, total, sectors)
    return out


def _by_sector(
    lines: Iterable[Line], total: Decimal, sectors: Mapping[str, str]
) -> list[dict[str, Any]]:
    values: dict[str, Decimal] = {}
    for line in lines:
        sector = sectors.get(line.symbol, "unknown")
        values[sector] = values.get(sector, Decimal(0)) + line.market_value
    return [
        {
            "sector": sector,
            "market_value": amount(value),
            "weight": amount(_ratio(value, total)),
            "weight_bp": basis_points(_ratio(value, total)),
        }
        for sector, value in sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
