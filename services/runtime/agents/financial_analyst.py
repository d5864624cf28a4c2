"""The `financial_analyst` agent: positions from the ledger, valued with the pricing pack, and
the portfolio's metrics — all at what the run pinned, so a rerun with the same commit and pack
gives the same numbers.

- `ledger.positions` — the holdings of a portfolio at the run's ledger commit, traded on or
  before its asof (NOT_FOUND PORTFOLIO_NOT_FOUND when the portfolio has no transactions there).
- `pricing.apply_pack` — those positions valued with the run's pack; a held symbol the pack
  does not price is FAILED_PRECONDITION PRICE_MISSING naming it (PRICE_CURRENCY_MISMATCH when
  it is priced in another currency).
- `metrics.compute` — market value, cost basis, unrealised P&L, weights, the Herfindahl index
  and the top-N share (see `valuation.metrics`); one currency per run (CURRENCY_MIXED).

Amounts are exact decimal strings (see `valuation`'s module doc for the format).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from services.common.errors import FailedPrecondition, NotFound
from services.runtime.agents.local import LocalAgent, step_args_invalid
from services.runtime.agents.step import StepCall
from services.runtime.agents.valuation import Line, Valued, amount, metrics, parse_amount
from services.runtime.capabilities import PACK_SOURCE, Capability, FieldSpec
from services.runtime.ledger import Ledger, holdings
from services.runtime.packs import Pack, PackStore

LEDGER_SOURCE = "ledger"
"""The rights registry's id of the ledger."""

MAX_POSITIONS = 10_000
_CACHED_PACKS = 8

_POSITIONS = FieldSpec(
    "positions",
    "array",
    required=True,
    max_length=MAX_POSITIONS,
    description="positions: symbol, currency, quantity and cost_basis (decimal strings)",
)

LEDGER_POSITIONS = Capability(
    name="ledger.positions",
    agent="financial_analyst",
    description="Holdings of a portfolio at the run's pinned ledger commit and asof.",
    args=(FieldSpec("portfolio", "string", required=True, max_length=64),),
    outputs=(
        FieldSpec("portfolio", "string", required=True),
        FieldSpec("ledger_commit_hash", "string", required=True),
        FieldSpec("asof", "string", required=True),
        _POSITIONS,
    ),
    retry_safe=True,
    sources=(LEDGER_SOURCE,),
)

PRICING_APPLY_PACK = Capability(
    name="pricing.apply_pack",
    agent="financial_analyst",
    description="Value positions with the run's pinned pricing pack.",
    args=(_POSITIONS,),
    outputs=(
        FieldSpec("pricing_pack_id", "string", required=True),
        FieldSpec("asof", "string", required=True, description="the pack's asof"),
        FieldSpec(
            "positions",
            "array",
            required=True,
            description="each with price, price_source, market_value and unrealised_pnl",
        ),
    ),
    retry_safe=True,
    sources=(PACK_SOURCE,),
)

METRICS_COMPUTE = Capability(
    name="metrics.compute",
    agent="financial_analyst",
    description=(
        "Market value, weights, unrealised P&L and concentration (Herfindahl index, top-N "
        "share) of valued positions; by sector when securities are given."
    ),
    args=(
        FieldSpec(
            "positions",
            "array",
            required=True,
            max_length=MAX_POSITIONS,
            description="valued positions (pricing.apply_pack's)",
        ),
        FieldSpec("top_n", "integer", description="how many largest positions (default 3)"),
        FieldSpec(
            "securities",
            "array",
            description="reference records with symbol and sector (data.lookup's)",
        ),
    ),
    outputs=(
        FieldSpec("currency", "string", required=True),
        FieldSpec("count", "integer", required=True),
        FieldSpec("market_value", "string", required=True),
        FieldSpec("cost_basis", "string", required=True),
        FieldSpec("unrealised_pnl", "string", required=True),
        FieldSpec("unrealised_return", "string", required=True),
        FieldSpec("positions", "array", required=True),
        FieldSpec("hhi", "string", required=True, description="Herfindahl index, 0..1"),
        FieldSpec("hhi_bp", "integer", required=True, description="the same in basis points"),
        FieldSpec("top_n", "integer", required=True),
        FieldSpec("top_n_share", "string", required=True),
        FieldSpec("top_n_share_bp", "integer", required=True),
        FieldSpec("sectors", "array", description="weights by sector (with securities)"),
    ),
    retry_safe=True,
)


def _decode(
    items: list[Any], field: str, required: tuple[str, ...]
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Each item of `items` as {name: str or Decimal}; the problems by `field[i].name`."""
    decoded: list[dict[str, Any]] = []
    problems: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            problems.append((f"{field}[{i}]", "expected an object"))
            continue
        out: dict[str, Any] = {}
        for name in required:
            value = item.get(name)
            if name in ("symbol", "currency"):
                ok = isinstance(value, str) and 0 < len(value) <= 32
                out[name] = value
            else:
                out[name] = parse_amount(value)
                ok = out[name] is not None
            if not ok:
                kind = "a non-empty string" if name in ("symbol", "currency") else "a decimal"
                problems.append((f"{field}[{i}].{name}", f"expected {kind}"))
        decoded.append(out)
    return decoded, problems


class FinancialAnalyst:
    """The three capabilities over the runtime's ledger and pack store."""

    def __init__(self, ledger: Ledger, packs: PackStore) -> None:
        self._ledger = ledger
        self._packs = packs
        # Packs are immutable: a pinned one is read from the database once.
        self._pack_cache: OrderedDict[str, Pack] = OrderedDict()

    def agent(self) -> LocalAgent:
        """The agent to register."""
        return LocalAgent(
            "financial_analyst",
            {
                LEDGER_POSITIONS: self.positions,
                PRICING_APPLY_PACK: self.apply_pack,
                METRICS_COMPUTE: self.metrics,
            },
        )

    async def positions(self, call: StepCall, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """`ledger.positions`."""
        portfolio = args["portfolio"]
        commit = call.run.ledger_commit_hash
        transactions = await self._ledger.transactions_at(commit, portfolio, call.run.asof)
        if not transactions:
            raise NotFound(
                f"portfolio {portfolio!r} has no transactions at ledger commit "
                f"{commit[:12]} up to {call.run.asof}",
                reason="PORTFOLIO_NOT_FOUND",
                metadata={"portfolio": portfolio, "stepId": call.step_id},
            )
        held = holdings(transactions)
        return {
            "portfolio": portfolio,
            "ledger_commit_hash": commit,
            "asof": call.run.asof,
            "positions": [
                {
                    "symbol": h.symbol,
                    "currency": h.currency,
                    "quantity": amount(h.quantity),
                    "cost_basis": amount(h.cost_basis),
                }
                for h in sorted(held.values(), key=lambda h: h.symbol)
            ],
        }

    async def _pinned_pack(self, call: StepCall) -> Pack:
        pack_id = call.run.pricing_pack_id
        pack = self._pack_cache.get(pack_id)
        if pack is None:
            pack = await self._packs.get(pack_id) if pack_id else None
            if pack is None:
                raise FailedPrecondition(
                    "the run has no pricing pack to value positions with"
                    + (f" ({pack_id} is not stored)" if pack_id else ""),
                    reason="PACK_NOT_PINNED",
                    metadata={"stepId": call.step_id, "packId": pack_id},
                )
            self._pack_cache[pack_id] = pack
            if len(self._pack_cache) > _CACHED_PACKS:
                self._pack_cache.popitem(last=False)
        return pack

    async def apply_pack(self, call: StepCall, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """`pricing.apply_pack`."""
        lines, problems = _decode(
            args["positions"], "positions", ("symbol", "currency", "quantity", "cost_basis")
        )
        if problems:
            raise step_args_invalid(call, problems)
        pack = await self._pinned_pack(call)
        prices = {p.symbol: p for p in pack.prices}
        missing = sorted({line["symbol"] for line in lines} - prices.keys())
        if missing:
            raise FailedPrecondition(
                f"pack {pack.pack_id} has no price for {', '.join(missing[:10])}"
                + (f" and {len(missing) - 10} more" if len(missing) > 10 else ""),
                reason="PRICE_MISSING",
                metadata={
                    "symbols": ",".join(missing[:50]),
                    "packId": pack.pack_id,
                    "stepId": call.step_id,
                },
            )
        valued = []
        for line in lines:
            price = prices[line["symbol"]]
            if price.currency != line["currency"]:
                raise FailedPrecondition(
                    f"pack {pack.pack_id} prices {price.symbol} in {price.currency}, but it "
                    f"is held in {line['currency']}",
                    reason="PRICE_CURRENCY_MISMATCH",
                    metadata={"symbol": price.symbol, "packId": pack.pack_id},
                )
            valued.append(
                Valued(
                    symbol=line["symbol"],
                    currency=line["currency"],
                    quantity=line["quantity"],
                    cost_basis=line["cost_basis"],
                    price=Decimal(price.price_micro).scaleb(-6),
                    price_source=price.source,
                )
            )
        return {
            "pricing_pack_id": pack.pack_id,
            "asof": pack.asof,
            "positions": [v.as_output() for v in valued],
        }

    async def metrics(self, call: StepCall, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """`metrics.compute`."""
        decoded, problems = _decode(
            args["positions"], "positions", ("symbol", "currency", "market_value", "cost_basis")
        )
        top_n = args.get("top_n", 3)
        if top_n < 1:
            problems.append(("top_n", "expected at least 1"))
        sectors: dict[str, str] | None = None
        if "securities" in args:
            sectors = {}
            for i, record in enumerate(args["securities"]):
                if not isinstance(record, Mapping) or not isinstance(record.get("symbol"), str):
                    problems.append((f"securities[{i}]", "expected an object with a symbol"))
                    continue
                sectors[record["symbol"]] = str(record.get("sector") or "unknown")
        if problems:
            raise step_args_invalid(call, problems)
        currencies = sorted({d["currency"] for d in decoded})
        if len(currencies) > 1:
            raise FailedPrecondition(
                f"positions are in {', '.join(currencies)}; metrics need one currency "
                "(there is no FX conversion)",
                reason="CURRENCY_MIXED",
                metadata={"currencies": ",".join(currencies[:10]), "stepId": call.step_id},
            )
        lines = [
            Line(d["symbol"], d["currency"], d["market_value"], d["cost_basis"]) for d in decoded
        ]
        return metrics(lines, top_n, sectors)
