"""Tracing: a caller's W3C traceparent continues in the service's span, health checks are not
traced, and spans are flushed to the OTLP collector on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.harness import stack_for
from tests.otlp import Collector

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


async def test_service_span_joins_the_callers_trace_and_is_flushed_on_stop(
    tmp_path: Path,
) -> None:
    collector = Collector()
    endpoint = await collector.start()
    try:
        async with stack_for(
            tmp_path,
            ["optimizer"],
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            # A batch delay longer than the test: spans can only arrive through the shutdown
            # flush.
            OTEL_BSP_SCHEDULE_DELAY="600000",
        ) as stack:
            async with stack.channel_as("router", "optimizer") as ch:
                await health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
                rank = ch.unary_unary(
                    "/saga.optimizer.v1.OptimizerService/Rank",
                    request_serializer=bytes,
                    response_deserializer=bytes,
                )
                # Whatever Rank answers to an empty request, its server span must join the trace.
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await rank(
                        b"",
                        timeout=5,
                        metadata=(("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),),
                    )
            await asyncio.sleep(0.3)
            assert collector.spans == []
            # Stop off the event loop: the collector must keep answering the final export.
            assert await asyncio.to_thread(stack.stop, "optimizer") == 0
            for _ in range(50):  # the export may still be in flight when the process exits
                if collector.spans:
                    break
                await asyncio.sleep(0.05)
    finally:
        await collector.stop()
    rank_spans = [s for s in collector.spans if s.name.endswith("OptimizerService/Rank")]
    assert len(rank_spans) == 1, collector.spans
    span = rank_spans[0]
    assert (span.trace_id, span.parent_id, span.service) == (TRACE_ID, PARENT_ID, "optimizer")
    assert not [s for s in collector.spans if "Health" in s.name]
