"""The durable outbox over real processes: with the optimizer stopped mid-run, streams still
complete, their outcomes wait in the router's database — through a router crash too — and
once the optimizer is back every outcome reaches its ledger exactly once."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from pathlib import Path

from saga.execution.v1 import records_pb2
from saga.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
from services.common.status import describe
from tests.harness import Stack, stack_for
from tests.integration.test_router_resilience import call

PROVIDERS = """
[[providers]]
name = "steady"
kind = "sim"
model = "sim-steady"
input_micro_usd_per_mtok = 1_000_000
output_micro_usd_per_mtok = 2_000_000
[providers.sim]
token_interval_ms = 40
tokens = 10
"""


def outbox_rows(data_dir: Path) -> int:
    """Rows waiting in the router's outbox (read from its SQLite file)."""
    with sqlite3.connect(data_dir / "router.db") as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


async def ledger_calls(stack: Stack, user: str) -> records_pb2.UsageRow:
    async with stack.channel_as("gateway", "optimizer") as ch:
        reply = await optimizer_pb2_grpc.OptimizerServiceStub(ch).GetUsage(
            optimizer_pb2.GetUsageRequest(user_id=user), timeout=5
        )
    return reply.totals


async def test_outcomes_survive_an_optimizer_outage_and_a_router_crash(tmp_path: Path) -> None:
    user = "usr_outbox_" + secrets.token_hex(4)
    async with stack_for(tmp_path, ["auth", "optimizer", "router"], config=PROVIDERS) as stack:
        async with stack.channel_as("runtime", "router") as ch:
            # Streams in flight when the optimizer goes down, and more while it is down.
            running = [
                asyncio.create_task(
                    call(stack, ch, f"question {i}", user, pinned_provider="steady")
                )
                for i in range(3)
            ]
            await asyncio.sleep(0.1)  # they have started streaming
            assert await asyncio.to_thread(stack.stop, "optimizer") == 0
            later = [
                await call(stack, ch, f"later {i}", user, pinned_provider="steady")
                for i in range(2)
            ]
            results = [*(await asyncio.gather(*running)), *later]
        assert all(r.error is None for r in results), [
            describe(r.error) for r in results if r.error
        ]
        assert all(r.kinds()[-1] == "final" for r in results)
        assert outbox_rows(stack.data_dir) >= 2  # at least the calls made while it was down

        # The router dies without a chance to flush anything; the rows are on disk.
        stack.processes["router"].kill()
        stack.processes["router"].wait()
        stack.start("optimizer")
        stack.start("router")
        await stack.wait_serving("optimizer")
        await stack.wait_serving("router")

        for _ in range(300):
            if outbox_rows(stack.data_dir) == 0:
                break
            await asyncio.sleep(0.05)
        assert outbox_rows(stack.data_dir) == 0
        totals = await ledger_calls(stack, user)
        assert totals.calls == 5  # every attempt once: nothing lost, nothing doubled
        assert totals.output_tokens == 5 * 10
        # The optimizer's log (both of its lives) names each stored outcome once.
        recorded = [
            json.loads(line)["outcome_id"]
            for line in stack.read_log("optimizer").splitlines()
            if '"outcome recorded"' in line
        ]
        assert len(recorded) == len(set(recorded)) == 5, recorded
