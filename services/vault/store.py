"""The SQL over the vault's tables (`schema.py` says what each holds), on SQLite or
PostgreSQL through `services.common.database`; nothing here encrypts or decides.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.database import Database, Row, Tx, now_micros, open_database
from services.vault.crypto import RowId, Sealed
from services.vault.schema import MIGRATIONS

CANARY_ROW = RowId(owner="", name="canary", version=0)
"""The canary's identity in its associated data; no secret has an empty owner."""


@dataclass(frozen=True)
class Head:
    """A secret's live version (0 once deleted) and highest version ever written."""

    current: int
    last: int


@dataclass(frozen=True)
class StoredVersion:
    """One stored version of a secret, still encrypted."""

    row: RowId
    sealed: Sealed
    metadata: Mapping[str, str] = field(default_factory=dict)
    created_at: int = 0


def _version(r: Row) -> StoredVersion:
    return StoredVersion(
        row=RowId(r["owner"], r["name"], int(r["version"])),
        sealed=Sealed(r["key_id"], bytes(r["nonce"]), bytes(r["ciphertext"])),
        metadata=json.loads(r["metadata"]),
        created_at=int(r["created_at"]),
    )


_COLUMNS = "s.owner, s.name, s.version, s.key_id, s.nonce, s.ciphertext, s.metadata, s.created_at"


class SecretStore:
    """The vault's database (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    async def open(cls, url: str, namespace: str, data_path: Path) -> SecretStore:
        """Open and migrate the vault's database (`<data_dir>/vault.db` or a PG schema)."""
        return cls(await open_database(url, namespace, data_path, "vault", MIGRATIONS))

    def transaction(self) -> Any:
        """`async with store.transaction() as tx:` — one atomic unit."""
        return self.db.transaction()

    async def close(self) -> None:
        """Release the database."""
        await self.db.close()

    # ----------------------------------------------------------------- versions and heads

    @staticmethod
    async def head(tx: Tx, owner: str, name: str) -> Head | None:
        """The head of (owner, name), if it was ever written."""
        r = await tx.fetchrow(
            "SELECT current, last FROM heads WHERE owner = $1 AND name = $2", owner, name
        )
        return None if r is None else Head(int(r["current"]), int(r["last"]))

    @staticmethod
    async def create_head(tx: Tx, owner: str, name: str, version: int) -> bool:
        """Start the head of a never-written secret at `version`; False if a concurrent
        writer created it first."""
        changed = await tx.execute(
            "INSERT INTO heads (owner, name, current, last) VALUES ($1, $2, $3, $3) "
            "ON CONFLICT (owner, name) DO NOTHING",
            owner,
            name,
            version,
        )
        return changed == 1

    @staticmethod
    async def move_head(tx: Tx, owner: str, name: str, seen: Head, new: Head) -> bool:
        """Compare-and-set the head from `seen` to `new`; False if it changed meanwhile."""
        changed = await tx.execute(
            "UPDATE heads SET current = $3, last = $4 "
            "WHERE owner = $1 AND name = $2 AND current = $5 AND last = $6",
            owner,
            name,
            new.current,
            new.last,
            seen.current,
            seen.last,
        )
        return changed == 1

    @staticmethod
    async def insert_version(tx: Tx, version: StoredVersion) -> bool:
        """Store a new version; False if that (owner, name, version) exists already."""
        changed = await tx.execute(
            "INSERT INTO secrets (owner, name, version, key_id, nonce, ciphertext, metadata, "
            "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
            "ON CONFLICT (owner, name, version) DO NOTHING",
            version.row.owner,
            version.row.name,
            version.row.version,
            version.sealed.key_id,
            version.sealed.nonce,
            version.sealed.ciphertext,
            json.dumps(dict(version.metadata), sort_keys=True),
            version.created_at,
        )
        return changed == 1

    @staticmethod
    async def destroy(tx: Tx, owner: str, name: str) -> None:
        """Tombstone every version of (owner, name) and drop their ciphertexts."""
        await tx.execute(
            "UPDATE secrets SET deleted = TRUE, key_id = '', nonce = $3, ciphertext = $3 "
            "WHERE owner = $1 AND name = $2 AND NOT deleted",
            owner,
            name,
            b"",
        )

    async def read(self, owner: str, name: str, version: int) -> StoredVersion | None:
        """A live version of (owner, name); `version` 0 = the current one."""
        r = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM secrets s JOIN heads h "  # noqa: S608 (constant columns)
            "ON h.owner = s.owner AND h.name = s.name "
            "WHERE s.owner = $1 AND s.name = $2 AND NOT s.deleted AND h.current > 0 "
            "AND s.version = CASE WHEN CAST($3 AS BIGINT) = 0 THEN h.current "
            "ELSE CAST($3 AS BIGINT) END",
            owner,
            name,
            version,
        )
        return None if r is None else _version(r)

    async def page(self, owner: str, after: str, limit: int) -> list[StoredVersion]:
        """The current versions of `owner`'s live secrets named after `after`, by name."""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM heads h JOIN secrets s "  # noqa: S608 (constant columns)
            "ON s.owner = h.owner AND s.name = h.name AND s.version = h.current "
            "WHERE h.owner = $1 AND h.current > 0 AND h.name > $2 ORDER BY h.name LIMIT $3",
            owner,
            after,
            limit,
        )
        return [_version(r) for r in rows]

    # ------------------------------------------------------------------------- rewrap

    async def count_not_under(self, key_id: str) -> int:
        """Live rows encrypted under any key but `key_id`."""
        n = await self.db.fetchval(
            "SELECT COUNT(*) FROM secrets WHERE NOT deleted AND key_id <> $1", key_id
        )
        return int(n or 0)

    @staticmethod
    async def not_under(tx: Tx, key_id: str, limit: int) -> list[StoredVersion]:
        """Up to `limit` live rows encrypted under any key but `key_id`."""
        rows = await tx.fetch(
            f"SELECT {_COLUMNS} FROM secrets s "  # noqa: S608 (constant columns)
            "WHERE NOT s.deleted AND s.key_id <> $1 "
            "ORDER BY s.owner, s.name, s.version LIMIT $2",
            key_id,
            limit,
        )
        return [_version(r) for r in rows]

    @staticmethod
    async def reseal(tx: Tx, row: RowId, old_key_id: str, sealed: Sealed) -> bool:
        """Replace a live row's ciphertext, if it is still under `old_key_id`."""
        changed = await tx.execute(
            "UPDATE secrets SET key_id = $4, nonce = $5, ciphertext = $6 "
            "WHERE owner = $1 AND name = $2 AND version = $3 AND key_id = $7 AND NOT deleted",
            row.owner,
            row.name,
            row.version,
            sealed.key_id,
            sealed.nonce,
            sealed.ciphertext,
            old_key_id,
        )
        return changed == 1

    async def rows_by_key(self) -> dict[str, int]:
        """Live secret rows per key id."""
        rows = await self.db.fetch(
            "SELECT key_id, COUNT(*) AS n FROM secrets WHERE NOT deleted GROUP BY key_id"
        )
        return {r["key_id"]: int(r["n"]) for r in rows}

    # ------------------------------------------------------------------------- canary

    @staticmethod
    async def canary(tx: Tx) -> Sealed | None:
        """The canary row, if one was written."""
        r = await tx.fetchrow("SELECT key_id, nonce, ciphertext FROM canary WHERE id = 1")
        return None if r is None else Sealed(r["key_id"], bytes(r["nonce"]), bytes(r["ciphertext"]))

    @staticmethod
    async def create_canary(tx: Tx, sealed: Sealed) -> None:
        """Write the canary unless another process wrote one first."""
        await tx.execute(
            "INSERT INTO canary (id, key_id, nonce, ciphertext, created_at) "
            "VALUES (1, $1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
            sealed.key_id,
            sealed.nonce,
            sealed.ciphertext,
            now_micros(),
        )

    @staticmethod
    async def reseal_canary(tx: Tx, old_key_id: str, sealed: Sealed) -> bool:
        """Replace the canary, if it is still under `old_key_id`."""
        changed = await tx.execute(
            "UPDATE canary SET key_id = $1, nonce = $2, ciphertext = $3 "
            "WHERE id = 1 AND key_id = $4",
            sealed.key_id,
            sealed.nonce,
            sealed.ciphertext,
            old_key_id,
        )
        return changed == 1
