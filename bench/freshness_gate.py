"""What the freshness gate costs an Execute: `PackGate.check` with its caches warm (the hot
path: two dictionary lookups and the rule, no RPC) against the same check with the caches
off (two unary calls to the runtime each time), in process over loopback.

The runtime side is a stand-in answering GetPattern (requires_pack) and GetPackHealth (FRESH)
at once, so a miss measures the gateway's own cost of asking, not the runtime's. The machine
is shared and noisy: read the figures as orders of magnitude.

    .venv/bin/python -m bench.freshness_gate [--calls 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import statistics
import time
from collections.abc import Awaitable, Callable
from functools import partial

import grpc

from saga.execution.v1 import options_pb2, records_pb2
from saga.runtime.v1 import packs_pb2, packs_pb2_grpc, runtime_pb2, runtime_pb2_grpc
from services.common.config import GatewayConfig
from services.gateway.pack_health import PackGate

TODAY = datetime.datetime.now(datetime.UTC).date().isoformat()


class Packs(packs_pb2_grpc.PackServiceServicer):
    async def GetPackHealth(
        self, request: packs_pb2.GetPackHealthRequest, context: object
    ) -> packs_pb2.GetPackHealthResponse:
        health = records_pb2.PackHealth(
            status=records_pb2.PACK_STATUS_FRESH, pack_id="PP_bench", asof=request.asof
        )
        return packs_pb2.GetPackHealthResponse(health=health)


class Patterns(runtime_pb2_grpc.RuntimeServiceServicer):
    async def GetPattern(
        self, request: runtime_pb2.GetPatternRequest, context: object
    ) -> runtime_pb2.GetPatternResponse:
        pattern = runtime_pb2.Pattern(pattern_id=request.pattern_id, requires_pack=True)
        return runtime_pb2.GetPatternResponse(pattern=pattern)


async def timed(check: Callable[[], Awaitable[None]], calls: int) -> tuple[float, float]:
    """(median, p99) of one awaited call of `check`, in microseconds."""
    for _ in range(min(200, calls)):
        await check()
    samples = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        await check()
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return statistics.median(samples), samples[max(int(len(samples) * 0.99) - 1, 0)]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    server = grpc.aio.server()
    packs_pb2_grpc.add_PackServiceServicer_to_server(Packs(), server)
    runtime_pb2_grpc.add_RuntimeServiceServicer_to_server(Patterns(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    options = options_pb2.ExecuteOptions()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            print(f"{args.calls} checks each; microseconds per Execute")
            print(f"{'what':<34}{'median':>10}{'p99':>10}")
            for what, config in (
                ("gate, caches warm (hot path)", GatewayConfig()),
                (
                    "gate, caches off (2 RPCs)",
                    GatewayConfig(pack_health_cache_seconds=0, pattern_cache_seconds=0),
                ),
            ):
                gate = PackGate(config, channel)
                median, p99 = await timed(partial(gate.check, "p", TODAY, options), args.calls)
                print(f"{what:<34}{median:>10.1f}{p99:>10.1f}")
    finally:
        await server.stop(None)


if __name__ == "__main__":
    asyncio.run(main())
