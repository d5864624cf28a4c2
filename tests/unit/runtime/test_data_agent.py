"""The `data` agent: the shipped reference datasets load, and `data.lookup` returns records by
key in the order asked, lists the keys it does not know, and refuses what it cannot read."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.errors import InvalidArgument, NotFound
from services.runtime import demo
from services.runtime.agents.data import data_agent, load_datasets, parse_dataset
from services.runtime.agents.local import LocalAgent
from services.runtime.agents.step import RunScope, StepCall, StepResult

SCOPE = RunScope(
    execution_id="exe_" + "0" * 32,
    pattern_id="p",
    user_id="usr_test",
    session_id="",
    asof="2024-12-31",
    context_token="",
)


async def lookup(agent: LocalAgent, **args: Any) -> Any:
    events = [e async for e in agent.run(StepCall(SCOPE, "ref", "data.lookup", args))]
    assert len(events) == 1
    assert isinstance(events[0], StepResult)
    return events[0].output


def test_the_securities_dataset_covers_every_demo_symbol() -> None:
    securities = load_datasets()["securities"]
    assert securities.key == "symbol"
    assert {"sector", "currency", "name"} <= set(securities.columns)
    for t in demo.TRANSACTIONS:
        assert securities.records[t.symbol]["currency"] == t.currency


async def test_lookup_returns_records_in_order_and_lists_missing_keys() -> None:
    agent = data_agent(load_datasets())
    out = await lookup(agent, dataset="securities", keys=["NVDA", "NOPE", "AAPL", "NVDA"])
    assert out["dataset"] == "securities"
    assert [r["symbol"] for r in out["records"]] == ["NVDA", "AAPL"]
    assert out["records"][0]["sector"] == "Information Technology"
    assert out["missing"] == ["NOPE"]


async def test_lookup_takes_objects_that_carry_the_key_column() -> None:
    agent = data_agent(load_datasets())
    positions = [{"symbol": "VOO", "quantity": "40.000000"}]
    out = await lookup(agent, dataset="securities", keys=positions)
    assert out["records"][0]["sector"] == "Broad Market"


async def test_lookup_refuses_an_unknown_dataset_and_keys_it_cannot_read() -> None:
    agent = data_agent(load_datasets())
    with pytest.raises(NotFound) as caught:
        await lookup(agent, dataset="nope", keys=["A"])
    assert caught.value.reason == "DATASET_NOT_FOUND"
    with pytest.raises(InvalidArgument) as bad:
        await lookup(agent, dataset="securities", keys=[7, {"ticker": "A"}])
    assert [v.field for v in bad.value.field_violations] == [
        "steps.ref.args.keys[0]",
        "steps.ref.args.keys[1]",
    ]


def test_a_malformed_dataset_names_its_line() -> None:
    with pytest.raises(ValueError, match="line 3: 1 fields"):
        parse_dataset("d", "k,v\na,1\nb\n")
    with pytest.raises(ValueError, match="line 3: key 'a' appears twice"):
        parse_dataset("d", "k,v\na,1\na,2\n")
    with pytest.raises(ValueError, match="header"):
        parse_dataset("d", "k,k\n")


def test_lookup_declares_every_dataset_as_a_source() -> None:
    (capability,) = data_agent(load_datasets()).capabilities
    assert capability.sources == ("securities",)
