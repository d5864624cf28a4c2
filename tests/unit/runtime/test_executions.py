"""Execution records: RUNNING at start, the outcome at the end, a reused id refused, and a run
its process never finished marked INTERRUPTED — at that replica's next start, or once its
lease runs out — while the runs of live replicas are left alone. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import time
from pathlib import Path

import pytest

from services.common.database import Database, open_database
from services.common.errors import AlreadyExists, FailedPrecondition
from services.common.usage import Usage
from services.runtime.event_log import EventWriter
from services.runtime.executions import (
    LEASE_SECONDS,
    MAX_MOVES,
    ExecutionQuery,
    ExecutionRecord,
    ExecutionStatus,
    ExecutionStore,
)
from services.runtime.schema import MIGRATIONS
from services.runtime.watch import replay
from tests.conftest import Backend


def record(execution_id: str) -> ExecutionRecord:
    return ExecutionRecord(
        execution_id=execution_id,
        user_id="usr_1",
        pattern_id="chat",
        session_id="",
        asof="2025-01-02",
        pricing_pack_id="PP_2025-01-02_abcdef12",
        ledger_commit_hash="0" * 64,
        trace_id="1" * 32,
    )


async def open_db(backend: Backend, data_dir: Path) -> Database:
    return await open_database(backend.url, backend.namespace, data_dir, "runtime", MIGRATIONS)


async def status(store: ExecutionStore, execution_id: str) -> ExecutionStatus:
    found = await store.get(execution_id)
    assert found is not None, execution_id
    return found.status


async def test_a_run_is_recorded_at_start_and_settled_once(
    backend: Backend, tmp_path: Path
) -> None:
    db = await open_db(backend, tmp_path)
    store = await ExecutionStore.open(db, "host:1")
    ok = store.begin(record("exe_ok"))
    await ok.succeeded(Usage(input_tokens=3, output_tokens=5), 42)
    failed = store.begin(record("exe_failed"))
    await failed.failed("PROVIDER_UNAVAILABLE")
    done = await store.get("exe_ok")
    assert done is not None
    assert (done.status, done.usage, done.cost_micro_usd) == (
        ExecutionStatus.SUCCEEDED,
        Usage(input_tokens=3, output_tokens=5),
        42,
    )
    assert done.completed_at is not None
    broken = await store.get("exe_failed")
    assert broken is not None
    assert (broken.status, broken.error_reason) == (ExecutionStatus.FAILED, "PROVIDER_UNAVAILABLE")

    # A reused id is refused and leaves the first record alone.
    again = store.begin(record("exe_ok"))
    with pytest.raises(AlreadyExists) as error:
        await again.succeeded(Usage(), 0)
    assert error.value.reason == "EXECUTION_EXISTS"
    await again.failed("EXECUTION_EXISTS")
    assert await status(store, "exe_ok") == ExecutionStatus.SUCCEEDED
    await store.close()
    await db.close()


async def test_runs_left_running_are_interrupted_on_the_next_start(
    backend: Backend, tmp_path: Path
) -> None:
    db = await open_db(backend, tmp_path)
    store = await ExecutionStore.open(db, "host:1")
    store.begin(record("exe_crashed"))
    await store.drain()
    assert await status(store, "exe_crashed") == ExecutionStatus.RUNNING
    await db.close()  # a crash: the lease is not given up
    db = await open_db(backend, tmp_path)
    store = await ExecutionStore.open(db, "host:1")
    assert await status(store, "exe_crashed") == ExecutionStatus.INTERRUPTED
    await db.close()


async def test_a_replica_leaves_live_replicas_runs_alone_and_interrupts_the_gone(
    backend: Backend, tmp_path: Path
) -> None:
    db_a, db_b = await open_db(backend, tmp_path), await open_db(backend, tmp_path)
    a = await ExecutionStore.open(db_a, "host-a:1")
    running = a.begin(record("exe_a_running"))
    a.begin(record("exe_a_left"))
    await a.drain()

    # Replica b starting (and renewing) while a is alive touches none of a's runs…
    b = await ExecutionStore.open(db_b, "host-b:1")
    await b.renew()
    assert await status(b, "exe_a_left") == ExecutionStatus.RUNNING
    # …so a can still settle them.
    await running.succeeded(Usage(input_tokens=1, output_tokens=1), 1)
    assert await status(b, "exe_a_running") == ExecutionStatus.SUCCEEDED

    # a dies without a word: its run stays RUNNING while its lease lasts…
    await db_a.close()
    now = [time.time() + 1]
    c = await ExecutionStore.open(db_b, "host-c:1", clock=lambda: now[0])
    assert await status(c, "exe_a_left") == ExecutionStatus.RUNNING
    # …and the first renewal after it ran out interrupts it.
    now[0] += LEASE_SECONDS
    await c.renew()
    assert await status(c, "exe_a_left") == ExecutionStatus.INTERRUPTED
    assert await status(c, "exe_a_running") == ExecutionStatus.SUCCEEDED
    await db_b.close()


async def test_a_clean_stop_interrupts_its_unfinished_runs_at_once(
    backend: Backend, tmp_path: Path
) -> None:
    db_a, db_b = await open_db(backend, tmp_path), await open_db(backend, tmp_path)
    a = await ExecutionStore.open(db_a, "host-a:1")
    b = await ExecutionStore.open(db_b, "host-b:1")
    a.begin(record("exe_a"))
    b.begin(record("exe_b"))
    await a.close()
    assert await status(b, "exe_a") == ExecutionStatus.INTERRUPTED
    # Positive control: the replica still running keeps its run.
    assert await status(b, "exe_b") == ExecutionStatus.RUNNING
    await b.close()
    await db_a.close()
    await db_b.close()


async def test_runs_recorded_before_leases_existed_are_interrupted_after_the_upgrade(
    backend: Backend, tmp_path: Path
) -> None:
    db = await open_database(backend.url, backend.namespace, tmp_path, "runtime", MIGRATIONS[:1])
    for execution_id, state in (("exe_old", "RUNNING"), ("exe_done", "SUCCEEDED")):
        await db.execute(
            "INSERT INTO executions (execution_id, user_id, pattern_id, session_id, asof, status, "
            "created_at, pricing_pack_id, ledger_commit_hash, trace_id) "
            "VALUES ($1, 'usr_1', 'chat', '', '2025-01-02', $2, '2025-01-02T00:00:00+00:00', "
            "'', '', '')",
            execution_id,
            state,
        )
    await db.close()
    db = await open_db(backend, tmp_path)
    store = await ExecutionStore.open(db, "host:1")
    assert await status(store, "exe_old") == ExecutionStatus.INTERRUPTED
    assert await status(store, "exe_done") == ExecutionStatus.SUCCEEDED
    await db.close()


async def test_retention_prunes_old_and_surplus_event_logs_and_keeps_the_records(
    backend: Backend, tmp_path: Path
) -> None:
    db = await open_db(backend, tmp_path)
    store = await ExecutionStore.open(db, "host:1")
    writer = EventWriter(db)
    task = asyncio.ensure_future(writer.run())
    try:
        ids = ["exe_old", "exe_mid", "exe_new", "exe_live"]
        old = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=40)).isoformat()
        for execution_id in ids:
            created = (
                old
                if execution_id == "exe_old"
                else datetime.datetime.now(datetime.UTC).isoformat()
            )
            await store.insert(dataclasses.replace(record(execution_id), created_at=created))
            log = writer.start(execution_id)
            for n in range(3):
                log.append(f"{execution_id}:{n}".encode())
            if execution_id != "exe_live":
                await store.finish(execution_id, ExecutionStatus.SUCCEEDED)
            await asyncio.sleep(0.001)  # distinct creation times, in this order
        assert await writer.flush()
        await db.execute(
            "UPDATE executions SET completed_at = $1 WHERE execution_id = 'exe_old'", old
        )
        # 30 days and at most two logs: the old one by age, the middle one by count; a
        # running run is never pruned.
        assert await store.prune_events(30 * 86_400, max_runs=2) == 2
        assert await store.prune_events(30 * 86_400, max_runs=2) == 0
        for execution_id, kept in (
            ("exe_old", False),
            ("exe_mid", False),
            ("exe_new", True),
            ("exe_live", True),
        ):
            found = await store.get(execution_id)
            assert found is not None  # the record stays
            assert found.events_pruned is not kept
            assert len(await store.events(execution_id, 0)) == (3 if kept else 0)
        pruned = await store.get("exe_old")
        assert pruned is not None
        with pytest.raises(FailedPrecondition) as refused:
            async for _ in replay(store, pruned, 0):
                pass
        assert refused.value.reason == "EVENT_LOG_PRUNED"
    finally:
        task.cancel()
        await db.close()


async def test_search_pages_newest_first_and_filters(backend: Backend, tmp_path: Path) -> None:
    db = await open_db(backend, tmp_path)
    store = await ExecutionStore.open(db, "host:1")
    try:
        base = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
        for i, (user, pattern) in enumerate(
            [("usr_1", "chat"), ("usr_2", "chat"), ("usr_1", "debate"), ("usr_1", "chat")]
        ):
            created = (base + datetime.timedelta(minutes=i)).isoformat()
            await store.insert(
                dataclasses.replace(
                    record(f"exe_{i}"), user_id=user, pattern_id=pattern, created_at=created
                )
            )
        await store.finish("exe_3", ExecutionStatus.SUCCEEDED)
        mine = ExecutionQuery(user_id="usr_1")
        assert [r.execution_id for r in await store.search(mine, 10)] == [
            "exe_3",
            "exe_2",
            "exe_0",
        ]
        page = await store.search(mine, 2)
        after = (page[-1].created_at, page[-1].execution_id)
        rest = await store.search(dataclasses.replace(mine, after=after), 2)
        assert [r.execution_id for r in page + rest] == ["exe_3", "exe_2", "exe_0"]
        assert [
            r.execution_id
            for r in await store.search(
                ExecutionQuery(user_id=None, pattern_id="chat", status=ExecutionStatus.RUNNING),
                10,
            )
        ] == ["exe_1", "exe_0"]
        window = ExecutionQuery(
            user_id="usr_1",
            created_after=(base + datetime.timedelta(minutes=1)).isoformat(),
            created_before=(base + datetime.timedelta(minutes=3)).isoformat(),
        )
        assert [r.execution_id for r in await store.search(window, 10)] == ["exe_2"]
    finally:
        await db.close()


async def test_one_claim_of_a_key_wins_and_the_others_get_its_run(
    backend: Backend, tmp_path: Path
) -> None:
    db = await open_db(backend, tmp_path)
    store = await ExecutionStore.open(db, "host:1")
    try:
        claims = [
            dataclasses.replace(record(f"exe_c{i}"), idempotency_key="k1", request_digest="d")
            for i in range(5)
        ]
        results = await asyncio.gather(*(store.claim(c, 3600) for c in claims))
        winners = [c.execution_id for c, r in zip(claims, results, strict=True) if r is None]
        assert len(winners) == 1
        assert {r.execution_id for r in results if r is not None} == set(winners)
        # Another user's same key is theirs alone; a cancelled run's key is released.
        other = dataclasses.replace(
            record("exe_other"), user_id="usr_2", idempotency_key="k1", request_digest="d"
        )
        assert await store.claim(other, 3600) is None
        await store.finish(winners[0], ExecutionStatus.CANCELLED)
        again = dataclasses.replace(record("exe_again"), idempotency_key="k1", request_digest="d")
        assert await store.claim(again, 3600) is None
    finally:
        await db.close()


CONTEXT = "eyJ.context.token"


def resumable(execution_id: str, until_ms: int | None = None) -> ExecutionRecord:
    """A detached run's record, with what it needs to move (until `until_ms`)."""
    return dataclasses.replace(
        record(execution_id),
        resume_request=b"\x0a\x03exe",
        context_token=CONTEXT,
        resume_until_ms=until_ms if until_ms is not None else int(time.time() * 1000) + 600_000,
    )


async def adopted_at_open(store: ExecutionStore) -> list[ExecutionRecord]:
    """What `store` claimed as it opened (keep_alive hands it over first)."""
    claimed: list[ExecutionRecord] = []
    task = asyncio.ensure_future(store.keep_alive(claimed.extend))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return claimed


async def test_a_restart_claims_its_previous_lifes_resumable_runs_and_interrupts_the_rest(
    backend: Backend, tmp_path: Path
) -> None:
    db = await open_db(backend, tmp_path)
    store = await ExecutionStore.open(db, "host:1")
    store.begin(resumable("exe_detached"))
    store.begin(resumable("exe_expired", until_ms=int(time.time() * 1000) - 1))
    store.begin(record("exe_attached"))
    await store.drain()
    await db.close()  # a crash
    db = await open_db(backend, tmp_path)
    store = await ExecutionStore.open(db, "host:1")
    claimed = await adopted_at_open(store)
    assert [(r.execution_id, r.moves) for r in claimed] == [("exe_detached", 1)]
    assert claimed[0].resume_request == b"\x0a\x03exe"
    assert claimed[0].context_token == CONTEXT
    assert await status(store, "exe_detached") == ExecutionStatus.RUNNING
    assert await status(store, "exe_expired") == ExecutionStatus.INTERRUPTED
    assert await status(store, "exe_attached") == ExecutionStatus.INTERRUPTED
    await db.close()


async def test_two_replicas_sweeping_at_once_claim_a_run_only_once(
    backend: Backend, tmp_path: Path
) -> None:
    db_a = await open_db(backend, tmp_path)
    a = await ExecutionStore.open(db_a, "host-a:1")
    ids = [f"exe_{i}" for i in range(20)]
    for execution_id in ids:
        a.begin(resumable(execution_id))
    await a.drain()
    await db_a.close()  # a dies without a word
    later = time.time() + LEASE_SECONDS + 1
    dbs = [await open_db(backend, tmp_path) for _ in range(3)]
    stores = [ExecutionStore(db, f"host-{i}:1", clock=lambda: later) for i, db in enumerate(dbs)]
    # The dead lease is gone already, so the sweeps have nothing else to queue on.
    await dbs[0].execute("DELETE FROM replicas WHERE replica_id = 'host-a:1'")
    # Every replica sweeps at the same moment, each on its own connection.
    claims = await asyncio.gather(*(s.renew() for s in stores))
    won = sorted(r.execution_id for claimed in claims for r in claimed)
    assert won == sorted(ids)  # each run claimed exactly once, none lost
    for execution_id in ids:
        found = await stores[0].get(execution_id)
        assert found is not None
        assert (found.status, found.moves) == (ExecutionStatus.RUNNING, 1)
        (owner,) = (i for i, c in enumerate(claims) if execution_id in {r.execution_id for r in c})
        assert found.replica_id == f"host-{owner}:1"
    for db in dbs:
        await db.close()


async def test_a_run_that_moved_as_often_as_it_may_is_interrupted(
    backend: Backend, tmp_path: Path
) -> None:
    db = await open_db(backend, tmp_path)
    store = await ExecutionStore.open(db, "host:1")
    for moves in range(MAX_MOVES):
        store.begin(resumable("exe_poison"), inserted=moves > 0)
        await store.drain()
        await db.close()  # it kills its replica every time
        db = await open_db(backend, tmp_path)
        store = await ExecutionStore.open(db, "host:1")
        assert [r.moves for r in await adopted_at_open(store)] == [moves + 1]
    await db.close()
    db = await open_db(backend, tmp_path)
    store = await ExecutionStore.open(db, "host:1")
    assert await adopted_at_open(store) == []
    assert await status(store, "exe_poison") == ExecutionStatus.INTERRUPTED
    await db.close()


async def test_a_runs_context_is_erased_from_its_record_when_it_ends(
    backend: Backend, tmp_path: Path
) -> None:
    db = await open_db(backend, tmp_path)
    store = await ExecutionStore.open(db, "host:1")
    ok = store.begin(resumable("exe_ok"))
    failed = store.begin(resumable("exe_failed"))
    store.begin(resumable("exe_left"))
    await store.drain()
    running = await store.get("exe_left")
    assert running is not None
    assert running.context_token == CONTEXT  # needed while it may move
    await ok.succeeded(Usage(), 0)
    await failed.failed("PROVIDER_UNAVAILABLE")
    await store.interrupt("exe_left")
    for execution_id in ("exe_ok", "exe_failed", "exe_left"):
        ended = await store.get(execution_id)
        assert ended is not None
        assert ended.status != ExecutionStatus.RUNNING
        assert ended.context_token == ""
    await db.close()


async def test_a_replica_presumed_dead_finds_which_runs_were_claimed_and_writes_none_of_them(
    backend: Backend, tmp_path: Path
) -> None:
    db_a, db_b = await open_db(backend, tmp_path), await open_db(backend, tmp_path)
    a = await ExecutionStore.open(db_a, "host-a:1")
    for execution_id in ("exe_moved", "exe_kept"):
        a.begin(resumable(execution_id))
    await a.drain()
    writer = EventWriter(db_a)
    task = asyncio.ensure_future(writer.run())
    try:
        moved = writer.start("exe_moved", movable=True)
        kept = writer.start("exe_kept", movable=True)
        for log in (moved, kept):
            log.append(b"first")
        assert await writer.flush()
        assert (moved.durable, kept.durable) == (1, 1)
        # a's lease lapses (its database is out of reach, say); b sweeps and claims both …
        later = time.time() + LEASE_SECONDS + 1
        b = ExecutionStore(db_b, "host-b:1", clock=lambda: later)
        assert len(await b.renew()) == 2
        # … and one is given back, as if a had renewed in time for it (the test does this).
        await db_b.execute(
            "UPDATE executions SET replica_id = 'host-a:1' WHERE execution_id = 'exe_kept'"
        )
        assert await a.taken(["exe_moved", "exe_kept", "exe_unknown"]) == ["exe_moved"]
        # a stops the moved run: its unwritten events never take the claimant's sequences.
        moved.append(b"stale")
        kept.append(b"second")
        writer.forget("exe_moved")
        assert await writer.flush()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await a.events("exe_moved", 0) == [(1, b"first")]
    assert await a.events("exe_kept", 0) == [(1, b"first"), (2, b"second")]
    await db_a.close()
    await db_b.close()
