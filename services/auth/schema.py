"""auth's tables, one migration per version (`services.common.database` applies each once).

Version 1 is the schema the first API-key release created in `<data_dir>/auth.db`; its
SQLite text is kept as it was, so such a file migrates on from where it is. Append new
versions; never edit one that shipped.
"""

from __future__ import annotations

from services.common.database import Migration

_V1_SQLITE = """
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
"""

_V1_POSTGRESQL = """
    CREATE TABLE users (
        user_id TEXT PRIMARY KEY,
        email TEXT UNIQUE,
        tenant TEXT NOT NULL DEFAULT 'default',
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE api_keys (
        key_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (user_id),
        key_hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        name TEXT NOT NULL,
        scopes TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION,
        revoked_at DOUBLE PRECISION,
        last_used_at DOUBLE PRECISION
    );
    CREATE INDEX api_keys_by_user ON api_keys (user_id, created_at)
"""

# Passwords and scopes for registered users; the first-start marker (one row at most, so
# replicas racing at first start create one admin); failed-login throttling; JWT signing
# keys (public half here, private half in the vault); OAuth refresh leases.
_V2 = """
    ALTER TABLE users ADD COLUMN password_hash TEXT;
    ALTER TABLE users ADD COLUMN scopes TEXT NOT NULL DEFAULT '';
    CREATE TABLE bootstrap (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        user_id TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    );
    INSERT INTO bootstrap (id, user_id, created_at)
        SELECT 1, user_id, created_at FROM users ORDER BY created_at LIMIT 1;
    CREATE TABLE login_throttle (
        account TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        locked_until DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX login_throttle_by_age ON login_throttle (updated_at);
    CREATE TABLE signing_keys (
        generation INTEGER PRIMARY KEY,
        kid TEXT NOT NULL UNIQUE,
        public_key TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        last_exp DOUBLE PRECISION NOT NULL DEFAULT 0
    );
    CREATE TABLE refresh_leases (
        lease_key TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    )
"""

# Emails became lower-case as a whole (the local part was kept as typed before). Rows that
# would collide with another account once lowered are left as they are for an operator to
# resolve; SQLite's lower() folds ASCII only, which is what stored addresses overwhelmingly are.
_V3 = """
    UPDATE users SET email = lower(email)
    WHERE email <> lower(email)
      AND NOT EXISTS (
          SELECT 1 FROM users AS other
          WHERE lower(other.email) = lower(users.email) AND other.user_id <> users.user_id
      )
"""

# An API key's own rate limits, set by an admin (0 = the deployment's per-user default).
_V4 = """
    ALTER TABLE api_keys ADD COLUMN requests_per_minute INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE api_keys ADD COLUMN concurrent_executions INTEGER NOT NULL DEFAULT 0
"""

MIGRATIONS: tuple[Migration, ...] = (
    {"sqlite": _V1_SQLITE, "postgresql": _V1_POSTGRESQL},
    _V2,
    _V3,
    _V4,
)
