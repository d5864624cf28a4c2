"""auth's users and API keys, in the service's database (SQLite file or PostgreSQL schema).

A key is stored as its SHA-256 only, and found by it (an indexed equality lookup, not a
string comparison against every key). A password is stored as its argon2id hash only.
Every method is one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.auth.api_keys import ApiKey, KeyLimits, User
from services.common.database import Database, Row, Tx
from services.common.errors import NotFound, QuotaViolation, ResourceExhausted

_KEY_COLUMNS = (
    "key_id, user_id, name, prefix, scopes, created_at, expires_at, revoked_at, last_used_at,"
    " requests_per_minute, concurrent_executions"
)

_USERS = (
    "SELECT u.user_id, u.email, u.tenant, u.created_at, u.scopes,"
    " (SELECT COUNT(*) FROM api_keys k WHERE k.user_id = u.user_id AND k.revoked_at IS NULL"
    " AND (k.expires_at IS NULL OR k.expires_at > $1)) AS live FROM users u"
)
"""Users with their live-key count; ListUsers appends its cursor and order."""


@dataclass(frozen=True)
class Account:
    """A user as Login sees them: who, and what their password hash and scopes are."""

    user: User
    password_hash: str | None
    scopes: tuple[str, ...]


def _key(row: Row) -> ApiKey:
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
        limits=KeyLimits(row["requests_per_minute"], row["concurrent_executions"]),
    )


def _user(row: Row) -> User:
    return User(row["user_id"], row["tenant"], row["created_at"], row["email"])


async def _insert_key(tx: Tx, key: ApiKey, key_hash: str) -> None:
    await tx.execute(
        f"INSERT INTO api_keys ({_KEY_COLUMNS}, key_hash)"  # noqa: S608 (constant column list)
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        key.key_id,
        key.user_id,
        key.name,
        key.prefix,
        " ".join(key.scopes),
        key.created_at,
        key.expires_at,
        key.revoked_at,
        key.last_used_at,
        key.limits.requests_per_minute,
        key.limits.concurrent_executions,
        key_hash,
    )


async def _insert_user(
    tx: Tx, user: User, scopes: tuple[str, ...], password_hash: str | None
) -> int:
    # ON CONFLICT (email): a taken email inserts nothing (0 rows) instead of failing, the
    # same way on both backends.
    return await tx.execute(
        "INSERT INTO users (user_id, email, tenant, created_at, scopes, password_hash)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (email) DO NOTHING",
        user.user_id,
        user.email,
        user.tenant,
        user.created_at,
        " ".join(scopes),
        password_hash,
    )


class Store:
    """Users and API keys."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_first_user(
        self, user: User, key: ApiKey, key_hash: str, on_created: Callable[[], None]
    ) -> bool:
        """Insert `user` (with the key's scopes) and `key` only on the very first start,
        calling `on_created` inside the same transaction (an exception there undoes the
        insert). False when an earlier start created the first user. The `bootstrap` row
        (one at most) decides: of processes racing on the same database — SQLite's write
        lock, or PostgreSQL's unique index, which makes a second inserter wait for the
        first to commit — exactly one inserts it."""
        async with self._db.transaction() as tx:
            claimed = await tx.execute(
                "INSERT INTO bootstrap (id, user_id, created_at) VALUES (1, $1, $2)"
                " ON CONFLICT (id) DO NOTHING",
                user.user_id,
                user.created_at,
            )
            if not claimed:
                return False
            await _insert_user(tx, user, key.scopes, None)
            await _insert_key(tx, key, key_hash)
            on_created()
            return True

    async def add_user(
        self, user: User, scopes: tuple[str, ...] = (), password_hash: str | None = None
    ) -> bool:
        """Store a new user; False (nothing stored) when the email is taken."""
        async with self._db.transaction() as tx:
            return await _insert_user(tx, user, scopes, password_hash) == 1

    async def user(self, user_id: str) -> User | None:
        """The user `user_id`, if any."""
        row = await self._db.fetchrow(
            "SELECT user_id, email, tenant, created_at FROM users WHERE user_id = $1", user_id
        )
        return None if row is None else _user(row)

    async def account(self, email: str) -> Account | None:
        """The user registered with (normalised) `email`, with their password hash."""
        row = await self._db.fetchrow(
            "SELECT user_id, email, tenant, created_at, password_hash, scopes FROM users"
            " WHERE email = $1",
            email,
        )
        if row is None:
            return None
        return Account(_user(row), row["password_hash"], tuple(row["scopes"].split()))

    async def replace_password_hash(self, user_id: str, old: str, new: str) -> bool:
        """Swap `old` for `new` (a rehash); False when the hash changed meanwhile."""
        changed = await self._db.execute(
            "UPDATE users SET password_hash = $1 WHERE user_id = $2 AND password_hash = $3",
            new,
            user_id,
            old,
        )
        return changed == 1

    async def add_key(self, key: ApiKey, key_hash: str, *, limit: int, now: float) -> None:
        """Store a new key of an existing user who has fewer than `limit` live keys
        (neither revoked nor expired). NotFound for an unknown user, ResourceExhausted at
        the limit."""
        async with self._db.transaction() as tx:
            owner = await tx.fetchval("SELECT 1 FROM users WHERE user_id = $1", key.user_id)
            if owner is None:
                raise NotFound("no such user", reason="USER_NOT_FOUND")
            live = await tx.fetchval(
                "SELECT COUNT(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL"
                " AND (expires_at IS NULL OR expires_at > $2)",
                key.user_id,
                now,
            )
            if live >= limit:
                raise ResourceExhausted(
                    f"a user may hold at most {limit} live API keys; revoke one first",
                    reason="API_KEY_LIMIT_REACHED",
                    metadata={"limit": str(limit)},
                    quota_violations=[
                        QuotaViolation(key.user_id, f"at most {limit} live API keys per user")
                    ],
                )
            await _insert_key(tx, key, key_hash)

    async def find_key(self, key_hash: str) -> tuple[ApiKey, str] | None:
        """The key with this hash and its owner's tenant, if any."""
        row = await self._db.fetchrow(
            f"SELECT {', '.join('k.' + c for c in _KEY_COLUMNS.split(', '))}, u.tenant"  # noqa: S608 (constant column list)
            " FROM api_keys AS k JOIN users AS u ON u.user_id = k.user_id"
            " WHERE k.key_hash = $1",
            key_hash,
        )
        return None if row is None else (_key(row), row["tenant"])

    async def touch(self, key_id: str, now: float, min_interval: float) -> None:
        """Record a use of `key_id`, unless one was recorded less than `min_interval` ago."""
        await self._db.execute(
            "UPDATE api_keys SET last_used_at = $1"
            " WHERE key_id = $2 AND (last_used_at IS NULL OR last_used_at <= $3)",
            now,
            key_id,
            now - min_interval,
        )

    async def keys(self, user_id: str) -> list[ApiKey]:
        """A user's keys, newest first, revoked ones included."""
        rows = await self._db.fetch(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE user_id = $1"  # noqa: S608 (constant column list)
            " ORDER BY created_at DESC, key_id DESC",
            user_id,
        )
        return [_key(r) for r in rows]

    async def set_limits(self, key_id: str, limits: KeyLimits) -> ApiKey | None:
        """Set any key's own limits; None when no key has that id."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE api_keys SET requests_per_minute = $1, concurrent_executions = $2"
                " WHERE key_id = $3",
                limits.requests_per_minute,
                limits.concurrent_executions,
                key_id,
            )
            row: Any = await tx.fetchrow(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = $1",  # noqa: S608 (constant column list)
                key_id,
            )
        return None if row is None else _key(row)

    async def revoke(self, user_id: str, key_id: str, now: float) -> ApiKey | None:
        """Revoke `user_id`'s key `key_id` (keeping the first revocation time); None when
        that user has no such key."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1)"
                " WHERE key_id = $2 AND user_id = $3",
                now,
                key_id,
                user_id,
            )
            row: Any = await tx.fetchrow(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = $1 AND user_id = $2",  # noqa: S608 (constant column list)
                key_id,
                user_id,
            )
        return None if row is None else _key(row)

    async def users(
        self, after: tuple[float, str] | None, limit: int, now: float
    ) -> list[tuple[User, tuple[str, ...], int]]:
        """Up to `limit` users after `after` (created_at, user_id), oldest first, each with
        their scopes and how many of their keys are live (neither revoked nor expired)."""
        if after is None:
            rows = await self._db.fetch(
                _USERS + " ORDER BY u.created_at, u.user_id LIMIT $2", now, limit
            )
        else:
            rows = await self._db.fetch(
                _USERS + " WHERE u.created_at > $2 OR (u.created_at = $2 AND u.user_id > $3)"
                " ORDER BY u.created_at, u.user_id LIMIT $4",
                now,
                after[0],
                after[1],
                limit,
            )
        return [(_user(r), tuple(r["scopes"].split()), int(r["live"])) for r in rows]
