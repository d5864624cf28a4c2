"""Refresh leases: which replica may call a token endpoint for one (owner, provider) now.

A lease is a row with a holder and an expiry, taken with one conditional upsert (it
succeeds only where no row exists or the row has expired), so of replicas racing exactly
one holds it. The holder deletes its row when done. A holder that backs off after a 429
does not keep the lease while it sleeps: it releases it with a cool-down (the row stays,
unheld, until the backoff ends), so no replica calls the endpoint during the backoff, and
a replica that dies while sleeping blocks nobody. A crashed holder's lease expires.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from services.common.database import Database

FREE = ""
"""The holder of a lease row that only marks a cool-down."""


class RefreshLeases:
    """The lease table."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def take(self, key: str, holder: str, seconds: float) -> bool:
        """Take the lease `key` for `seconds` as `holder`; False when someone holds it or
        its cool-down has not ended."""
        now = self._clock()
        changed = await self._db.execute(
            "INSERT INTO refresh_leases (lease_key, holder, expires_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (lease_key) DO UPDATE SET holder = $2, expires_at = $3"
            " WHERE refresh_leases.expires_at <= $4",
            key,
            holder,
            now + seconds,
            now,
        )
        return changed == 1

    async def release(self, key: str, holder: str, cool_down: float = 0.0) -> None:
        """Give the lease up; with `cool_down`, nobody may take it for that long."""
        if cool_down > 0:
            await self._db.execute(
                "UPDATE refresh_leases SET holder = $1, expires_at = $2"
                " WHERE lease_key = $3 AND holder = $4",
                FREE,
                self._clock() + cool_down,
                key,
                holder,
            )
        else:
            await self._db.execute(
                "DELETE FROM refresh_leases WHERE lease_key = $1 AND holder = $2", key, holder
            )
