"""The `financial_analyst` agent: positions at the pinned ledger commit and asof, valued with
the pinned pack, and the metrics over them — exact decimals, schemas checked on both sides, on
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from services.common.database import open_database
from services.common.errors import FailedPrecondition, Internal, InvalidArgument, NotFound
from services.runtime import demo
from services.runtime.agents.financial_analyst import (
    LEDGER_POSITIONS,
    METRICS_COMPUTE,
    PRICING_APPLY_PACK,
    FinancialAnalyst,
)
from services.runtime.agents.local import LocalAgent
from services.runtime.agents.step import RunScope, StepCall, StepResult
from services.runtime.capabilities import PACK_SOURCE, Capability, FieldSpec
from services.runtime.ledger import GENESIS, Holding, Ledger, Oversold, Transaction, holdings
from services.runtime.packs import FRESH, PackStore, Price, new_pack
from services.runtime.schema import MIGRATIONS
from tests.conftest import Backend

M = 1_000_000


def scope(commit: str, pack_id: str = "", asof: str = "2024-12-31") -> RunScope:
    return RunScope(
        execution_id="exe_" + "0" * 32,
        pattern_id="portfolio_overview",
        user_id="usr_test",
        session_id="",
        asof=asof,
        context_token="",
        ledger_commit_hash=commit,
        pricing_pack_id=pack_id,
    )


async def run(agent: LocalAgent, capability: str, run_scope: RunScope, **args: Any) -> Any:
    results = [
        e
        async for e in agent.run(StepCall(run_scope, "s1", capability, args))
        if isinstance(e, StepResult)
    ]
    assert len(results) == 1
    return results[0].output


def test_holdings_use_average_cost_and_drop_sold_out_symbols() -> None:
    t = [
        Transaction("p", "2024-01-01", "A", "buy", 10 * M, 100 * M, "USD"),
        Transaction("p", "2024-01-02", "A", "buy", 10 * M, 200 * M, "USD"),
        Transaction("p", "2024-01-03", "A", "sell", 5 * M, 400 * M, "USD"),
        Transaction("p", "2024-01-03", "B", "buy", 1 * M, 1 * M, "USD"),
        Transaction("p", "2024-01-04", "B", "sell", 1 * M, 2 * M, "USD"),
    ]
    # 20 at an average of 150; selling 5 leaves 15 at 150 = 2250, whatever the sell price.
    assert holdings(t) == {("p", "A"): Holding("A", "USD", Decimal(15), Decimal(2250))}


def test_holdings_refuse_a_sell_of_more_than_is_held_and_a_currency_change() -> None:
    buy = Transaction("p", "2024-01-01", "A", "buy", 1 * M, 1 * M, "USD")
    with pytest.raises(Oversold, match="holds 1"):
        holdings([buy, Transaction("p", "2024-01-02", "A", "sell", 2 * M, 1 * M, "USD")])
    with pytest.raises(Oversold, match="held in USD"):
        holdings([buy, Transaction("p", "2024-01-02", "A", "buy", 1 * M, 1 * M, "EUR")])
    with pytest.raises(Oversold):
        holdings([Transaction("p", "2024-01-02", "A", "sell", 1 * M, 1 * M, "USD")])


@pytest.fixture
async def stores(backend: Backend, tmp_path: Path) -> AsyncIterator[tuple[Ledger, PackStore]]:
    db = await open_database(backend.url, backend.namespace, tmp_path, "runtime", MIGRATIONS)
    ledger = await Ledger.open(db)
    packs = await PackStore.open(db)
    await demo.seed(ledger, packs)
    yield ledger, packs
    await db.close()


async def test_positions_are_read_at_the_pinned_commit_and_asof(
    stores: tuple[Ledger, PackStore],
) -> None:
    ledger, packs = stores
    agent = FinancialAnalyst(ledger, packs).agent()
    seeded = ledger.head()
    await ledger.append(Transaction("demo", "2024-03-01", "AAPL", "sell", 75 * M, 1 * M, "USD"))

    at_seed = await run(agent, "ledger.positions", scope(seeded), portfolio="demo")
    assert at_seed["ledger_commit_hash"] == seeded
    assert [p["symbol"] for p in at_seed["positions"]] == ["AAPL", "MSFT", "NVDA", "VOO"]
    aapl = at_seed["positions"][0]
    # 50 at 185.64 plus 25 at 186.86, to the micro.
    assert aapl == {
        "symbol": "AAPL",
        "currency": "USD",
        "quantity": "75.000000",
        "cost_basis": "13953.500000",
    }
    after_sell = await run(agent, "ledger.positions", scope(ledger.head()), portfolio="demo")
    assert [p["symbol"] for p in after_sell["positions"]] == ["MSFT", "NVDA", "VOO"]
    # The asof cuts the trades after it: on 2024-01-03 only AAPL and MSFT were bought.
    early = await run(agent, "ledger.positions", scope(seeded, asof="2024-01-03"), portfolio="demo")
    assert [p["symbol"] for p in early["positions"]] == ["AAPL", "MSFT"]
    assert early["positions"][0]["quantity"] == "50.000000"


async def test_an_unknown_portfolio_or_commit_is_not_found(
    stores: tuple[Ledger, PackStore],
) -> None:
    ledger, packs = stores
    agent = FinancialAnalyst(ledger, packs).agent()
    with pytest.raises(NotFound) as caught:
        await run(agent, "ledger.positions", scope(ledger.head()), portfolio="dmeo")
    assert caught.value.reason == "PORTFOLIO_NOT_FOUND"
    with pytest.raises(NotFound) as caught:
        await run(agent, "ledger.positions", scope("f" * 64), portfolio="demo")
    assert caught.value.reason == "LEDGER_COMMIT_NOT_FOUND"
    with pytest.raises(NotFound):
        await run(agent, "ledger.positions", scope(GENESIS), portfolio="demo")


async def test_apply_pack_values_positions_with_the_pinned_pack(
    stores: tuple[Ledger, PackStore],
) -> None:
    ledger, packs = stores
    pinned = packs.latest()
    assert pinned is not None
    agent = FinancialAnalyst(ledger, packs).agent()
    run_scope = scope(ledger.head(), pinned.pack_id)
    positions = (await run(agent, "ledger.positions", run_scope, portfolio="demo"))["positions"]
    valued = await run(agent, "pricing.apply_pack", run_scope, positions=positions)
    assert valued["pricing_pack_id"] == pinned.pack_id
    assert valued["positions"][0] == {
        "symbol": "AAPL",
        "currency": "USD",
        "quantity": "75.000000",
        "cost_basis": "13953.500000",
        "price": "229.870000",
        "price_source": "demo-close",
        "market_value": "17240.250000",
        "unrealised_pnl": "3286.750000",
    }


async def test_a_held_symbol_the_pack_does_not_price_is_an_error_naming_it(
    stores: tuple[Ledger, PackStore],
) -> None:
    ledger, packs = stores
    agent = FinancialAnalyst(ledger, packs).agent()
    positions = [
        {"symbol": "AAPL", "currency": "USD", "quantity": "1", "cost_basis": "1"},
        {"symbol": "ZZZZ", "currency": "USD", "quantity": "1", "cost_basis": "1"},
    ]
    pinned = packs.latest()
    assert pinned is not None
    with pytest.raises(FailedPrecondition) as caught:
        await run(agent, "pricing.apply_pack", scope("", pinned.pack_id), positions=positions)
    assert caught.value.reason == "PRICE_MISSING"
    assert caught.value.metadata["symbols"] == "ZZZZ"
    assert "ZZZZ" in caught.value.message
    euro = [{"symbol": "AAPL", "currency": "EUR", "quantity": "1", "cost_basis": "1"}]
    with pytest.raises(FailedPrecondition) as caught:
        await run(agent, "pricing.apply_pack", scope("", pinned.pack_id), positions=euro)
    assert caught.value.reason == "PRICE_CURRENCY_MISMATCH"
    with pytest.raises(FailedPrecondition) as caught:
        await run(agent, "pricing.apply_pack", scope(""), positions=positions[:1])
    assert caught.value.reason == "PACK_NOT_PINNED"


async def test_apply_pack_reads_the_pinned_pack_not_the_newest(
    stores: tuple[Ledger, PackStore],
) -> None:
    ledger, packs = stores
    old = packs.latest()
    assert old is not None
    newer = new_pack("2099-01-01", "other", [Price("AAPL", 1 * M, "USD", "x")], FRESH)
    assert not await packs.seed(newer)  # not stored: the store already has a pack
    agent = FinancialAnalyst(ledger, packs).agent()
    one = [{"symbol": "AAPL", "currency": "USD", "quantity": "2", "cost_basis": "1"}]
    valued = await run(agent, "pricing.apply_pack", scope("", old.pack_id), positions=one)
    assert valued["positions"][0]["market_value"] == "459.740000"
    with pytest.raises(FailedPrecondition):
        await run(agent, "pricing.apply_pack", scope("", newer.pack_id), positions=one)


def valued(
    symbol: str, market_value: str, cost_basis: str, currency: str = "USD"
) -> dict[str, str]:
    return {
        "symbol": symbol,
        "currency": currency,
        "market_value": market_value,
        "cost_basis": cost_basis,
    }


async def test_metrics_compute_value_weights_pnl_and_concentration(
    stores: tuple[Ledger, PackStore],
) -> None:
    agent = FinancialAnalyst(*stores).agent()
    positions = [valued("A", "600", "500"), valued("B", "300", "400"), valued("C", "100", "100")]
    securities = [{"symbol": "A", "sector": "Tech"}, {"symbol": "B", "sector": "Tech"}]
    out = await run(
        agent, "metrics.compute", scope(""), positions=positions, top_n=2, securities=securities
    )
    assert out["market_value"] == "1000.000000"
    assert out["cost_basis"] == "1000.000000"
    assert out["unrealised_pnl"] == "0.000000"
    assert [p["symbol"] for p in out["positions"]] == ["A", "B", "C"]
    assert [p["weight"] for p in out["positions"]] == ["0.600000", "0.300000", "0.100000"]
    assert out["positions"][1]["unrealised_pnl"] == "-100.000000"
    # 0.6² + 0.3² + 0.1² = 0.46
    assert (out["hhi"], out["hhi_bp"]) == ("0.460000", 4600)
    assert (out["top_n"], out["top_n_share"], out["top_n_share_bp"]) == (2, "0.900000", 9000)
    assert out["sectors"] == [
        {"sector": "Tech", "market_value": "900.000000", "weight": "0.900000", "weight_bp": 9000},
        {
            "sector": "unknown",
            "market_value": "100.000000",
            "weight": "0.100000",
            "weight_bp": 1000,
        },
    ]
    single = await run(agent, "metrics.compute", scope(""), positions=[valued("A", "5", "4")])
    assert (single["hhi_bp"], single["top_n_share_bp"]) == (10000, 10000)
    assert single["unrealised_return"] == "0.250000"
    assert "sectors" not in single
    empty = await run(agent, "metrics.compute", scope(""), positions=[])
    assert (empty["market_value"], empty["hhi_bp"], empty["count"]) == ("0.000000", 0, 0)


async def test_metrics_refuse_floats_bad_positions_and_mixed_currencies(
    stores: tuple[Ledger, PackStore],
) -> None:
    agent = FinancialAnalyst(*stores).agent()
    bad: list[Any] = [
        {"symbol": "A", "currency": "USD", "market_value": 1.5, "cost_basis": "1"},
        "B",
    ]
    with pytest.raises(InvalidArgument) as caught:
        await run(agent, "metrics.compute", scope(""), positions=bad)
    assert caught.value.reason == "STEP_ARGS_INVALID"
    assert [v.field for v in caught.value.field_violations] == [
        "steps.s1.args.positions[0].market_value",
        "steps.s1.args.positions[1]",
    ]
    with pytest.raises(FailedPrecondition) as caught:
        await run(
            agent,
            "metrics.compute",
            scope(""),
            positions=[valued("A", "1", "1"), valued("B", "1", "1", "EUR")],
        )
    assert caught.value.reason == "CURRENCY_MIXED"


async def test_arguments_are_checked_against_the_capability_schema_before_the_step(
    stores: tuple[Ledger, PackStore],
) -> None:
    agent = FinancialAnalyst(*stores).agent()
    with pytest.raises(InvalidArgument) as caught:
        await run(agent, "ledger.positions", scope(""), portfolio=7, extra="x")
    fields = sorted(v.field for v in caught.value.field_violations)
    assert fields == ["steps.s1.args.extra", "steps.s1.args.portfolio"]
    with pytest.raises(InvalidArgument):
        await run(agent, "metrics.compute", scope(""))


async def test_an_output_that_breaks_its_schema_is_an_internal_error() -> None:
    broken = Capability(
        "x.broken", "x", "returns the wrong type", (), (FieldSpec("n", "integer", required=True),)
    )

    async def handler(call: StepCall, args: Mapping[str, Any]) -> Mapping[str, Any]:
        return {"n": "not a number"}

    with pytest.raises(Internal) as caught:
        await run(LocalAgent("x", {broken: handler}), "x.broken", scope(""))
    assert caught.value.reason == "STEP_OUTPUT_INVALID"


def test_each_capability_declares_the_sources_it_reads() -> None:
    assert LEDGER_POSITIONS.sources == ("ledger",)
    assert PRICING_APPLY_PACK.sources == (PACK_SOURCE,)
    assert METRICS_COMPUTE.sources == ()
