"""`saga packs publish FILE`: JSON and CSV pack files read into a PublishPack request with
prices in exact millionths; a file that is not a pack is one clear error; `saga execute`
pins a pack and a ledger commit."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.cli.__main__ import parser
from clients.cli.execute import execute_options
from clients.cli.packs import PackFileError, read_pack


def test_a_json_pack_is_read_with_exact_prices(tmp_path: Path) -> None:
    path = tmp_path / "pack.json"
    path.write_text(
        '{"asof": "2026-12-01", "source": "feed", "prices": ['
        '{"symbol": "AAPL", "price": 229.87, "currency": "USD", "source": "nasdaq"},'
        '{"symbol": "VOO", "price": "531.250001"},'
        '{"symbol": "X", "price_micro": 5, "currency": "EUR"}]}'
    )
    request = read_pack(path)
    assert (request.asof, request.source) == ("2026-12-01", "feed")
    assert [(p.symbol, p.price_micro, p.currency, p.source) for p in request.prices] == [
        ("AAPL", 229_870_000, "USD", "nasdaq"),
        ("VOO", 531_250_001, "USD", ""),
        ("X", 5, "EUR", ""),
    ]
    assert read_pack(path, asof="2026-12-02").asof == "2026-12-02"


def test_a_csv_pack_takes_its_date_and_source_from_the_options(tmp_path: Path) -> None:
    path = tmp_path / "pack.csv"
    path.write_text("symbol,price,currency,source\nAAPL,229.87,USD,\nMSFT,417.14,USD,lse\n")
    request = read_pack(path, asof="2026-12-01", source="close")
    assert [(p.symbol, p.price_micro, p.source) for p in request.prices] == [
        ("AAPL", 229_870_000, ""),
        ("MSFT", 417_140_000, "lse"),
    ]
    with pytest.raises(PackFileError, match="asof and source"):
        read_pack(path)


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("p.json", "{", "not JSON"),
        ("p.json", '{"prices": 3}', "expected"),
        ("p.json", '{"asof": "d", "source": "s", "prices": [{"symbol": "A"}]}', "no price"),
        ("p.csv", "symbol,price\nA,1.0000001\n", "more than 6 decimal places"),
        ("p.csv", "symbol,price\nA,lots\n", "not a number"),
        ("p.csv", "name,value\nA,1\n", "header row"),
        ("p.txt", "", ".json or .csv"),
    ],
)
def test_a_file_that_is_not_a_pack_is_named(
    tmp_path: Path, name: str, text: str, problem: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PackFileError, match=problem):
        read_pack(path, asof="2026-12-01", source="s")


def test_execute_pins_a_pack_and_a_commit() -> None:
    args = parser().parse_args(
        ["execute", "chat", "--pack", "PP_x", "--commit", "ab" * 32, "--allow-stale"]
    )
    options = execute_options(args)
    assert (options.pricing_pack_id, options.ledger_commit_hash) == ("PP_x", "ab" * 32)
    assert options.allow_stale_pack
    plain = execute_options(parser().parse_args(["execute", "chat"]))
    assert (plain.pricing_pack_id, plain.ledger_commit_hash, plain.allow_stale_pack) == (
        "",
        "",
        False,
    )
