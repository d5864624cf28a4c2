"""auth's embedded storage: users and API keys in `<data_dir>/auth.db` (SQLite).

A key is stored as its SHA-256 only, and found by it (an indexed equality lookup, not a
string comparison against every key). Every method is one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from services.auth.api_keys import ApiKey, User
from services.common.errors import NotFound, QuotaViolation, ResourceExhausted
from services.common.storage import Database

# IF NOT EXISTS: two auth processes starting at once on a new file may both run a migration.
MIGRATIONS = (
    """
    CREATE TABLE IF NOT EXISTS users (
        user_id TEXT PRIMARY KEY,
        email TEXT UNIQUE,
        tenant TEXT NOT NULL DEFAULT 'default',
        created_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS api_keys (
        key_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (user_id),
        key_hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        name TEXT NOT NULL,
        scopes TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL,
        revoked_at REAL,
        last_used_at REAL
    );
    CREATE INDEX IF NOT EXISTS api_keys_by_user ON api_keys (user_id, created_at)
    """,
)

_KEY_COLUMNS = (
    "key_id, user_id, name, prefix, scopes, created_at, expires_at, revoked_at, last_used_at"
)


def _key(row: sqlite3.Row) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        user_id=row["user_id"],
        name=row["name"],
        prefix=row["prefix"],
        scopes=tuple(row["scopes"].split()),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )


def _insert_key(c: sqlite3.Connection, key: ApiKey, key_hash: str) -> None:
    c.execute(
        f"INSERT INTO api_keys ({_KEY_COLUMNS}, key_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 (constant column list)
        (
            key.key_id,
            key.user_id,
            key.name,
            key.prefix,
            " ".join(key.scopes),
            key.created_at,
            key.expires_at,
            key.revoked_at,
            key.last_used_at,
            key_hash,
        ),
    )


def _insert_user(c: sqlite3.Connection, user: User) -> None:
    c.execute(
        "INSERT INTO users (user_id, email, tenant, created_at) VALUES (?, ?, ?, ?)",
        (user.user_id, user.email, user.tenant, user.created_at),
    )


class Store:
    """Users and API keys."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating and migrating) the database at `path`."""
        return cls(await Database.open(path, MIGRATIONS))

    async def close(self) -> None:
        """Close the database (on shutdown)."""
        await self._db.close()

    async def create_first_user(
        self, user: User, key: ApiKey, key_hash: str, on_created: Callable[[], None]
    ) -> bool:
        """Insert `user` and `key` only if there is no user yet, calling `on_created` inside
        the same transaction (an exception there undoes the insert). False when users exist.
        The transaction holds SQLite's write lock, so of two processes starting at once
        exactly one creates."""

        def work(c: sqlite3.Connection) -> bool:
            if c.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None:
                return False
            _insert_user(c, user)
            _insert_key(c, key, key_hash)
            on_created()
            return True

        return await self._db.run(work)

    async def add_user(self, user: User) -> None:
        """Store a new user."""
        await self._db.run(lambda c: _insert_user(c, user))

    async def user(self, user_id: str) -> User | None:
        """The user `user_id`, if any."""
        row = await self._db.fetchone(
            "SELECT user_id, email, tenant, created_at FROM users WHERE user_id = ?", (user_id,)
        )
        if row is None:
            return None
        return User(row["user_id"], row["tenant"], row["created_at"], row["email"])

    async def add_key(self, key: ApiKey, key_hash: str, *, limit: int, now: float) -> None:
        """Store a new key of an existing user who has fewer than `limit` live keys
        (neither revoked nor expired). NotFound for an unknown user, ResourceExhausted at
        the limit."""

        def work(c: sqlite3.Connection) -> None:
            owner = c.execute("SELECT 1 FROM users WHERE user_id = ?", (key.user_id,))
            if owner.fetchone() is None:
                raise NotFound("no such user", reason="USER_NOT_FOUND")
            (live,) = c.execute(
                "SELECT COUNT(*) FROM api_keys WHERE user_id = ? AND revoked_at IS NULL"
                " AND (expires_at IS NULL OR expires_at > ?)",
                (key.user_id, now),
            ).fetchone()
            if live >= limit:
                raise ResourceExhausted(
                    f"a user may hold at most {limit} live API keys; revoke one first",
                    reason="API_KEY_LIMIT_REACHED",
                    metadata={"limit": str(limit)},
                    quota_violations=[
                        QuotaViolation(key.user_id, f"at most {limit} live API keys per user")
                    ],
                )
            _insert_key(c, key, key_hash)

        await self._db.run(work)

    async def find_key(self, key_hash: str) -> tuple[ApiKey, str] | None:
        """The key with this hash and its owner's tenant, if any."""
        row = await self._db.fetchone(
            "SELECT k.*, u.tenant FROM api_keys AS k JOIN users AS u USING (user_id)"
            " WHERE k.key_hash = ?",
            (key_hash,),
        )
        return None if row is None else (_key(row), row["tenant"])

    async def touch(self, key_id: str, now: float, min_interval: float) -> None:
        """Record a use of `key_id`, unless one was recorded less than `min_interval` ago."""
        await self._db.execute(
            "UPDATE api_keys SET last_used_at = ?"
            " WHERE key_id = ? AND (last_used_at IS NULL OR last_used_at <= ?)",
            (now, key_id, now - min_interval),
        )

    async def keys(self, user_id: str) -> list[ApiKey]:
        """A user's keys, newest first, revoked ones included."""
        rows = await self._db.fetchall(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE user_id = ?"  # noqa: S608 (constant column list)
            " ORDER BY created_at DESC, rowid DESC",
            (user_id,),
        )
        return [_key(r) for r in rows]

    async def revoke(self, user_id: str, key_id: str, now: float) -> ApiKey | None:
        """Revoke `user_id`'s key `key_id` (keeping the first revocation time); None when
        that user has no such key."""

        def work(c: sqlite3.Connection) -> ApiKey | None:
            c.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?)"
                " WHERE key_id = ? AND user_id = ?",
                (now, key_id, user_id),
            )
            row = c.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = ? AND user_id = ?",  # noqa: S608 (constant column list)
                (key_id, user_id),
            ).fetchone()
            return None if row is None else _key(row)

        return await self._db.run(work)
