"""What a run is pinned to: the pricing pack and the ledger commit it reads.

By default the pack serving the run's asof (`PackStore.health`) and the ledger head; with
`ExecuteOptions.pricing_pack_id` / `ledger_commit_hash` the ones named, so a rerun reproduces
an earlier run after new packs and transactions. A pattern that `requires_pack` goes through
the freshness gate on its pack (`services.common.freshness`), read from the store for each
run; another pattern pins the pack only when it is FRESH or STALE (a warming or failed pack is
nothing a run should name), read through a cache of `SERVED_CACHE_SECONDS` — what such a run
names is informational, and the hot path of `chat` does no query for it.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from saga.execution.v1 import options_pb2
from services.common.errors import FieldViolation, InvalidArgument
from services.common.freshness import PackState, check_fresh
from services.common.ttl_cache import TtlCache
from services.runtime.ledger import GENESIS, Ledger
from services.runtime.packs import Health, PackStore


@dataclass(frozen=True)
class Pins:
    """The pack (empty: none) and ledger commit of one run."""

    pricing_pack_id: str
    ledger_commit_hash: str
    pack_source: str = ""
    """The pinned pack's data source (the rights registry's name for it); empty: no pack."""


def pack_state(health: Health) -> PackState:
    """The freshness gate's view of `health`."""
    pack = health.pack
    ready = pack.ready_by if pack is not None and pack.status == "WARMING" else ""
    return PackState(
        status=health.status,
        pack_id=health.pack_id,
        asof=health.asof,
        pack_asof=pack.asof if pack is not None else "",
        estimated_ready=datetime.datetime.fromisoformat(ready) if ready else None,
    )


SERVED_CACHE_SECONDS = 1.0
"""How long the pack a pattern without `requires_pack` names is reused (as the gateway's)."""


class Pinning:
    """Resolves a run's pins against the pack store and the ledger."""

    def __init__(self, packs: PackStore, ledger: Ledger) -> None:
        self._packs = packs
        self._ledger = ledger
        self._served: TtlCache[str, Health] = TtlCache(
            "served-pack", packs.health, SERVED_CACHE_SECONDS
        )

    async def pin(
        self, asof: str, options: options_pb2.ExecuteOptions, requires_pack: bool
    ) -> Pins:
        """The run's pins; the gate's refusal, or NOT_FOUND for a pin that names nothing."""
        if options.pricing_pack_id:
            health = await self._packs.health_of(options.pricing_pack_id, asof)
            if health.pack is not None and health.pack.asof > asof:
                raise InvalidArgument(
                    f"pack {health.pack_id} is of {health.pack.asof}, after the run's asof",
                    reason="PACK_AFTER_ASOF",
                    field_violations=[
                        FieldViolation("options.pricing_pack_id", f"a pack of {asof} or before")
                    ],
                )
        elif requires_pack:
            health = await self._packs.health(asof)  # the gate reads the store itself
        else:
            health = await self._served.get(asof)
        if requires_pack:
            check_fresh(
                pack_state(health), options.allow_stale_pack, datetime.datetime.now(datetime.UTC)
            )
            pack_id = health.pack_id
        else:
            pack_id = health.pack_id if health.status in ("FRESH", "STALE") else ""
        source = health.pack.source if pack_id and health.pack is not None else ""
        return Pins(pack_id, await self._commit(options.ledger_commit_hash), source)

    async def _commit(self, pinned: str) -> str:
        head = self._ledger.head()
        if not pinned or pinned in (head, GENESIS):
            return pinned or head
        await self._ledger.commit_seq(pinned)  # NOT_FOUND unless it is a hash of the chain
        return pinned
