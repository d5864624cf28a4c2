"""Key rotation, re-encryption and the vault's status.

`rotate_key` adds a fresh active key to a writable keyring; existing rows keep their key.
`rewrap` then moves every row (and the canary) to the active key in batches, each batch one
transaction, so it can be interrupted and simply run again; when no row is left under an old
key, that key is retired from a writable keyring. A key is never retired while a row — or the
canary — still uses it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from services.common.errors import FailedPrecondition
from services.vault.barrier import Barrier, key_for
from services.vault.crypto import seal, unseal
from services.vault.keyring import generate_key
from services.vault.store import CANARY_ROW, SecretStore

log = logging.getLogger("saga.vault")


@dataclass(frozen=True)
class Progress:
    """Where a rewrap stands, reported after each batch."""

    rows_total: int
    rows_done: int
    active_key_id: str
    done: bool


@dataclass(frozen=True)
class VaultStatus:
    """Serving or sealed, and which keys the rows use."""

    sealed_reason: str
    active_key_id: str
    key_ids_in_use: tuple[str, ...]
    rows_by_key: Mapping[str, int]


async def rotate_key(barrier: Barrier) -> str:
    """Generate a new active key in a writable keyring; FAILED_PRECONDITION
    `KEYRING_READ_ONLY` (with the operator's procedure) otherwise."""
    barrier.require_unsealed()
    source = barrier.source
    if not source.writable:
        raise FailedPrecondition(
            f"RotateKey cannot add a key: {source.read_only_procedure}",
            reason="KEYRING_READ_ONLY",
            metadata={"keyring": source.description},
        )
    async with barrier.keyring_lock:
        key = generate_key(barrier.keyring.ids)
        rotated = barrier.keyring.with_active(key)
        # Saved before use: no row is ever written under a key the keyring could lose.
        await asyncio.to_thread(source.save, rotated)
        barrier.keyring = rotated
    log.info(
        "key rotated",
        extra={"active_key_id": key.id, "key_ids": list(rotated.ids)},
    )
    return key.id


async def keys_in_use(barrier: Barrier) -> dict[str, int]:
    """Live rows per key id, with the canary's key counted as in use (at 0 rows if alone)."""
    rows = await barrier.store.rows_by_key()
    async with barrier.store.transaction() as tx:
        canary = await SecretStore.canary(tx)
    if canary is not None:
        rows.setdefault(canary.key_id, 0)
    return rows


async def status(barrier: Barrier) -> VaultStatus:
    """The vault's state and key usage (never secrets)."""
    in_use = await keys_in_use(barrier)
    rows = {k: n for k, n in in_use.items() if n}
    return VaultStatus(
        sealed_reason=barrier.sealed_reason,
        active_key_id=barrier.keyring.active_id,
        key_ids_in_use=tuple(sorted(in_use)),
        rows_by_key=rows,
    )


async def _rewrap_canary(barrier: Barrier) -> None:
    active = barrier.keyring.active
    async with barrier.store.transaction() as tx:
        canary = await SecretStore.canary(tx)
        if canary is None or canary.key_id == active.id:
            return
        plaintext = unseal(key_for(barrier.keyring, canary.key_id), CANARY_ROW, canary)
        await SecretStore.reseal_canary(tx, canary.key_id, seal(active, CANARY_ROW, plaintext))


async def _rewrap_batch(barrier: Barrier, size: int) -> tuple[int, int]:
    """Re-encrypt up to `size` rows under the active key in one transaction:
    (rows found, rows re-encrypted — fewer when a concurrent writer got there first)."""
    done = 0
    active = barrier.keyring.active
    async with barrier.store.transaction() as tx:
        rows = await SecretStore.not_under(tx, active.id, size)
        for stored in rows:
            key = key_for(barrier.keyring, stored.sealed.key_id)
            sealed = seal(active, stored.row, unseal(key, stored.row, stored.sealed))
            if await SecretStore.reseal(tx, stored.row, stored.sealed.key_id, sealed):
                done += 1
    return len(rows), done


async def retire_unused_keys(barrier: Barrier) -> tuple[str, ...]:
    """Remove from a writable keyring every old key no row uses; the ids removed."""
    if not barrier.source.writable:
        return ()
    async with barrier.keyring_lock:
        in_use = await keys_in_use(barrier)
        keyring = barrier.keyring
        retired = tuple(k for k in keyring.ids if k != keyring.active_id and k not in in_use)
        if retired:
            smaller = keyring.without(retired)
            await asyncio.to_thread(barrier.source.save, smaller)
            barrier.keyring = smaller
    if retired:
        log.info("keys retired", extra={"retired_key_ids": list(retired)})
    return retired


async def rewrap(barrier: Barrier, batch_size: int) -> AsyncIterator[Progress]:
    """Move every row to the active key, `batch_size` rows per transaction, reporting
    progress after each batch; the last report has `done` set."""
    barrier.require_unsealed()
    await _rewrap_canary(barrier)
    total = await barrier.store.count_not_under(barrier.keyring.active_id)
    done = 0
    log.info("rewrap started", extra={"rows_total": total, "batch_size": batch_size})
    while True:
        # A RotateKey during the rewrap changes the target; rows follow the newest key.
        found, batch = await _rewrap_batch(barrier, batch_size)
        if found == 0:
            break
        done += batch
        total = max(total, done)
        yield Progress(total, done, barrier.keyring.active_id, False)
    await _rewrap_canary(barrier)
    retired = await retire_unused_keys(barrier)
    log.info(
        "rewrap done",
        extra={"rows_done": done, "retired_key_ids": list(retired)},
    )
    yield Progress(total, done, barrier.keyring.active_id, True)
