"""Staged sessions (SPEC 3.6): a user's named history of runs, stored in the runtime's
database. Each run executed with a `session_id` appends one stage (pattern, execution id,
inputs, outputs, when it started and completed) once it completes; failed runs add none.

Ownership is the request context's user: every read and write names the caller, and a
session of another user is NOT_FOUND `SESSION_NOT_FOUND`, exactly like one that does not
exist, so existence is never leaked. Lists are the caller's sessions most recently updated
first (an appended stage updates a session), in pages whose token names the caller: a token
presented by anyone else, or altered, is INVALID_ARGUMENT `PAGE_TOKEN_INVALID`; and the query
is bounded to the caller regardless, so no token reaches another user's rows.

Deleting a session removes its stages; the executions that ran in it stay, with their
session id cleared. A run that completes after its session was deleted appends nothing and
clears its own execution's session id the same way.

`recent_stages(user_id, session_id, limit)` is what a run in a session reads its history
through: the newest stages only, one indexed query of at most `limit` rows however long the
session has grown (session_root.py says how many a run needs).
"""

from __future__ import annotations

import json
import re
import secrets
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.common import page_tokens
from services.common.database import Database, Row
from services.common.errors import FieldViolation, InvalidArgument, NotFound
from services.runtime.executions import clear_session

MAX_TITLE_CHARS = 256
MAX_METADATA_BYTES = 16 * 1024
"""Bound on a session's metadata, measured as its compact JSON text."""
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

_SESSION_ID = re.compile(r"ses_[0-9a-f]{32}")


@dataclass(frozen=True)
class Stage:
    """One completed run recorded in a session: its inputs too, from which the session's
    conversation history is derived (services/runtime/session_root.py)."""

    execution_id: str
    pattern_id: str
    outputs: Mapping[str, Any]
    started_at_us: int
    completed_at_us: int
    inputs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Session:
    """A user's session; `stages` (oldest first) are filled by `get` only."""

    session_id: str
    user_id: str
    title: str
    metadata: Mapping[str, Any]
    created_at_us: int
    updated_at_us: int
    stages: tuple[Stage, ...] = field(default=())


def new_session_id() -> str:
    """A fresh session id (`ses_` + 128 random bits)."""
    return f"ses_{secrets.token_hex(16)}"


def _invalid(violations: list[FieldViolation], *, reason: str) -> InvalidArgument:
    return InvalidArgument(
        "; ".join(f"{v.field}: {v.description}" for v in violations),
        reason=reason,
        field_violations=violations,
    )


def check_session_id(session_id: str, field_name: str = "session_id") -> str:
    """`session_id` if it is a `ses_<32 hex>` id; INVALID_ARGUMENT `SESSION_ID_INVALID`."""
    if not _SESSION_ID.fullmatch(session_id):
        raise _invalid(
            [FieldViolation(field_name, "expected ses_<32 lowercase hex digits>")],
            reason="SESSION_ID_INVALID",
        )
    return session_id


def check_new(title: str, metadata: Mapping[str, Any]) -> str:
    """A new session's title and metadata are within bounds; returns the metadata as
    stored (JSON). INVALID_ARGUMENT `SESSION_INVALID` with a violation per bad field."""
    violations = []
    if len(title) > MAX_TITLE_CHARS:
        violations.append(
            FieldViolation("title", f"{len(title)} characters; at most {MAX_TITLE_CHARS}")
        )
    elif any(unicodedata.category(c) == "Cc" for c in title):
        # NUL above all, which PostgreSQL TEXT refuses; and a title is shown in tables.
        violations.append(FieldViolation("title", "must not contain control characters"))
    try:
        # Control characters come out escaped, so the text suits PostgreSQL too.
        stored = json.dumps(metadata, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        stored = ""
        violations.append(FieldViolation("metadata", "numbers must be finite"))
    size = len(stored.encode())
    if size > MAX_METADATA_BYTES:
        violations.append(
            FieldViolation("metadata", f"{size} bytes as JSON; at most {MAX_METADATA_BYTES}")
        )
    if violations:
        raise _invalid(violations, reason="SESSION_INVALID")
    return stored


def page_size(requested: int) -> int:
    """The page size for a ListSessions `page_size` (0 = the default, larger capped)."""
    if requested < 0:
        raise _invalid(
            [FieldViolation("page_size", "must not be negative")], reason="SESSION_INVALID"
        )
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_page_token(user_id: str, last: Session) -> str:
    """The opaque token of the page after `last`, for `user_id` only."""
    return page_tokens.encode((str(last.updated_at_us), last.session_id), (user_id,))


def decode_page_token(user_id: str, token: str) -> tuple[int, str] | None:
    """The (updated_at_us, session_id) a page token continues after; None for the first
    page. INVALID_ARGUMENT `PAGE_TOKEN_INVALID` unless it is a token issued to `user_id`."""
    position = page_tokens.decode(token, (user_id,), 2)
    if position is None:
        return None
    updated, session_id = position
    if not (updated.isdigit() and _SESSION_ID.fullmatch(session_id)):
        raise page_tokens.invalid()
    return int(updated), session_id


def _not_found(session_id: str) -> NotFound:
    return NotFound(
        "no such session",
        reason="SESSION_NOT_FOUND",
        metadata={"sessionId": session_id},
    )


def _session(row: Row, stages: tuple[Stage, ...] = ()) -> Session:
    return Session(
        session_id=row["session_id"],
        user_id=row["user_id"],
        title=row["title"],
        metadata=json.loads(row["metadata"]),
        created_at_us=row["created_at_us"],
        updated_at_us=row["updated_at_us"],
        stages=stages,
    )


def _stage(row: Row) -> Stage:
    return Stage(
        execution_id=row["execution_id"],
        pattern_id=row["pattern_id"],
        outputs=json.loads(row["outputs"]),
        started_at_us=row["started_at_us"],
        completed_at_us=row["completed_at_us"],
        inputs=json.loads(row["inputs"]),
    )


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_OWNED = "SELECT * FROM sessions WHERE session_id = $1 AND user_id = $2"
_STAGES = "SELECT * FROM session_stages WHERE session_id = $1 ORDER BY seq"
# Newest first through the (session_id, seq) index, so the LIMIT bounds the rows read.
_RECENT = "SELECT * FROM session_stages WHERE session_id = $1 ORDER BY seq DESC LIMIT $2"


class SessionStore:
    """Sessions in the runtime's database. `clock` gives seconds since the epoch."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    def _now_us(self) -> int:
        return round(self._clock() * 1_000_000)

    async def create(self, user_id: str, title: str, metadata: Mapping[str, Any]) -> Session:
        """A new empty session of `user_id`."""
        stored = check_new(title, metadata)
        now = self._now_us()
        session = Session(new_session_id(), user_id, title, json.loads(stored), now, now)
        await self._db.execute(
            "INSERT INTO sessions (session_id, user_id, title, metadata, created_at_us, "
            "updated_at_us) VALUES ($1, $2, $3, $4, $5, $6)",
            session.session_id,
            user_id,
            title,
            stored,
            now,
            now,
        )
        return session

    async def get(self, user_id: str, session_id: str) -> Session:
        """The caller's session with its stages; NOT_FOUND when it is not theirs."""
        check_session_id(session_id)
        async with self._db.transaction() as tx:  # the session and its stages as one read
            row = await tx.fetchrow(_OWNED, session_id, user_id)
            if row is None:
                raise _not_found(session_id)
            stages = tuple(_stage(r) for r in await tx.fetch(_STAGES, session_id))
        return _session(row, stages)

    async def recent_stages(self, user_id: str, session_id: str, limit: int) -> tuple[Stage, ...]:
        """The newest `limit` stages of the caller's session, oldest first (what a run in it
        reads before it starts): at most `limit` rows are read, however many the session
        holds. NOT_FOUND when the session is not theirs."""
        check_session_id(session_id)
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        async with self._db.transaction() as tx:
            if await tx.fetchrow(_OWNED, session_id, user_id) is None:
                raise _not_found(session_id)
            rows = await tx.fetch(_RECENT, session_id, limit)
        return tuple(_stage(r) for r in reversed(rows))

    async def list(self, user_id: str, size: int = 0, token: str = "") -> tuple[list[Session], str]:
        """A page of the caller's sessions (no stages), most recently updated first, and
        the next page's token ("" on the last page)."""
        limit = page_size(size)
        after = decode_page_token(user_id, token)
        if after is None:
            rows = await self._db.fetch(
                "SELECT * FROM sessions WHERE user_id = $1 "
                "ORDER BY updated_at_us DESC, session_id DESC LIMIT $2",
                user_id,
                limit + 1,
            )
        else:
            rows = await self._db.fetch(
                "SELECT * FROM sessions WHERE user_id = $1 AND (updated_at_us < $2 OR "
                "(updated_at_us = $2 AND session_id < $3)) "
                "ORDER BY updated_at_us DESC, session_id DESC LIMIT $4",
                user_id,
                after[0],
                after[1],
                limit + 1,
            )
        page = [_session(r) for r in rows[:limit]]
        more = len(rows) > limit
        return page, encode_page_token(user_id, page[-1]) if more else ""

    async def delete(self, user_id: str, session_id: str) -> None:
        """Delete the caller's session and its stages; its executions stay, their session
        id cleared. NOT_FOUND when it is not theirs."""
        check_session_id(session_id)
        async with self._db.transaction() as tx:
            deleted = await tx.execute(
                "DELETE FROM sessions WHERE session_id = $1 AND user_id = $2",
                session_id,
                user_id,
            )
            if not deleted:
                raise _not_found(session_id)
            await tx.execute("DELETE FROM session_stages WHERE session_id = $1", session_id)
            await clear_session(tx, session_id)

    async def append(
        self,
        user_id: str,
        session_id: str,
        execution_id: str,
        pattern_id: str,
        outputs: Mapping[str, Any],
        started_at_us: int,
        inputs: Mapping[str, Any],
    ) -> Stage | None:
        """Record a run that just completed, with the `inputs` it was given, in the caller's
        session; None (and the execution's session id cleared) when the session was deleted
        while it ran."""
        stage = Stage(
            execution_id, pattern_id, dict(outputs), started_at_us, self._now_us(), dict(inputs)
        )
        async with self._db.transaction() as tx:
            # Updating the session first locks its row: a concurrent delete waits, or has won.
            touched = await tx.execute(
                "UPDATE sessions SET updated_at_us = $1 WHERE session_id = $2 AND user_id = $3",
                stage.completed_at_us,
                session_id,
                user_id,
            )
            if not touched:
                await clear_session(tx, session_id)
                return None
            await tx.execute(
                "INSERT INTO session_stages (session_id, execution_id, pattern_id, outputs, "
                "started_at_us, completed_at_us, inputs) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                session_id,
                execution_id,
                pattern_id,
                _json(stage.outputs),
                started_at_us,
                stage.completed_at_us,
                _json(stage.inputs),
            )
        return stage
