"""The outbox against a fake optimizer (a real gRPC server on loopback answering
RecordOutcomes), on SQLite and PostgreSQL: rows are stored before `add` resolves, deleted only
once acknowledged, kept and resent while the optimizer fails, and shipped in one untraced call
a round, each outcome with its call's traceparent; an outcome the optimizer refuses is
dead-lettered alone (answered one by one, or sent again one by one to an optimizer that
refuses whole batches); attempts held in flight are replaced by their outcome, and a crashed
router's are shipped once their lease ran out."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from prometheus_client import REGISTRY

from saga.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
from services.common import outcome_bounds
from services.common.database import Database, open_database
from services.common.errors import Unavailable
from services.common.lifecycle import Lifecycle
from services.common.telemetry import TracedChannel
from services.router.outbox import LEASE_SECONDS, Outbox
from services.router.schema import MIGRATIONS
from tests.clock import Clock
from tests.conftest import PG_URL, Backend, drop_schemas
from tests.fakes.tcp_proxy import TcpProxy

TRACE_A = "00-5af7183fb1d4cf5f11b2d3a4e5f60718-00f067aa0ba902b7-01"
TRACE_B = "00-6bf7183fb1d4cf5f11b2d3a4e5f60719-00f067aa0ba902b8-01"


@dataclass
class FakeOptimizer(optimizer_pb2_grpc.OptimizerServiceServicer):
    """Records each RecordOutcomes call (ids and traceparent); fails the first `failures`.
    It answers as an older optimizer does (counts only) unless `judge`: then outcome by
    outcome, by the shared bounds. `refuse_batches`: a batch with a bad outcome is refused
    whole, INVALID_ARGUMENT (an older optimizer)."""

    failures: int = 0
    judge: bool = False
    refuse_batches: bool = False
    calls: list[tuple[list[str], str]] = field(default_factory=list)
    received: list[optimizer_pb2.Outcome] = field(default_factory=list)
    traces: dict[str, str] = field(default_factory=dict)
    """Each shipped outcome's own traceparent (`Outcome.traceparent`)."""

    async def RecordOutcomes(self, request_iterator: Any, context: Any) -> Any:
        if self.failures:
            self.failures -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        outcomes = [o async for batch in request_iterator for o in batch.outcomes]
        bad = [(i, o, outcome_bounds.problem(o)) for i, o in enumerate(outcomes)]
        bad = [(i, o, p) for i, o, p in bad if p is not None]
        if self.refuse_batches and bad:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(bad[0][2]))
        good = [o for o in outcomes if all(o is not b for _, b, _ in bad)]
        metadata = dict(context.invocation_metadata())
        self.calls.append(([o.outcome_id for o in good], str(metadata.get("traceparent", ""))))
        self.traces.update((o.outcome_id, o.traceparent) for o in good)
        self.received += good
        if not self.judge:
            return optimizer_pb2.RecordOutcomesResponse(accepted=len(good))
        return optimizer_pb2.RecordOutcomesResponse(
            accepted=len(good),
            accepted_ids=[o.outcome_id for o in good],
            rejected=[
                optimizer_pb2.RejectedOutcome(
                    outcome_id=o.outcome_id, index=i, field=p.field, problem=p.problem
                )
                for i, o, p in bad
                if p is not None
            ],
        )

    def shipped(self) -> list[str]:
        return sorted(i for ids, _ in self.calls for i in ids)


@dataclass
class Rig:
    fake: FakeOptimizer
    db: Database
    channel: grpc.aio.Channel

    def outbox(self, **options: Any) -> Outbox:
        return Outbox(self.db, self.channel, **options)

    async def rows(self, table: str = "outbox") -> int:
        return int(await self.db.fetchval(f"SELECT COUNT(*) FROM {table}"))  # noqa: S608

    async def dead_letters(self) -> list[tuple[str, str]]:
        rows = await self.db.fetch(
            "SELECT outcome_id, problem FROM outbox_dead_letters ORDER BY outcome_id"
        )
        return [(r["outcome_id"], r["problem"]) for r in rows]

    async def store_as_an_older_router_did(self, *outcomes: optimizer_pb2.Outcome) -> None:
        for n, o in enumerate(outcomes):
            await self.db.execute(
                "INSERT INTO outbox (outcome_id, payload, traceparent, created_at) "
                "VALUES ($1, $2, '', $3)",
                o.outcome_id,
                o.SerializeToString(),
                float(n),
            )


@pytest.fixture
async def rig(tmp_path: Path, backend: Backend) -> AsyncIterator[Rig]:
    fake = FakeOptimizer()
    server = grpc.aio.server()
    optimizer_pb2_grpc.add_OptimizerServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    db = await open_database(backend.url, backend.namespace, tmp_path, "router", MIGRATIONS)
    # As the router's peer channels do, the current trace context goes into the metadata.
    channel = TracedChannel(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
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


async def test_calls_outcomes_ship_in_one_untraced_call_each_with_its_calls_trace(
    rig: Rig,
) -> None:
    outbox = rig.outbox()
    stored = [
        outbox.add(outcome("a:1"), TRACE_A),
        outbox.add(outcome("a:2"), TRACE_A),
        outbox.add(outcome("b:1"), TRACE_B),
        outbox.add(outcome("u:1"), ""),
    ]
    async with running(outbox):
        await asyncio.gather(*stored)
        await eventually(lambda: _is_zero(rig))
        assert rig.fake.calls == [(["a:1", "a:2", "b:1", "u:1"], "")]
        assert rig.fake.traces == {"a:1": TRACE_A, "a:2": TRACE_A, "b:1": TRACE_B, "u:1": ""}


@pytest.mark.parametrize("linger", [1.0, 0.0])
async def test_commits_within_the_linger_ship_in_one_round(rig: Rig, linger: float) -> None:
    outbox = rig.outbox(linger=linger)
    async with running(outbox):
        await outbox.add(outcome("first"), "")
        await eventually(lambda: _is_zero(rig))  # shipped: the shipper has a round behind it
        for n in range(5):  # five commits 20 ms apart, each awaited
            await outbox.add(outcome(f"q:{n}"), "")
            await asyncio.sleep(0.02)
        await eventually(lambda: _is_zero(rig))
        assert rig.fake.shipped() == sorted(["first", *(f"q:{n}" for n in range(5))])
        rounds = len(rig.fake.calls) - 1  # after the first one's
        if linger:
            # After a round that was not full the shipper waits out the linger: the five are
            # in its next round.
            assert rounds == 1
        else:
            # The control: without a linger the shipper does not wait for the next commits.
            assert rounds > 1


async def test_a_backlog_ships_each_outcome_with_the_trace_stored_beside_it(rig: Rig) -> None:
    # Rows stored while the optimizer could not be reached (nothing listens on port 9).
    traces = {f"c{n}:1": f"00-{n:032x}-{n:016x}-01" for n in (1, 2, 3)}
    async with grpc.aio.insecure_channel("127.0.0.1:9") as nowhere:
        offline = Outbox(rig.db, nowhere)
        async with running(offline):
            await asyncio.gather(*(offline.add(outcome(i), t) for i, t in traces.items()))
    outbox = rig.outbox()
    async with running(outbox):
        await eventually(lambda: _is_zero(rig))
        assert rig.fake.calls == [(["c1:1", "c2:1", "c3:1"], "")]
        assert rig.fake.traces == traces


def dead_letter_count() -> float:
    return REGISTRY.get_sample_value("saga_router_outbox_dead_letters_total") or 0.0


def poisoned(outcome_id: str) -> optimizer_pb2.Outcome:
    """An outcome over the optimizer's bound (a 300-character user id)."""
    return outcome(outcome_id, user_id="u" * 300)


async def test_a_refused_outcome_is_dead_lettered_and_never_delays_the_others(rig: Rig) -> None:
    rig.fake.judge = True
    await rig.store_as_an_older_router_did(poisoned("bad:1"), outcome("old:1"))
    counted = dead_letter_count()
    outbox = rig.outbox()
    async with running(outbox):
        await asyncio.gather(*(outbox.add(outcome(f"new:{n}"), "") for n in (1, 2)))
        await eventually(lambda: _is_zero(rig))
        assert rig.fake.shipped() == ["new:1", "new:2", "old:1"]
        assert await rig.dead_letters() == [("bad:1", "user_id: at most 256 characters")]
        assert dead_letter_count() == counted + 1
        assert (outbox.shipped, outbox.dead_lettered) == (3, 1)
        status = await outbox.status()
        assert (status.backlog, status.dead_letters, status.in_flight) == (0, 1, 0)


async def test_an_optimizer_that_refuses_whole_batches_gets_them_one_by_one(rig: Rig) -> None:
    rig.fake.refuse_batches = True
    await rig.store_as_an_older_router_did(outcome("a:1"), poisoned("bad:1"), outcome("a:2"))
    outbox = rig.outbox()
    async with running(outbox):
        await eventually(lambda: _is_zero(rig))
    assert rig.fake.shipped() == ["a:1", "a:2"]
    (dead,) = await rig.dead_letters()
    assert dead[0] == "bad:1"
    assert "user_id" in dead[1]


async def test_add_clips_descriptive_fields_and_dead_letters_what_it_cannot_clip(
    rig: Rig,
) -> None:
    rig.fake.judge = True
    outbox = rig.outbox()
    async with running(outbox):
        await outbox.add(outcome("long:1", model="m" * 300), "")
        await outbox.add(poisoned("bad:2"), "")  # whose usage it is cannot be clipped
        await eventually(lambda: _is_zero(rig))
        assert [(o.outcome_id, len(o.model)) for o in rig.fake.received] == [("long:1", 256)]
        assert await rig.dead_letters() == [("bad:2", "user_id: at most 256 characters")]


async def test_an_attempt_held_in_flight_is_replaced_by_its_outcome(rig: Rig) -> None:
    outbox = rig.outbox()
    async with running(outbox):
        await outbox.hold(outcome("run:1", estimated=True), "")
        await outbox.hold(outcome("run:1", estimated=True, cost_micro_usd=2), "")  # raised
        assert (await rig.rows("outbox_attempts"), await rig.rows()) == (1, 0)
        payload = await rig.db.fetchval("SELECT payload FROM outbox_attempts")
        assert optimizer_pb2.Outcome.FromString(bytes(payload)).cost_micro_usd == 2
        raised = outbox.hold(outcome("run:1", estimated=True, cost_micro_usd=5), "")
        ended = outbox.add(outcome("run:1", cost_micro_usd=7), "")
        await asyncio.gather(raised, ended)
        assert await rig.rows("outbox_attempts") == 0
        await eventually(lambda: _is_zero(rig))
        assert [(o.cost_micro_usd, o.estimated) for o in rig.fake.received] == [(7, False)]


async def test_a_crashed_routers_held_attempt_is_shipped_once_its_lease_ran_out(
    rig: Rig,
) -> None:
    clock = Clock()
    async with grpc.aio.insecure_channel("127.0.0.1:9") as nowhere:
        crashed = Outbox(rig.db, nowhere, clock=clock)
        held = crashed.hold(outcome("lost:1", estimated=True, cost_micro_usd=3), "")
        async with running(crashed):  # stored; then it stops, the attempt never ended
            await held
    restarted = rig.outbox(clock=clock)
    await restarted.keep()
    assert await rig.rows("outbox_attempts") == 1  # its lease still runs: not yet
    assert (await restarted.status()).in_flight == 1
    clock.advance(LEASE_SECONDS + 1)
    await restarted.keep()
    assert (await rig.rows("outbox_attempts"), await rig.rows()) == (0, 1)
    assert restarted.adopted == 1
    async with running(restarted):
        await eventually(lambda: _is_zero(rig))
    assert [(o.outcome_id, o.estimated, o.cost_micro_usd) for o in rig.fake.received] == [
        ("lost:1", True, 3)
    ]


async def test_a_live_routers_lease_is_renewed_and_its_attempts_never_taken(rig: Rig) -> None:
    clock = Clock()
    live = rig.outbox(clock=clock)
    other = rig.outbox(clock=clock)
    async with running(live):
        await live.hold(outcome("live:1", estimated=True), "")
    for _ in range(3):
        clock.advance(LEASE_SECONDS - 1)
        await live.keep()  # renews
        await other.keep()
        await live.keep()  # its own rows are never adopted by itself
    assert (await rig.rows("outbox_attempts"), await rig.rows()) == (1, 0)


async def test_a_withdrawn_attempt_leaves_no_provisional_record_and_ships_nothing(
    rig: Rig,
) -> None:
    """An attempt whose hold committed though its caller heard it failed (the
    acknowledgement lost) was never sent: `withdraw` deletes the record — or the queued
    hold with it — so no later router adopts it as a call."""
    clock = Clock()
    outbox = rig.outbox(clock=clock)
    async with running(outbox):
        await outbox.hold(outcome("gone:1", estimated=True), "")
        assert await rig.rows("outbox_attempts") == 1
        await outbox.withdraw("gone:1")
        queued = outbox.hold(outcome("gone:2", estimated=True), "")
        await asyncio.gather(queued, outbox.withdraw("gone:2"))
    assert (await rig.rows("outbox_attempts"), await rig.rows()) == (0, 0)
    clock.advance(LEASE_SECONDS + 1)
    other = rig.outbox(clock=clock)
    await other.keep()
    assert (other.adopted, await rig.rows()) == (0, 0)
    assert rig.fake.received == []


async def test_the_backlog_gauges_show_count_and_age(rig: Rig) -> None:
    clock = Clock()
    outbox = rig.outbox(clock=clock)
    assert outbox.gauges() == (0, 0.0, 0)
    async with grpc.aio.insecure_channel("127.0.0.1:9") as nowhere:
        offline = Outbox(rig.db, nowhere, clock=clock)
        stored = [offline.add(outcome("w:1"), ""), offline.hold(outcome("w:2"), "")]
        async with running(offline):
            await asyncio.gather(*stored)
    await outbox.status()
    clock.advance(30)
    backlog, age, in_flight = outbox.gauges()
    assert (backlog, round(age), in_flight) == (1, 30, 1)


async def _true(value: bool) -> bool:
    return value


async def _is_zero(rig: Rig) -> bool:
    return await rig.rows() == 0


async def test_outcomes_not_stored_while_the_database_is_away_are_stored_once_it_is_back(
    tmp_path: Path,
) -> None:
    """The caller of `add` hears at once that its outcome is not stored (the router then
    answers USAGE_NOT_STORED), but the outcome is not dropped: it is written, and shipped,
    when PostgreSQL answers again — the provider was called, so the ledger must count it."""
    fake = FakeOptimizer()
    server = grpc.aio.server()
    optimizer_pb2_grpc.add_OptimizerServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    real = urlsplit(PG_URL)
    namespace = f"t{secrets.token_hex(6)}"
    proxy = await TcpProxy(real.hostname or "127.0.0.1", real.port or 5432).start()
    url = real._replace(netloc=f"{real.username}@127.0.0.1:{proxy.port}").geturl()
    db = await open_database(url, namespace, tmp_path, "router", MIGRATIONS)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    outbox = Outbox(db, channel, max_backoff=0.2)
    try:
        async with running(outbox):
            held = outbox.hold(outcome("e:s:a:1"), "")
            await held
            await proxy.stop()
            with pytest.raises(Unavailable):
                await outbox.add(outcome("e:s:a:1"), "")
            with pytest.raises(Unavailable):
                await outbox.add(outcome("e:s:b:1"), "")
            await proxy.start()
            await eventually(lambda: _true(fake.shipped() == ["e:s:a:1", "e:s:b:1"]), within=20)
            assert all(o.status == optimizer_pb2.OUTCOME_STATUS_SUCCEEDED for o in fake.received)
    finally:
        await proxy.stop()
        await channel.close()
        await db.close()
        await server.stop(None)
        await drop_schemas(namespace)
