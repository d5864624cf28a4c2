"""Sessions in the runtime's database: owned by their user (another user's is NOT_FOUND),
listed most recently updated first in pages whose tokens cannot be turned to another user,
bounded titles and metadata, stages appended oldest first with their run's inputs (none for
stages stored before migration 6), and a delete that removes the stages and clears the
executions' session id. On SQLite and PostgreSQL."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common import page_tokens
from services.common.database import Database, open_database
from services.common.errors import InvalidArgument, NotFound
from services.runtime.executions import ExecutionRecord, ExecutionStore
from services.runtime.schema import MIGRATIONS
from services.runtime.sessions import MAX_METADATA_BYTES, MAX_TITLE_CHARS, SessionStore
from tests.conftest import Backend


@pytest.fixture
async def db(backend: Backend, tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(backend.url, backend.namespace, tmp_path, "runtime", MIGRATIONS)
    yield database
    await database.close()


class Clock:
    """Seconds that advance one per reading, so every write has its own instant."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


def field_violations(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in error.value.field_violations]


async def test_a_session_belongs_to_its_user_and_no_one_else(db: Database) -> None:
    store = SessionStore(db, Clock())
    made = await store.create("usr_a", "Q3 review", {"team": "risk", "n": 3})
    assert made.session_id.startswith("ses_")
    got = await store.get("usr_a", made.session_id)
    assert (got.title, got.metadata, got.stages) == ("Q3 review", {"team": "risk", "n": 3}, ())

    for call in (store.get, store.delete, functools.partial(store.recent_stages, limit=1)):
        with pytest.raises(NotFound) as error:
            await call("usr_b", made.session_id)
        assert error.value.reason == "SESSION_NOT_FOUND"
    # The same answer as for a session that never existed.
    with pytest.raises(NotFound) as unknown:
        await store.get("usr_a", "ses_" + "0" * 32)
    assert unknown.value.reason == "SESSION_NOT_FOUND"
    assert (await store.list("usr_b"))[0] == []
    assert await store.recent_stages("usr_a", made.session_id, 10) == ()


async def test_malformed_ids_and_oversized_input_are_refused_precisely(db: Database) -> None:
    store = SessionStore(db, Clock())
    for bad in ("", "ses_XYZ", "exe_" + "0" * 32, "ses_" + "0" * 33, "ses_\x00"):
        with pytest.raises(InvalidArgument) as error:
            await store.get("usr_a", bad)
        assert error.value.reason == "SESSION_ID_INVALID"
        assert field_violations(error) == ["session_id"]

    with pytest.raises(InvalidArgument) as both:
        await store.create("usr_a", "t" * (MAX_TITLE_CHARS + 1), {"k": "v" * MAX_METADATA_BYTES})
    assert both.value.reason == "SESSION_INVALID"
    assert field_violations(both) == ["title", "metadata"]
    with pytest.raises(InvalidArgument) as control:
        await store.create("usr_a", "a\x00b", {})
    assert field_violations(control) == ["title"]
    with pytest.raises(InvalidArgument) as nan:
        await store.create("usr_a", "", {"x": float("nan")})
    assert field_violations(nan) == ["metadata"]
    with pytest.raises(InvalidArgument) as size:
        await store.list("usr_a", -1)
    assert field_violations(size) == ["page_size"]

    # At the bounds exactly, and NUL inside metadata strings, are stored and read back.
    edge = await store.create("usr_a", "t" * MAX_TITLE_CHARS, {"k": "nul\x00inside"})
    assert (await store.get("usr_a", edge.session_id)).metadata == {"k": "nul\x00inside"}


async def test_pages_run_newest_first_and_tokens_stay_with_their_user(db: Database) -> None:
    store = SessionStore(db, Clock())
    made = [await store.create("usr_a", f"s{i}", {}) for i in range(5)]
    await store.create("usr_b", "theirs", {})

    seen, token, pages = [], "", 0
    while True:
        page, token = await store.list("usr_a", 2, token)
        seen += [s.title for s in page]
        pages += 1
        if not token:
            break
    assert seen == ["s4", "s3", "s2", "s1", "s0"]
    assert pages == 3
    assert all(s.stages == () for s in page)

    # An appended stage makes its session the most recently updated.
    await store.append("usr_a", made[1].session_id, "exe_1", "chat", {"text": "hi"}, 5, {})
    assert [s.title for s in (await store.list("usr_a"))[0]][:2] == ["s1", "s4"]

    _, token = await store.list("usr_a", 2)
    with pytest.raises(InvalidArgument) as foreign:
        await store.list("usr_b", 2, token)
    assert foreign.value.reason == "PAGE_TOKEN_INVALID"
    assert field_violations(foreign) == ["page_token"]
    # A token bound to another owner is refused too (the caller is not that user).
    position = page_tokens.decode(token, ("usr_a",), 2)
    assert position is not None
    with pytest.raises(InvalidArgument):
        await store.list("usr_a", 2, page_tokens.encode(position, ("usr_b",)))
    # Junk, and a token of this owner whose position is no session's.
    bad_position = page_tokens.encode(("1", "x"), ("usr_a",))
    for junk in (
        "%%%",
        "bm90IGpzb24",
        bad_position,
        page_tokens.encode(("x", position[1]), ("usr_a",)),
    ):
        with pytest.raises(InvalidArgument) as bad:
            await store.list("usr_a", 2, junk)
        assert bad.value.reason == "PAGE_TOKEN_INVALID"


async def test_stages_append_in_order_and_delete_clears_the_executions(db: Database) -> None:
    store = SessionStore(db, Clock())
    executions = await ExecutionStore.open(db, "host:1")
    session = await store.create("usr_a", "t", {})
    for n in (1, 2):
        execution_id = f"exe_{n}"
        recording = executions.begin(
            ExecutionRecord(execution_id, "usr_a", "chat", session.session_id, "", "", "", "")
        )
        await recording.failed("TEST")  # settled, so the row exists
        stage = await store.append(
            "usr_a",
            session.session_id,
            execution_id,
            "chat",
            {"text": f"turn {n}"},
            n,
            {"prompt": f"ask {n}"},
        )
        assert stage is not None
    stages = await store.recent_stages("usr_a", session.session_id, 10)
    assert [(s.execution_id, s.inputs["prompt"], s.outputs["text"]) for s in stages] == [
        ("exe_1", "ask 1", "turn 1"),
        ("exe_2", "ask 2", "turn 2"),
    ]
    assert stages[0].started_at_us == 1
    assert stages[0].completed_at_us < stages[1].completed_at_us

    await store.delete("usr_a", session.session_id)
    with pytest.raises(NotFound):
        await store.get("usr_a", session.session_id)
    for execution_id in ("exe_1", "exe_2"):
        kept = await executions.get(execution_id)
        assert kept is not None
        assert kept.session_id == ""
    left = await db.fetchval("SELECT COUNT(*) FROM session_stages")
    assert left == 0

    # A run that completes after its session was deleted appends nothing.
    recording = executions.begin(
        ExecutionRecord("exe_3", "usr_a", "chat", session.session_id, "", "", "", "")
    )
    await recording.failed("TEST")
    assert await store.append("usr_a", session.session_id, "exe_3", "chat", {}, 1, {}) is None
    late = await executions.get("exe_3")
    assert late is not None
    assert late.session_id == ""
    await executions.close()


async def test_stages_stored_before_inputs_were_kept_read_as_none(
    backend: Backend, tmp_path: Path
) -> None:
    old = await open_database(backend.url, backend.namespace, tmp_path, "runtime", MIGRATIONS[:5])
    await old.execute(
        "INSERT INTO sessions (session_id, user_id, title, metadata, created_at_us, "
        "updated_at_us) VALUES ($1, 'usr_a', '', '{}', 1, 1)",
        "ses_" + "1" * 32,
    )
    await old.execute(
        "INSERT INTO session_stages (session_id, execution_id, pattern_id, outputs, "
        "started_at_us, completed_at_us) VALUES ($1, 'exe_1', 'chat', '{\"text\":\"hi\"}', 1, 2)",
        "ses_" + "1" * 32,
    )
    await old.close()
    db = await open_database(backend.url, backend.namespace, tmp_path, "runtime", MIGRATIONS)
    [stage] = await SessionStore(db).recent_stages("usr_a", "ses_" + "1" * 32, 10)
    assert (stage.inputs, stage.outputs) == ({}, {"text": "hi"})
    await db.close()


async def test_a_run_reads_only_the_newest_stages_however_long_the_session(db: Database) -> None:
    store = SessionStore(db, Clock())
    session = await store.create("usr_a", "long", {})
    for n in range(1, 151):
        stage = await store.append(
            "usr_a", session.session_id, f"exe_{n}", "chat", {"text": f"a{n}"}, n, {"prompt": "q"}
        )
        assert stage is not None
    recent = await store.recent_stages("usr_a", session.session_id, 5)
    # The newest five and no more, oldest of them first.
    assert [s.execution_id for s in recent] == [f"exe_{n}" for n in range(146, 151)]
    whole = await store.recent_stages("usr_a", session.session_id, 500)
    assert [s.execution_id for s in whole] == [f"exe_{n}" for n in range(1, 151)]
    with pytest.raises(ValueError, match="at least 1"):
        await store.recent_stages("usr_a", session.session_id, 0)
