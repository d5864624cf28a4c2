"""The vault's tables, one migration per version (`services.common.database` applies each
once). Append new versions; never edit one that has shipped.

* `heads` — one row per secret: `current` (the live version, 0 once deleted) and `last` (the
  highest version ever written, so versions are never reused). Every write is a conditional
  update of this row — the compare-and-set that serialises concurrent writers of a secret on
  both backends (PostgreSQL re-checks the condition after a competing update commits).
* `secrets` — every version: key id, nonce, ciphertext, metadata (JSON), time, and a
  `deleted` tombstone (a deleted version keeps its identity and loses its ciphertext).
  Primary key (owner, name, version): two writers can never both store a version.
* `canary` — one row sealed under the active key at first start; a keyring that cannot
  open it is the wrong keyring (sealed mode).
* `audit` — one row per access (see `audit.py`).

Times are integer microseconds since the epoch (see `services.common.database`).
"""

from __future__ import annotations

from services.common.database import Migration

_V1 = """
CREATE TABLE heads (
  owner TEXT{c} NOT NULL, name TEXT{c} NOT NULL,
  current BIGINT NOT NULL, last BIGINT NOT NULL,
  PRIMARY KEY (owner, name));
CREATE TABLE secrets (
  owner TEXT{c} NOT NULL, name TEXT{c} NOT NULL, version BIGINT NOT NULL,
  key_id TEXT NOT NULL, nonce BYTEA NOT NULL, ciphertext BYTEA NOT NULL,
  metadata TEXT NOT NULL, created_at BIGINT NOT NULL,
  deleted BOOLEAN NOT NULL DEFAULT FALSE,
  PRIMARY KEY (owner, name, version));
CREATE INDEX secrets_by_key ON secrets (key_id);
CREATE TABLE canary (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  key_id TEXT NOT NULL, nonce BYTEA NOT NULL, ciphertext BYTEA NOT NULL,
  created_at BIGINT NOT NULL);
CREATE TABLE audit (
  id {serial}, at BIGINT NOT NULL, caller TEXT NOT NULL,
  operation TEXT NOT NULL, owner TEXT NOT NULL, name_hmac TEXT NOT NULL,
  hmac_key_id TEXT NOT NULL, outcome TEXT NOT NULL)
"""

MIGRATIONS: tuple[Migration, ...] = (
    # 1: secrets, their heads, the canary, the audit log. Written once; the dialects differ
    # in two words. PostgreSQL compares and sorts names byte-wise (COLLATE "C") as SQLite
    # does, so listing order and page tokens mean the same on both; the audit's row id is
    # SQLite's rowid, a BIGSERIAL in PostgreSQL.
    {
        "sqlite": _V1.format(c="", serial="INTEGER PRIMARY KEY AUTOINCREMENT"),
        "postgresql": _V1.format(c=' COLLATE "C"', serial="BIGSERIAL PRIMARY KEY"),
    },
)
