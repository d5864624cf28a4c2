"""The shipped portfolio samples through the gateway, on the stack a fresh install starts (the
demo ledger and pack, the simulator): `portfolio_overview` runs positions → prices (beside the
reference lookup) → metrics → an LLM summary and answers exact figures; `portfolio_risk` takes
the concentrated branch for the demo portfolio and the diversified one when the threshold is
raised, the other branch reported skipped; `saga execute portfolio_overview --input
portfolio=demo` prints the run as a new user would."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from saga.gateway.v1 import execution_pb2, execution_pb2_grpc
from tests.e2e.test_cli import ok, saga_cli
from tests.e2e.test_execute import bearer
from tests.e2e.test_executions import node
from tests.harness import Stack


async def run(stack: Stack, pattern: str, **inputs: Any) -> list[execution_pb2.ExecuteResponse]:
    values = struct_pb2.Struct()
    values.update(inputs)
    async with stack.gateway_channel() as ch:
        call = execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
            execution_pb2.ExecuteRequest(pattern_id=pattern, inputs=values),
            metadata=bearer(stack.admin_key()),
            timeout=60,
        )
        try:
            return [e async for e in call]
        except grpc.aio.AioRpcError as error:
            raise AssertionError(f"{pattern} failed: {error.details()}") from error


def outputs(events: list[execution_pb2.ExecuteResponse]) -> dict[str, Any]:
    assert events[-1].WhichOneof("event") == "completed", events[-1]
    return json_format.MessageToDict(events[-1].completed.outputs)


def steps(events: list[execution_pb2.ExecuteResponse], kind: str) -> list[str]:
    return sorted(getattr(e, kind).step_id for e in events if e.WhichOneof("event") == kind)


async def test_portfolio_overview_values_the_demo_portfolio_and_summarises_it(
    stack: Stack,
) -> None:
    events = await run(stack, "portfolio_overview", portfolio="demo")
    assert steps(events, "step_completed") == [
        "metrics",
        "positions",
        "reference",
        "summary",
        "valued",
    ]
    out = outputs(events)
    # The demo pack: 75 AAPL at 229.87, 30 MSFT at 417.14, 20 NVDA at 124.58, 40 VOO at 531.25.
    assert out["market_value"] == "53496.050000"
    assert out["cost_basis"] == "51836.700000"
    assert out["unrealised_pnl"] == "1659.350000"
    assert [p["symbol"] for p in out["positions"]] == ["VOO", "AAPL", "MSFT", "NVDA"]
    assert out["sectors"][0]["sector"] == "Information Technology"
    assert out["summary"]
    completed = events[-1].completed
    assert sorted(a.source for a in completed.attributions) == ["demo", "ledger", "securities"]


async def test_portfolio_risk_takes_one_branch_by_concentration(stack: Stack) -> None:
    concentrated = await run(stack, "portfolio_risk", portfolio="demo")
    assert steps(concentrated, "step_skipped") == ["brief"]
    out = outputs(concentrated)
    assert out["hhi_bp"] > 2500
    assert out["risk"]

    diversified = await run(stack, "portfolio_risk", portfolio="demo", threshold_bp=9000)
    assert steps(diversified, "step_skipped") == ["risk"]
    assert outputs(diversified)["brief"]


def test_saga_execute_portfolio_overview_as_the_readme_says(stack: Stack) -> None:
    run = saga_cli(stack, "execute", "portfolio_overview", "--input", "portfolio=demo")
    printed = ok(run)
    # Its steps as they run (stderr), the summary's tokens and then its figures (stdout).
    steps = [line for line in run.stderr.splitlines() if line.startswith("[step ")]
    started = [line.split(":")[0].removeprefix("[step ") for line in steps if ": " in line]
    assert set(started) >= {"positions", "valued", "metrics", "summary"}, run.stderr
    assert any(line.startswith("[step metrics done in ") for line in steps), run.stderr
    figures = dict(
        line.split(": ", 1)
        for line in printed.splitlines()
        if line.split(": ", 1)[0]
        in (
            "market_value",
            "unrealised_pnl",
            "hhi",
        )
    )
    assert set(figures) == {"market_value", "unrealised_pnl", "hhi"}, printed
    assert float(figures["market_value"]) > 0


async def test_the_node_client_runs_portfolio_overview(stack: Stack) -> None:
    lines = await node(stack, "execute.js", "portfolio_overview", "portfolio=demo")
    started = [line["step_started"]["step_id"] for line in lines if line["event"] == "step_started"]
    assert set(started) == {"positions", "valued", "reference", "metrics", "summary"}
    completed = lines[-1]
    assert completed["event"] == "completed"
    figures = completed["completed"]["outputs"]["fields"]  # type: ignore[index]
    assert figures["market_value"]["stringValue"] == "53496.050000"
    assert figures["summary"]["stringValue"]
