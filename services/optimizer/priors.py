"""Operator-set priors (UpdateMetrics), persisted so they survive restarts.

Only the values an operator set are stored; the others stay NULL and follow the
configuration, so editing a provider's configured prior still takes effect for every value
nobody overrode. Beside them, when an operator last reset a provider's samples: the ledger
keeps every outcome, and the live metrics are re-read from it (`shared`), so the reset is a
point in time the re-reading starts from rather than a deletion.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping

from services.common.config import ProviderConfig
from services.common.database import Database
from services.optimizer.live_metrics import Prior

FIELDS = tuple(f.name for f in dataclasses.fields(Prior))
"""The prior values an operator may set, in column order."""


class PriorStore:
    """The `provider_priors` table."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def load(self, providers: Iterable[ProviderConfig]) -> dict[str, Prior]:
        """Each configured provider's priors: the configuration overlaid with what
        operators set."""
        rows = {
            str(r["provider"]): r for r in await self._db.fetch("SELECT * FROM provider_priors")
        }
        priors = {}
        for provider in providers:
            prior = Prior.from_config(provider)
            row = rows.get(provider.name)
            if row is not None:
                prior = dataclasses.replace(
                    prior, **{f: float(row[f]) for f in FIELDS if row[f] is not None}
                )
            priors[provider.name] = prior
        return priors

    async def resets(self) -> dict[str, float]:
        """When each provider's samples were last reset (epoch seconds; absent: never)."""
        rows = await self._db.fetch(
            "SELECT provider, samples_since FROM provider_priors WHERE samples_since IS NOT NULL"
        )
        return {str(r["provider"]): float(r["samples_since"]) for r in rows}

    async def save(
        self, provider: str, changes: Mapping[str, float], *, reset_samples: bool = False
    ) -> None:
        """Remember the values in `changes` (keys from FIELDS) for `provider`, keeping the
        ones set before; `reset_samples`: its outcomes until now no longer count."""
        unknown = set(changes) - set(FIELDS)
        if unknown:
            raise ValueError(f"not prior fields: {sorted(unknown)}")
        columns = ", ".join(FIELDS)
        marks = ", ".join(f"${i + 2}" for i in range(len(FIELDS)))
        # An absent value must not erase one set earlier: COALESCE keeps the stored one.
        kept = (*FIELDS, "samples_since")
        updates = ", ".join(f"{f} = COALESCE(excluded.{f}, provider_priors.{f})" for f in kept)
        n = len(FIELDS) + 2
        now = self._clock()
        await self._db.execute(
            f"INSERT INTO provider_priors (provider, {columns}, updated_at, samples_since) "  # noqa: S608
            f"VALUES ($1, {marks}, ${n}, ${n + 1}) ON CONFLICT (provider) DO UPDATE SET "
            f"{updates}, updated_at = excluded.updated_at",
            provider,
            *(changes.get(f) for f in FIELDS),
            now,
            now if reset_samples else None,
        )
