"""Execution records: RUNNING at start, the outcome at the end, a reused id refused, and a
run the process never finished marked INTERRUPTED on the next start."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.errors import AlreadyExists
from services.common.storage import Database
from services.runtime.executions import ExecutionRecord, ExecutionStatus, ExecutionStore
from services.runtime.schema import MIGRATIONS
from services.runtime.usage import Usage


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


async def test_a_run_is_recorded_at_start_and_settled_once(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "runtime.db", MIGRATIONS)
    store = await ExecutionStore.open(db)
    ok = store.begin(record("exe_ok"))
    await ok.succeeded(Usage(3, 5, 8), 42)
    failed = store.begin(record("exe_failed"))
    await failed.failed("PROVIDER_UNAVAILABLE")
    done = await store.get("exe_ok")
    assert done is not None
    assert (done.status, done.usage, done.cost_micro_usd) == (
        ExecutionStatus.SUCCEEDED,
        Usage(3, 5, 8),
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
    first = await store.get("exe_ok")
    assert first is not None
    assert first.status == ExecutionStatus.SUCCEEDED
    await store.drain()
    await db.close()


async def test_runs_left_running_are_interrupted_on_the_next_start(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "runtime.db", MIGRATIONS)
    store = await ExecutionStore.open(db)
    store.begin(record("exe_crashed"))
    await store.drain()
    running = await store.get("exe_crashed")
    assert running is not None
    assert running.status == ExecutionStatus.RUNNING
    await db.close()
    db = await Database.open(tmp_path / "runtime.db", MIGRATIONS)
    store = await ExecutionStore.open(db)
    interrupted = await store.get("exe_crashed")
    assert interrupted is not None
    assert interrupted.status == ExecutionStatus.INTERRUPTED
    await db.close()
