"""The audit log: one row per vault access — when, which service (from its certificate),
what operation, whose secret, an HMAC of the secret's name, and the outcome.

Never the name or the value in clear: the name is tagged with HMAC-SHA256 under a key derived
(HKDF) from the active vault key, and the row records that key's id, so an investigator
holding the keyring can recompute the tag of a name and find its accesses. The outcome is
`OK`, the error's reason, `CANCELLED` (the caller went away before the call ended) or
`INTERNAL`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.common.database import now_micros
from services.vault.keyring import Key, Keyring
from services.vault.store import SecretStore

_HKDF_INFO = b"saga.vault.v1/audit-name-hmac"


@dataclass(frozen=True)
class AuditEntry:
    """One access as recorded."""

    at: int
    caller: str
    operation: str
    owner: str
    name_hmac: str
    hmac_key_id: str
    outcome: str


def _derive(key: Key) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        key.material
    )


class AuditLog:
    """Writes audit rows into the vault's database."""

    def __init__(self, store: SecretStore, keyring: Callable[[], Keyring]) -> None:
        self._store = store
        self._keyring = keyring
        self._derived: dict[str, bytes] = {}

    def name_tag(self, name: str) -> tuple[str, str]:
        """(hex HMAC of `name`, id of the key it was derived from); ("", "") for no name."""
        if not name:
            return "", ""
        key = self._keyring().active
        derived = self._derived.get(key.id)
        if derived is None:
            derived = self._derived[key.id] = _derive(key)
        return hmac.new(derived, name.encode(), hashlib.sha256).hexdigest(), key.id

    async def record(
        self, caller: str, operation: str, owner: str, name: str, outcome: str
    ) -> None:
        """Append one access."""
        tag, key_id = self.name_tag(name)
        await self._store.db.execute(
            "INSERT INTO audit (at, caller, operation, owner, name_hmac, hmac_key_id, outcome) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7)",
            now_micros(),
            caller,
            operation,
            owner,
            tag,
            key_id,
            outcome,
        )

    async def recent(self, limit: int = 100) -> list[AuditEntry]:
        """The newest `limit` entries, newest first."""
        rows = await self._store.db.fetch(
            "SELECT at, caller, operation, owner, name_hmac, hmac_key_id, outcome FROM audit "
            "ORDER BY id DESC LIMIT $1",
            limit,
        )
        return [AuditEntry(**r) for r in rows]
