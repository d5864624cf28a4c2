"""`saga.runtime.v1.PackService`: translation between protobuf and the pack store.

Only the gateway may call it (the call matrix); the gateway checks scope `admin` for
PublishPack and relays GetPackHealth and ListPacks for any authenticated caller.
"""

from __future__ import annotations

from saga.execution.v1 import records_pb2
from saga.runtime.v1 import packs_pb2, packs_pb2_grpc
from services.common.asof import resolve_asof, today_utc
from services.common.guard import Context
from services.common.timestamps import from_iso
from services.runtime.packs import Health, PackStore, Price

_STATUS = {
    "FRESH": records_pb2.PACK_STATUS_FRESH,
    "WARMING": records_pb2.PACK_STATUS_WARMING,
    "STALE": records_pb2.PACK_STATUS_STALE,
    "ERROR": records_pb2.PACK_STATUS_ERROR,
}


def health_proto(health: Health) -> records_pb2.PackHealth:
    """The PackHealth message of `health`."""
    out = records_pb2.PackHealth(asof=health.asof)
    pack = health.pack
    if pack is None:
        return out
    out.status = _STATUS[health.status]
    out.pack_id = pack.pack_id
    out.asof = pack.asof
    out.source = pack.source
    out.carried_forward = health.carried_forward
    if pack.created_at:
        out.published_at.CopyFrom(from_iso(pack.created_at))
    if pack.status == "WARMING" and pack.ready_by:
        out.estimated_ready.CopyFrom(from_iso(pack.ready_by))
    summary = out.reconciliation
    summary.prices_total = pack.price_count
    if (r := pack.reconciliation) is not None:
        summary.passed = r.passed
        if r.reconciled_at:
            summary.reconciled_at.CopyFrom(from_iso(r.reconciled_at))
        summary.held_symbols = r.held_symbols
        summary.missing_symbols.extend(r.missing_symbols)
        summary.non_positive_symbols.extend(r.non_positive_symbols)
        summary.duplicate_symbols.extend(r.duplicate_symbols)
        summary.checksum_mismatch = r.checksum_mismatch
    return out


class PackServicer(packs_pb2_grpc.PackServiceServicer):
    """GetPackHealth, ListPacks, PublishPack."""

    def __init__(self, packs: PackStore) -> None:
        self._packs = packs

    async def GetPackHealth(
        self, request: packs_pb2.GetPackHealthRequest, context: Context
    ) -> packs_pb2.GetPackHealthResponse:
        """The pack serving an asof (or a given pack, aged from asof)."""
        asof = resolve_asof(request.asof)
        if request.pack_id:
            health = await self._packs.health_of(request.pack_id, asof)
        else:
            health = await self._packs.health(asof)
        return packs_pb2.GetPackHealthResponse(health=health_proto(health))

    async def ListPacks(
        self, request: packs_pb2.ListPacksRequest, context: Context
    ) -> packs_pb2.ListPacksResponse:
        """A page of packs, newest asof first, each with its status today."""
        healths, token = await self._packs.page(
            request.page_size, request.page_token, today_utc().isoformat()
        )
        return packs_pb2.ListPacksResponse(
            packs=[health_proto(h) for h in healths], next_page_token=token
        )

    async def PublishPack(
        self, request: packs_pb2.PublishPackRequest, context: Context
    ) -> packs_pb2.PublishPackResponse:
        """Store the pack WARMING; it is reconciled in the background."""
        asof = resolve_asof(request.asof)
        prices = [
            Price(p.symbol, p.price_micro, p.currency, p.source or request.source)
            for p in request.prices
        ]
        pack = await self._packs.publish(asof, request.source, prices)
        health = await self._packs.health_of(pack.pack_id, asof)
        return packs_pb2.PublishPackResponse(pack_id=pack.pack_id, health=health_proto(health))
