"""The outbox against a fake optimizer (a real gRPC server on loopback answering
RecordOutcomes), on SQLite and PostgreSQL: rows are stored before `add` resolves, deleted only
once acknowledged, kept and resent while the optimizer fails, and shipped under their own
trace when few."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from saga.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
from services.common.database import Database, open_database
from services.common.lifecycle import Lifecycle
from services.common.telemetry import client_interceptors
from services.router.outbox import Outbox
from services.router.schema import MIGRATIONS
from tests.conftest import Backend

TRACE_A = "00-5af7183fb1d4cf5f11b2d3a4e5f60718-00f067aa0ba902b7-01"
TRACE_B = "00-6bf7183fb1d4cf5f11b2d3a4e5f60719-00f067aa0ba902b8-01"


@dataclass
class FakeOptimizer(optimizer_pb2_grpc.OptimizerServiceServicer):
    """Records each RecordOutcomes call (ids and traceparent); fails the first `failures`."""

    failures: int = 0
    calls: list[tuple[list[str], str]] = field(default_factory=list)

    async def RecordOutcomes(self, request_iterator: Any, context: Any) -> Any:
        if self.failures:
            self.failures -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        ids = [o.outcome_id async for batch in request_iterator for o in batch.outcomes]
        metadata = dict(context.invocation_metadata())
        self.calls.append((ids, str(metadata.get("traceparent", ""))))
        return optimizer_pb2.RecordOutcomesResponse(accepted=len(ids))

    def shipped(self) -> list[str]:
        return sorted(i for ids, _ in self.calls for i in ids)


@dataclass
class Rig:
    fake: FakeOptimizer
    db: Database
    channel: grpc.aio.Channel

    def outbox(self, **options: Any) -> Outbox:
        return Outbox(self.db, self.channel, **options)

    async def rows(self) -> int:
        return int(await self.db.fetchval("SELECT COUNT(*) FROM outbox"))


@pytest.fixture
async def rig(tmp_path: Path, backend: Backend) -> AsyncIterator[Rig]:
    fake = FakeOptimizer()
    server = grpc.aio.server()
    optimizer_pb2_grpc.add_OptimizerServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    db = await open_database(backend.url, backend.namespace, tmp_path, "router", MIGRATIONS)
    # As the router's peer channels do, the current trace context goes into the metadata.
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=client_interceptors())
    try:
        yield Rig(fake, db, channel)
    finally:
        await channel.close()
        await db.close()
        await server.stop(None)


@contextlib.asynccontextmanager
async def running(outbox: Outbox) -> AsyncIterator[None]:
    """Run the outbox's tasks, and stop them as the router's shutdown does."""
    lifecycle = Lifecycle()
    outbox.run_in(lifecycle)
    try:
        yield
    finally:
        await lifecycle.shut_down()


def outcome(outcome_id: str, **fields: Any) -> optimizer_pb2.Outcome:
    return optimizer_pb2.Outcome(
        outcome_id=outcome_id, provider="p", status=optimizer_pb2.OUTCOME_STATUS_SUCCEEDED, **fields
    )


async def eventually(check: Any, within: float = 10.0) -> None:
    for _ in range(int(within / 0.02)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met")


async def test_an_outcome_is_stored_before_add_resolves_and_deleted_once_acknowledged(
    rig: Rig,
) -> None:
    outbox = rig.outbox()
    stored = outbox.add(outcome("exe:s:a:1"), TRACE_A)
    async with running(outbox):
        await stored
        await eventually(lambda: _true(rig.fake.shipped() == ["exe:s:a:1"]))
        await eventually(lambda: _is_zero(rig))
        assert outbox.shipped == 1


async def test_rows_stay_while_the_optimizer_fails_and_ship_when_it_answers(rig: Rig) -> None:
    rig.fake.failures = 2
    outbox = rig.outbox(max_backoff=0.2)
    async with running(outbox):
        await asyncio.gather(outbox.add(outcome("e:s:a:1"), ""), outbox.add(outcome("e:s:a:2"), ""))
        assert await rig.rows() == 2  # durable before any acknowledgement
        await eventually(lambda: _is_zero(rig))
        assert rig.fake.shipped() == ["e:s:a:1", "e:s:a:2"]
        assert rig.fake.failures == 0  # it was asked (and failed) twice first


async def test_rows_left_by_a_stopped_router_are_shipped_by_the_next(rig: Rig) -> None:
    first = rig.outbox()
    async with running(first):
        await asyncio.gather(*(first.add(outcome(f"e:s:a:{n}"), "") for n in (1, 2, 3)))
    # The first may or may not have shipped: whatever is left stays stored.
    left = await rig.rows()
    second = rig.outbox()
    async with running(second):
        await eventually(lambda: _is_zero(rig))
        assert rig.fake.shipped() == ["e:s:a:1", "e:s:a:2", "e:s:a:3"]
        assert second.shipped == left


async def test_few_calls_ship_under_their_own_trace_a_backlog_in_one_call(rig: Rig) -> None:
    outbox = rig.outbox(traced_groups=2)
    stored = [
        outbox.add(outcome("a:1"), TRACE_A),
        outbox.add(outcome("a:2"), TRACE_A),
        outbox.add(outcome("b:1"), TRACE_B),
    ]
    async with running(outbox):  # the three are queued: they are committed and read together
        await asyncio.gather(*stored)
        await eventually(lambda: _is_zero(rig))
        by_trace = {trace: sorted(ids) for ids, trace in rig.fake.calls}
        assert by_trace == {TRACE_A: ["a:1", "a:2"], TRACE_B: ["b:1"]}


async def test_a_backlog_of_many_calls_ships_in_one_untraced_call(rig: Rig) -> None:
    # Rows stored while the optimizer could not be reached (nothing listens on port 9).
    async with grpc.aio.insecure_channel("127.0.0.1:9") as nowhere:
        offline = Outbox(rig.db, nowhere)
        async with running(offline):
            await asyncio.gather(
                *(offline.add(outcome(f"c{n}:1"), f"00-{n:032x}-{n:016x}-01") for n in (1, 2, 3))
            )
    outbox = rig.outbox(traced_groups=2)
    async with running(outbox):
        await eventually(lambda: _is_zero(rig))
        assert rig.fake.calls == [(["c1:1", "c2:1", "c3:1"], "")]


async def _true(value: bool) -> bool:
    return value


async def _is_zero(rig: Rig) -> bool:
    return await rig.rows() == 0
