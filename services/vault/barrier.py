"""The barrier (HashiCorp Vault's word): everything between the vault's API and its storage.
Secrets go in sealed under the active key and come out only if they authenticate for their
row; writes are compare-and-set on the secret's version; a keyring that cannot open the
canary leaves the barrier sealed, refusing every secret operation instead of serving garbage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common.database import now_micros
from services.common.errors import Aborted, FailedPrecondition, NotFound
from services.vault import bounds
from services.vault.crypto import RowId, SecretCorrupt, seal, unseal
from services.vault.keyring import Key, Keyring, KeyringSource
from services.vault.store import CANARY_ROW, Head, SecretStore, StoredVersion

log = logging.getLogger("saga.vault")

CANARY_PLAINTEXT = b"saga-vault-canary"
_RACE_ATTEMPTS = 64
"""Lost compare-and-set races an unconditional write retries before giving up (each loss
means another writer of the same secret committed, so progress is guaranteed)."""


@dataclass(frozen=True)
class Secret:
    """One decrypted version of a secret."""

    version: int
    payload: bytes = field(repr=False)
    metadata: Mapping[str, str]
    created_at: int


@dataclass(frozen=True)
class SecretInfo:
    """A secret as listed: its latest version's everything but the payload."""

    name: str
    version: int
    metadata: Mapping[str, str]
    updated_at: int
    key_id: str


def _conflict(expected: int, current: int) -> Aborted:
    return Aborted(
        f"expected version {expected}, but the current version is {current}: read it again, "
        "then retry",
        reason="VERSION_CONFLICT",
        metadata={"currentVersion": str(current), "expectedVersion": str(expected)},
    )


def _not_found(version: int = 0) -> NotFound:
    what = f"version {version} of the secret" if version else "the secret"
    return NotFound(f"{what} does not exist", reason="SECRET_NOT_FOUND")


def key_for(keyring: Keyring, key_id: str) -> Key:
    """The key a row names; FAILED_PRECONDITION `KEY_NOT_LOADED` when this process lacks it
    (another replica rotated to a key this one was not restarted with)."""
    key = keyring.get(key_id)
    if key is None:
        raise FailedPrecondition(
            f"the row is encrypted under key {key_id}, which this vault's keyring does not "
            "hold: restart the vault with the current keyring",
            reason="KEY_NOT_LOADED",
            metadata={"keyId": key_id},
        )
    return key


class Barrier:
    """Sealed storage of versioned secrets (see the module docstring)."""

    def __init__(self, store: SecretStore, source: KeyringSource, keyring: Keyring) -> None:
        self.store = store
        self.source = source
        self.keyring = keyring
        self.sealed_reason = ""
        self.keyring_lock = asyncio.Lock()
        """Held while the keyring changes (RotateKey, retiring keys)."""

    @classmethod
    async def open(cls, store: SecretStore, source: KeyringSource, keyring: Keyring) -> Barrier:
        """Check `keyring` (loaded from `source`) against the canary, which is written on
        first start; sealed when it cannot open the canary or lacks a key rows use."""
        barrier = cls(store, source, keyring)
        barrier.sealed_reason = await barrier._check_canary()
        if not barrier.sealed_reason:
            missing = sorted(set(await store.rows_by_key()) - set(keyring.ids))
            if missing:
                barrier.sealed_reason = (
                    f"rows are encrypted under keys the keyring ({source.description}) lacks: "
                    f"{', '.join(missing)}; restore them to the keyring and restart"
                )
        if barrier.sealed_reason:
            log.error(
                "vault sealed: %s",
                barrier.sealed_reason,
                extra={"keyring": source.description, "key_ids": list(keyring.ids)},
            )
        else:
            log.info(
                "vault unsealed",
                extra={"keyring": source.description, "active_key_id": keyring.active_id},
            )
        return barrier

    async def _check_canary(self) -> str:
        """Why the keyring cannot open the canary ("" when it can)."""
        async with self.store.transaction() as tx:
            canary = await SecretStore.canary(tx)
            if canary is None:
                active = self.keyring.active
                await SecretStore.create_canary(tx, seal(active, CANARY_ROW, CANARY_PLAINTEXT))
                canary = await SecretStore.canary(tx)
        assert canary is not None
        key = self.keyring.get(canary.key_id)
        if key is None:
            return (
                f"the keyring ({self.source.description}) lacks key {canary.key_id}, which the "
                "canary is encrypted under: this is not the keyring these secrets were "
                "written with"
            )
        try:
            if unseal(key, CANARY_ROW, canary) == CANARY_PLAINTEXT:
                return ""
        except SecretCorrupt:
            pass
        return (
            f"key {canary.key_id} of the keyring ({self.source.description}) does not decrypt "
            "the canary: the key material differs from the one the secrets were written with"
        )

    @property
    def sealed(self) -> bool:
        """Whether secret operations are refused."""
        return bool(self.sealed_reason)

    def require_unsealed(self) -> None:
        """Raise FAILED_PRECONDITION `VAULT_SEALED` while sealed."""
        if self.sealed_reason:
            # The details (keyring location, key ids) are for operators: GetStatus and the
            # logs carry them; callers of secret RPCs, and their callers, learn only this.
            raise FailedPrecondition(
                "the vault is sealed: its keyring cannot decrypt its data; an operator must "
                "restore the right keyring and restart it (the reason is in GetStatus)",
                reason="VAULT_SEALED",
            )

    async def put(
        self,
        owner: str,
        name: str,
        payload: bytes,
        metadata: Mapping[str, str],
        expected: int | None = None,
    ) -> int:
        """Write a new version; `expected` None = unconditional, 0 = must not exist,
        n = the current version must be n (else ABORTED `VERSION_CONFLICT`)."""
        bounds.check_put(owner, name, payload, metadata, expected)
        self.require_unsealed()
        for _ in range(_RACE_ATTEMPTS):
            async with self.store.transaction() as tx:
                head = await SecretStore.head(tx, owner, name)
                current = head.current if head else 0
                if expected is not None and expected != current:
                    raise _conflict(expected, current)
                version = (head.last if head else 0) + 1
                if head is None:
                    won = await SecretStore.create_head(tx, owner, name, version)
                else:
                    won = await SecretStore.move_head(tx, owner, name, head, Head(version, version))
                if won:
                    row = RowId(owner, name, version)
                    stored = StoredVersion(
                        row, seal(self.keyring.active, row, payload), metadata, now_micros()
                    )
                    if not await SecretStore.insert_version(tx, stored):
                        raise AssertionError(f"version {version} exists beyond its head")
                    return version
            # Another writer moved the head first: look again (a conditional write now fails
            # with the version that writer left, an unconditional one goes on top of it).
        raise Aborted(
            "too many concurrent writers of this secret; retry",
            reason="VERSION_CONFLICT",
            retry_after=0.1,
        )

    async def get(self, owner: str, name: str, version: int = 0) -> Secret:
        """A version of a live secret (0 = the latest), decrypted."""
        bounds.check_ref(owner, name, version)
        self.require_unsealed()
        stored = await self.store.read(owner, name, version)
        if stored is None:
            raise _not_found(version)
        key = key_for(self.keyring, stored.sealed.key_id)
        try:
            payload = unseal(key, stored.row, stored.sealed)
        except SecretCorrupt:
            log.error(
                "secret row does not authenticate",
                extra={"version": stored.row.version, "key_id": stored.sealed.key_id},
            )
            raise
        return Secret(stored.row.version, payload, stored.metadata, stored.created_at)

    async def delete(self, owner: str, name: str, expected: int | None = None) -> None:
        """Delete every version (tombstones without ciphertext); `expected` as for put."""
        bounds.check_ref(owner, name, expected, "expected_version")
        self.require_unsealed()
        for _ in range(_RACE_ATTEMPTS):
            async with self.store.transaction() as tx:
                head = await SecretStore.head(tx, owner, name)
                if head is None or head.current == 0:
                    raise _not_found()
                if expected is not None and expected != head.current:
                    raise _conflict(expected, head.current)
                if await SecretStore.move_head(tx, owner, name, head, Head(0, head.last)):
                    await SecretStore.destroy(tx, owner, name)
                    return
        raise Aborted(
            "too many concurrent writers of this secret; retry",
            reason="VERSION_CONFLICT",
            retry_after=0.1,
        )

    async def list(
        self, owner: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[SecretInfo], str]:
        """A page of `owner`'s secrets by name (never payloads) and the next page's token."""
        bounds.check_owner(owner)
        size = bounds.page_size(page_size)
        after = bounds.decode_page_token(page_token)
        self.require_unsealed()
        rows = await self.store.page(owner, after, size + 1)
        infos = [
            SecretInfo(r.row.name, r.row.version, r.metadata, r.created_at, r.sealed.key_id)
            for r in rows[:size]
        ]
        more = len(rows) > size
        return infos, bounds.encode_page_token(infos[-1].name) if more else ""
