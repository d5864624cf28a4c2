"""The durable outbox over real processes: with the optimizer stopped mid-run, streams still
complete, their outcomes wait in the router's database — through a router crash too — and
once the optimizer is back every outcome reaches its ledger exactly once."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from pathlib import Path

import aiohttp
import grpc

from saga.execution.v1 import records_pb2
from saga.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
from saga.router.v1 import router_pb2, router_pb2_grpc
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


async def router_metrics(stack: Stack) -> dict[str, float]:
    """The router's unlabelled Prometheus samples."""
    url = f"http://127.0.0.1:{stack.ports['router'].metrics_port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    samples = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if line.startswith("saga_router_outbox") and "{" not in name:
            samples[name] = float(value)
    return samples


async def outbox_status(stack: Stack) -> router_pb2.OutboxStatus:
    async with stack.channel_as("gateway", "router") as ch:
        reply = await router_pb2_grpc.RouterServiceStub(ch).ListProviders(
            router_pb2.ListProvidersRequest(), timeout=5
        )
    return reply.outbox


def poison(data_dir: Path, outcome_id: str) -> None:
    """Put, at the head of the router's outbox, an outcome the optimizer refuses: a user id
    over its 256-character bound (as a router without the shared bound stored them)."""
    bad = optimizer_pb2.Outcome(
        outcome_id=outcome_id,
        user_id="u" * 300,
        execution_id=outcome_id.split(":")[0],
        provider="steady",
        model="sim-steady",
        status=optimizer_pb2.OUTCOME_STATUS_SUCCEEDED,
    )
    with sqlite3.connect(data_dir / "router.db") as db:
        db.execute(
            "INSERT INTO outbox (outcome_id, payload, traceparent, created_at) "
            "VALUES (?, ?, '', 0)",
            (outcome_id, bad.SerializeToString()),
        )


def dead_letters(data_dir: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(data_dir / "router.db") as db:
        return [
            (str(i), str(p))
            for i, p in db.execute("SELECT outcome_id, problem FROM outbox_dead_letters")
        ]


GOOD_CALLS = 10  # more than the outbox's `traced_groups`


async def test_a_poisoned_outcome_never_delays_the_others(tmp_path: Path) -> None:
    user = "usr_poison_" + secrets.token_hex(4)
    async with stack_for(tmp_path, ["auth", "optimizer", "router"], config=PROVIDERS) as stack:
        async with stack.channel_as("runtime", "router") as ch:
            # A user id the optimizer could never record is refused before any provider call
            # (the same bound on both sides: `services.common.outcome_bounds`).
            refused = await call(stack, ch, "hello", "u" * 300, pinned_provider="steady")
            assert refused.error is not None
            assert refused.error.code() == grpc.StatusCode.INVALID_ARGUMENT
            info = describe(refused.error)
            assert info.reason == "ACCOUNTING_INVALID"
            assert [v.field for v in info.field_violations] == ["accounting.user_id"]

        # One such outcome is already stored (by an older router) at the head of the queue,
        # and a backlog builds behind it while the optimizer is down: more calls than are
        # shipped one RecordOutcomes call each, so they go in one batch with it.
        assert await asyncio.to_thread(stack.stop, "router") == 0
        assert await asyncio.to_thread(stack.stop, "optimizer") == 0
        poison(stack.data_dir, "exe_poison:answer:0000:1")
        stack.start("router")
        await stack.wait_serving("router")
        async with stack.channel_as("runtime", "router") as ch:
            results = await asyncio.gather(
                *(
                    call(stack, ch, f"question {i}", user, pinned_provider="steady")
                    for i in range(GOOD_CALLS)
                )
            )
        assert all(r.error is None for r in results), [
            describe(r.error) for r in results if r.error
        ]
        assert outbox_rows(stack.data_dir) == GOOD_CALLS + 1
        stack.start("optimizer")
        await stack.wait_serving("optimizer")
        for _ in range(200):
            if outbox_rows(stack.data_dir) == 0:
                break
            await asyncio.sleep(0.05)
        assert outbox_rows(stack.data_dir) == 0  # the backlog is back to nothing
        totals = await ledger_calls(stack, user)
        assert (totals.calls, totals.output_tokens) == (GOOD_CALLS, GOOD_CALLS * 10)  # each once
        assert dead_letters(stack.data_dir) == [
            ("exe_poison:answer:0000:1", "user_id: at most 256 characters")
        ]
        errors = [
            json.loads(line)
            for line in stack.read_log("router").splitlines()
            if '"usage outcome dead-lettered' in line
        ]
        assert [(e["level"], e["outcome_id"]) for e in errors] == [
            ("error", "exe_poison:answer:0000:1")
        ]
        assert "u" * 300 not in stack.read_log("router")
        samples = await router_metrics(stack)
        assert samples["saga_router_outbox_dead_letters_total"] == 1
        status = await outbox_status(stack)
        assert (status.dead_letters, status.in_flight) == (1, 0)
        for _ in range(40):  # the gauges are read about every second
            samples = await router_metrics(stack)
            if samples["saga_router_outbox_backlog"] == 0:
                break
            await asyncio.sleep(0.1)
        assert samples["saga_router_outbox_backlog"] == 0
        assert samples["saga_router_outbox_oldest_age_seconds"] == 0
        status = await outbox_status(stack)
        assert (status.backlog, status.oldest_age_ms) == (0, 0)
