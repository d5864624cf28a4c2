"""`saga.gateway.v1.PackHealthService` and the freshness gate of Execute (SPEC 3.1).

Pack health comes from the runtime's PackService and is kept for at most
`gateway.pack_health_cache_seconds` (≤ 1 s) per (asof, pack id); a pattern's `requires_pack`
comes from the runtime's GetPattern and is kept for `gateway.pattern_cache_seconds` (patterns
change only when the runtime restarts). So while both are cached the gate is two dict
lookups and no RPC. The gate's rule itself is `services.common.freshness`, which the runtime
applies again to the pack it pins.
"""

from __future__ import annotations

import datetime

import grpc
from prometheus_client import Counter

from saga.execution.v1 import options_pb2, records_pb2
from saga.gateway.v1 import pack_health_pb2, pack_health_pb2_grpc
from saga.runtime.v1 import packs_pb2, packs_pb2_grpc, runtime_pb2, runtime_pb2_grpc
from services.common.asof import resolve_asof
from services.common.config import GatewayConfig
from services.common.errors import SagaError
from services.common.freshness import PackState, check_fresh
from services.common.guard import Context
from services.common.ttl_cache import TtlCache
from services.gateway.edge import Edge

GATE_REFUSALS = Counter(
    "saga_gateway_pack_gate_refusals",
    "Executes the freshness gate refused, by reason (PACK_WARMING, PACK_STALE, ...).",
    ["reason"],
)

_STATUS = {
    records_pb2.PACK_STATUS_FRESH: "FRESH",
    records_pb2.PACK_STATUS_WARMING: "WARMING",
    records_pb2.PACK_STATUS_STALE: "STALE",
    records_pb2.PACK_STATUS_ERROR: "ERROR",
}


def pack_state(health: records_pb2.PackHealth, asof: str) -> PackState:
    """The freshness gate's view of a PackHealth message, for a run of `asof`."""
    return PackState(
        status=_STATUS.get(health.status, ""),
        pack_id=health.pack_id,
        asof=asof,
        pack_asof=health.asof,
        estimated_ready=health.estimated_ready.ToDatetime(datetime.UTC)
        if health.HasField("estimated_ready")
        else None,
    )


class PackGate:
    """Cached pack health and patterns' `requires_pack`, and the gate built on them."""

    def __init__(self, config: GatewayConfig, runtime: grpc.aio.Channel) -> None:
        self._packs = packs_pb2_grpc.PackServiceStub(runtime)
        self._runtime = runtime_pb2_grpc.RuntimeServiceStub(runtime)
        self.health: TtlCache[tuple[str, str], records_pb2.PackHealth] = TtlCache(
            "pack-health", self._health, config.pack_health_cache_seconds
        )
        self._requires_pack: TtlCache[str, bool] = TtlCache(
            "pattern-requires-pack", self._pattern, config.pattern_cache_seconds
        )

    async def _health(self, key: tuple[str, str]) -> records_pb2.PackHealth:
        asof, pack_id = key
        reply = await self._packs.GetPackHealth(
            packs_pb2.GetPackHealthRequest(asof=asof, pack_id=pack_id)
        )
        return reply.health

    async def _pattern(self, pattern_id: str) -> bool:
        reply = await self._runtime.GetPattern(runtime_pb2.GetPatternRequest(pattern_id=pattern_id))
        return reply.pattern.requires_pack

    async def check(self, pattern_id: str, asof: str, options: options_pb2.ExecuteOptions) -> None:
        """Refuse a run of a pattern that reads pack data while the pack serving `asof` (or
        the pinned one) is not fresh; an unknown pattern is the runtime's NOT_FOUND."""
        if not await self._requires_pack.get(pattern_id):
            return
        health = await self.health.get((asof, options.pricing_pack_id))
        try:
            check_fresh(
                pack_state(health, asof),
                options.allow_stale_pack,
                datetime.datetime.now(datetime.UTC),
            )
        except SagaError as refusal:
            GATE_REFUSALS.labels(refusal.reason).inc()
            raise


class PackHealthServicer(pack_health_pb2_grpc.PackHealthServiceServicer):
    """GetPackHealth (cached) and ListPacks, for any authenticated caller."""

    def __init__(self, edge: Edge, gate: PackGate, runtime: grpc.aio.Channel) -> None:
        self._edge = edge
        self._gate = gate
        self._list = runtime.unary_unary(
            "/saga.runtime.v1.PackService/ListPacks",
            request_serializer=pack_health_pb2.ListPacksRequest.SerializeToString,
            response_deserializer=pack_health_pb2.ListPacksResponse.FromString,
        )

    async def GetPackHealth(
        self, request: pack_health_pb2.GetPackHealthRequest, context: Context
    ) -> pack_health_pb2.GetPackHealthResponse:
        """The health of the pack serving asof (today by default), or of a given pack."""
        await self._edge.principal(context)
        asof = resolve_asof(request.asof)
        health = await self._gate.health.get((asof, request.pack_id))
        return pack_health_pb2.GetPackHealthResponse(health=health)

    async def ListPacks(
        self, request: pack_health_pb2.ListPacksRequest, context: Context
    ) -> pack_health_pb2.ListPacksResponse:
        """A page of packs, newest asof first (relayed: the messages are wire twins)."""
        await self._edge.principal(context)
        response: pack_health_pb2.ListPacksResponse = await self._list(request)
        return response
