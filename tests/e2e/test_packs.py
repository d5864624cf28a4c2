"""Pricing packs and the freshness gate end to end through the gateway, on SQLite and on
PostgreSQL: PublishPack (admin) → WARMING → FRESH or ERROR; GetPackHealth and ListPacks for
any caller; Execute of a pattern that requires a pack refused while its pack warms, failed,
is stale (unless allow_stale_pack with scope pack:stale) or missing; a bad or future asof
refused; a run pinned to an old pack and ledger commit reproduces an old run after new
transactions and packs, across a runtime restart.

The reproducibility check runs `chat` (and a copy of it that requires a pack) and
`portfolio_overview`, which reads the pinned ledger commit and pack, against the
deterministic simulator."""

from __future__ import annotations

import asyncio
import datetime
import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from saga.execution.v1 import options_pb2, records_pb2
from saga.gateway.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    execution_pb2,
    execution_pb2_grpc,
    pack_health_pb2,
    pack_health_pb2_grpc,
)
from saga.runtime.v1 import price_pb2
from services.common.database import open_database
from services.common.status import describe
from services.runtime import demo
from services.runtime.ledger import Ledger, Transaction
from services.runtime.schema import MIGRATIONS
from tests.conftest import Backend
from tests.e2e.test_cli import ok, refused_in_one_line, row, saga_cli
from tests.e2e.test_execute import bearer, create_key
from tests.harness import ROOT, Stack, metric, stack_for

WARMUP = 2.0
TODAY = datetime.datetime.now(datetime.UTC).date()


def day(offset: int) -> str:
    return (TODAY + datetime.timedelta(days=offset)).isoformat()


def priced_chat(directory: Path) -> None:
    """A copy of `chat` that declares `requires_pack: true` (a user pattern)."""
    text = (ROOT / "services/runtime/patterns/chat.yaml").read_text()
    text = text.replace("id: chat", "id: priced_chat").replace(
        "requires_pack: false", "requires_pack: true"
    )
    directory.mkdir()
    (directory / "priced_chat.yaml").write_text(text)


def overview(**options: Any) -> execution_pb2.ExecuteRequest:
    """portfolio_overview of the demo portfolio: positions at the pinned commit, valued with
    the pinned pack, its metrics and the simulator's (deterministic) summary of them."""
    inputs = struct_pb2.Struct()
    inputs.update({"portfolio": "demo"})
    return execution_pb2.ExecuteRequest(
        pattern_id="portfolio_overview",
        inputs=inputs,
        options=options_pb2.ExecuteOptions(**options),
    )


def request(pattern: str, asof: str = "", **options: Any) -> execution_pb2.ExecuteRequest:
    inputs = struct_pb2.Struct()
    inputs.update({"prompt": "How are my holdings?"})
    return execution_pb2.ExecuteRequest(
        pattern_id=pattern,
        inputs=inputs,
        asof=asof,
        options=options_pb2.ExecuteOptions(**options),
    )


async def execute(stack: Stack, key: str, req: execution_pb2.ExecuteRequest) -> list[Any]:
    async with stack.gateway_channel() as ch:
        call = execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
            req, metadata=bearer(key), timeout=60
        )
        return [e async for e in call]


async def refused(stack: Stack, key: str, req: execution_pb2.ExecuteRequest) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await execute(stack, key, req)
    return error.value


async def health(stack: Stack, key: str, asof: str = "", pack_id: str = "") -> Any:
    async with stack.gateway_channel() as ch:
        reply = await pack_health_pb2_grpc.PackHealthServiceStub(ch).GetPackHealth(
            pack_health_pb2.GetPackHealthRequest(asof=asof, pack_id=pack_id),
            metadata=bearer(key),
            timeout=10,
        )
    return reply.health


async def publish(stack: Stack, asof: str, symbols: Sequence[str]) -> Any:
    prices = [
        price_pb2.Price(symbol=p.symbol, price_micro=p.price_micro + 1, currency=p.currency)
        for p in demo.PRICES
        if p.symbol in symbols
    ]
    async with stack.gateway_channel() as ch:
        return await admin_pb2_grpc.AdminServiceStub(ch).PublishPack(
            admin_pb2.PublishPackRequest(asof=asof, prices=prices, source="test-feed"),
            metadata=bearer(stack.admin_key()),
            timeout=10,
        )


async def settled(stack: Stack, key: str, pack_id: str) -> Any:
    """The pack's health once it left WARMING (bounded)."""
    for _ in range(100):
        h = await health(stack, key, pack_id=pack_id)
        if h.status != records_pb2.PACK_STATUS_WARMING:
            return h
        await asyncio.sleep(0.1)
    raise AssertionError(f"{pack_id} still warming")


def reason(error: Any) -> tuple[grpc.StatusCode, str]:
    return error.code(), describe(error).reason


async def append_transaction(stack: Stack, backend: Backend) -> str:
    """Stop the runtime, append a sale to its ledger, start it again; the new head."""
    stack.stop("runtime")
    db = await open_database(backend.url, backend.namespace, stack.data_dir, "runtime", MIGRATIONS)
    try:
        sale = Transaction("demo", day(0), "NVDA", "sell", 5_000_000, 130_000_000, "USD")
        head = await (await Ledger.open(db)).append(sale)
    finally:
        await db.close()
    await stack.start_all(["runtime"])
    return head


async def test_packs_and_the_freshness_gate_through_the_gateway(
    backend: Backend, tmp_path: Path
) -> None:
    priced_chat(tmp_path / "patterns")
    async with stack_for(
        tmp_path,
        SAGA_RUNTIME__PATTERNS_DIR=str(tmp_path / "patterns"),
        SAGA_RUNTIME__PACK_WARMUP_SECONDS=str(WARMUP),
        **backend.env(),
    ) as stack:
        user, _ = await create_key(stack, ["execute"])
        stale_ok, _ = await create_key(stack, ["execute", "pack:stale"])

        # The demo pack seeded on first start is FRESH for today, for any caller.
        today = await health(stack, user)
        assert (today.status, today.asof, today.carried_forward) == (
            records_pb2.PACK_STATUS_FRESH,
            day(0),
            False,
        )
        assert today.reconciliation.passed
        assert today.reconciliation.held_symbols == len({t.symbol for t in demo.TRANSACTIONS})
        first = await execute(stack, user, request("priced_chat"))
        assert first[0].accepted.pricing_pack_id == today.pack_id
        assert first[-1].WhichOneof("event") == "completed"
        first_overview = await execute(stack, user, overview())
        assert first_overview[-1].WhichOneof("event") == "completed"

        # A pack for yesterday warms: runs of yesterday wait for it, with RetryInfo.
        published = await publish(stack, day(-1), [p.symbol for p in demo.PRICES])
        assert published.health.status == records_pb2.PACK_STATUS_WARMING
        assert published.health.HasField("estimated_ready")
        warming = await refused(stack, user, request("priced_chat", day(-1)))
        details = describe(warming)
        assert reason(warming) == (grpc.StatusCode.UNAVAILABLE, "PACK_WARMING")
        assert details.domain == "gateway.saga"
        assert details.retry_after is not None
        assert details.retry_after >= 1
        assert details.metadata["packId"] == published.pack_id
        assert "estimatedReady" in details.metadata
        refusals = await metric(
            stack, "gateway", "saga_gateway_pack_gate_refusals_total", reason="PACK_WARMING"
        )
        assert refusals == 1
        # A pattern that reads no pack data is not gated.
        assert (await execute(stack, user, request("chat", day(-1))))[-1].HasField("completed")
        fresh = await settled(stack, user, published.pack_id)
        assert fresh.status == records_pb2.PACK_STATUS_FRESH
        await asyncio.sleep(1.1)  # past the gateway's cache second
        run = await execute(stack, user, request("priced_chat", day(-1)))
        assert run[0].accepted.pricing_pack_id == published.pack_id

        # A pack missing a held symbol fails reconciliation: runs of its date are refused.
        broken = await publish(stack, day(-2), ["AAPL", "MSFT"])
        failed = await settled(stack, user, broken.pack_id)
        assert failed.status == records_pb2.PACK_STATUS_ERROR
        assert sorted(failed.reconciliation.missing_symbols) == ["NVDA", "VOO"]
        error = await refused(stack, user, request("priced_chat", day(-2)))
        assert reason(error) == (grpc.StatusCode.FAILED_PRECONDITION, "PACK_RECONCILIATION_FAILED")

        # Before any pack: missing. A pack far older than asof is carried forward, STALE.
        assert reason(await refused(stack, user, request("priced_chat", day(-10)))) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "PACK_MISSING",
        )
        old = await publish(stack, day(-20), [p.symbol for p in demo.PRICES])
        # Reconciled; STALE for today (its age is measured from the asof asked for).
        assert (await settled(stack, user, old.pack_id)).status == records_pb2.PACK_STATUS_STALE
        own_date = await health(stack, user, day(-20), old.pack_id)
        assert own_date.status == records_pb2.PACK_STATUS_FRESH
        await asyncio.sleep(1.1)
        carried = await health(stack, user, day(-10))
        assert (carried.pack_id, carried.status, carried.carried_forward) == (
            old.pack_id,
            records_pb2.PACK_STATUS_STALE,
            True,
        )
        assert reason(await refused(stack, user, request("priced_chat", day(-10)))) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "PACK_STALE",
        )
        stale_run = request("priced_chat", day(-10), allow_stale_pack=True)
        no_scope = await refused(stack, user, stale_run)
        assert reason(no_scope) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING")
        allowed = await execute(stack, stale_ok, stale_run)
        assert allowed[0].accepted.pricing_pack_id == old.pack_id

        # A malformed or future asof is refused with a field violation.
        for bad in ("2024-13-01", day(1)):
            error = await refused(stack, user, request("chat", bad))
            assert reason(error) == (grpc.StatusCode.INVALID_ARGUMENT, "ASOF_INVALID")
            assert [v.field for v in describe(error).field_violations] == ["asof"]

        # Every pack is listed, newest asof first.
        async with stack.gateway_channel() as ch:
            listed = await pack_health_pb2_grpc.PackHealthServiceStub(ch).ListPacks(
                pack_health_pb2.ListPacksRequest(page_size=2), metadata=bearer(user), timeout=10
            )
            rest = await pack_health_pb2_grpc.PackHealthServiceStub(ch).ListPacks(
                pack_health_pb2.ListPacksRequest(page_size=10, page_token=listed.next_page_token),
                metadata=bearer(user),
                timeout=10,
            )
        assert [p.asof for p in [*listed.packs, *rest.packs]] == [
            day(0),
            day(-1),
            day(-2),
            day(-20),
        ]
        assert rest.next_page_token == ""

        # Reproducible runs: pin the first run's pack and commit, then move both on.
        pinned_pack = first[0].accepted.pricing_pack_id
        pinned_commit = first[0].accepted.ledger_commit_hash
        newer = await publish(stack, day(0), [p.symbol for p in demo.PRICES])
        assert (await settled(stack, user, newer.pack_id)).status == records_pb2.PACK_STATUS_FRESH
        head = await append_transaction(stack, backend)  # restarts the runtime
        assert head != pinned_commit
        await asyncio.sleep(1.1)
        moved = await execute(stack, user, request("priced_chat"))
        assert (moved[0].accepted.pricing_pack_id, moved[0].accepted.ledger_commit_hash) == (
            newer.pack_id,
            head,
        )
        again = await execute(
            stack,
            user,
            request(
                "priced_chat",
                day(0),
                pricing_pack_id=pinned_pack,
                ledger_commit_hash=pinned_commit,
            ),
        )
        for event in (again[0].accepted, again[-1].completed):
            assert (event.pricing_pack_id, event.ledger_commit_hash) == (
                pinned_pack,
                pinned_commit,
            )
        assert again[-1].completed.outputs == first[-1].completed.outputs
        # The same with the pinned data read for real: today's positions and prices moved
        # (a sale, a dearer pack), the pinned rerun's figures and summary did not.
        moved_overview = await execute(stack, user, overview())
        assert moved_overview[-1].WhichOneof("event") == "completed"
        moved_outputs = moved_overview[-1].completed.outputs
        first_outputs = first_overview[-1].completed.outputs
        assert moved_outputs["market_value"] != first_outputs["market_value"]
        pinned_overview = await execute(
            stack, user, overview(pricing_pack_id=pinned_pack, ledger_commit_hash=pinned_commit)
        )
        assert pinned_overview[-1].completed.outputs == first_outputs
        record = await execution_record(stack, backend, again[0].accepted.execution_id)
        assert (record["pricing_pack_id"], record["ledger_commit_hash"]) == (
            pinned_pack,
            pinned_commit,
        )

        # A pin that names nothing is a typed error.
        for options, expected in (
            ({"pricing_pack_id": "PP_2020-01-01_00000000"}, "PACK_NOT_FOUND"),
            ({"ledger_commit_hash": "ab" * 32}, "LEDGER_COMMIT_NOT_FOUND"),
        ):
            error = await refused(stack, user, request("chat", **options))
            assert reason(error) == (grpc.StatusCode.NOT_FOUND, expected)


async def execution_record(stack: Stack, backend: Backend, execution_id: str) -> Any:
    if backend.name == "sqlite":  # read-only beside the running runtime, which owns the file
        with sqlite3.connect(f"file:{stack.data_dir / 'runtime.db'}?mode=ro", uri=True) as c:
            c.row_factory = sqlite3.Row
            return c.execute(
                "SELECT * FROM executions WHERE execution_id = ?", (execution_id,)
            ).fetchone()
    db = await open_database(backend.url, backend.namespace, stack.data_dir, "runtime", MIGRATIONS)
    try:
        return await db.fetchrow("SELECT * FROM executions WHERE execution_id = $1", execution_id)
    finally:
        await db.close()


async def test_publishing_a_pack_needs_the_admin_scope(stack: Stack) -> None:
    user, _ = await create_key(stack, ["execute"])
    async with stack.gateway_channel() as ch:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await admin_pb2_grpc.AdminServiceStub(ch).PublishPack(
                admin_pb2.PublishPackRequest(asof=day(0), source="x"),
                metadata=bearer(user),
                timeout=10,
            )
        assert reason(error.value) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING")
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await admin_pb2_grpc.AdminServiceStub(ch).PublishPack(
                admin_pb2.PublishPackRequest(asof=day(0), source="x"),
                metadata=bearer(stack.admin_key()),
                timeout=10,
            )
    assert reason(error.value) == (grpc.StatusCode.INVALID_ARGUMENT, "PACK_INVALID")
    assert describe(error.value).domain == "runtime.saga"


def test_the_cli_publishes_lists_and_shows_packs(stack: Stack, tmp_path: Path) -> None:
    csv = tmp_path / "close.csv"
    csv.write_text(
        "symbol,price,currency\n"
        + "".join(f"{p.symbol},{p.price_micro / 1_000_000:.2f},USD\n" for p in demo.PRICES)
    )
    dated = ("--asof", day(-30), "--source", "close")
    published = ok(saga_cli(stack, "packs", "publish", str(csv), *dated))
    [line] = [line for line in published.splitlines() if line.startswith(f"PP_{day(-30)}_")]
    assert line.split()[1:4] == [day(-30), "WARMING", "close"]
    for _ in range(100):
        shown = ok(saga_cli(stack, "packs", "health", "--asof", day(-30)))
        if "WARMING" not in shown:
            break
        time.sleep(0.1)
    assert row(shown, line.split()[0]).split()[1:3] == [day(-30), "FRESH"]
    listed = ok(saga_cli(stack, "packs", "list"))
    assert row(listed, line.split()[0])
    as_json = json.loads(ok(saga_cli(stack, "packs", "health", "--json")))
    assert as_json["health"]["status"] == "PACK_STATUS_FRESH"
    bad = tmp_path / "bad.csv"
    bad.write_text("symbol,price\nAAPL,1.0000001\n")
    refused_in_one_line(saga_cli(stack, "packs", "publish", str(bad), *dated))
