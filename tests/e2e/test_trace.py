"""One trace per execution: every service on the path reports spans under the trace id the
client sees in Accepted, including the optimizer's background recording of the outcome."""

from __future__ import annotations

import asyncio
from pathlib import Path

from google.protobuf import struct_pb2

from saga.gateway.v1 import execution_pb2, execution_pb2_grpc
from tests.harness import stack_for
from tests.otlp import Collector


async def test_execute_is_one_trace_across_every_service(tmp_path: Path) -> None:
    collector = Collector()
    endpoint = await collector.start()
    try:
        async with stack_for(
            tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_BSP_SCHEDULE_DELAY="100"
        ) as stack:
            inputs = struct_pb2.Struct()
            inputs.update({"prompt": "trace me"})
            async with stack.gateway_channel() as ch:
                events = [
                    e
                    async for e in execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
                        execution_pb2.ExecuteRequest(pattern_id="chat", inputs=inputs),
                        metadata=(("authorization", f"Bearer {stack.admin_key()}"),),
                        timeout=60,
                    )
                ]
            trace_id = events[0].accepted.trace_id
            assert events[-1].WhichOneof("event") == "completed"
            wanted = {"gateway", "auth", "agent-runtime", "router", "optimizer"}
            for _ in range(100):  # the optimizer's recording happens after the stream ends
                if wanted <= {s.service for s in collector.spans if s.trace_id == trace_id}:
                    break
                await asyncio.sleep(0.1)
    finally:
        await collector.stop()
    spans = [s for s in collector.spans if s.trace_id == trace_id]
    assert {s.service for s in spans} >= wanted
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if not s.parent_id]
    assert len(roots) == 1
    assert roots[0].service == "gateway"
    assert all(s.parent_id in ids for s in spans if s.parent_id), "a span's parent is missing"
    names = {(s.service, s.name) for s in spans}
    assert ("auth", "/saga.auth.v1.AuthService/Authenticate") in names
    assert ("optimizer", "/saga.optimizer.v1.OptimizerService/RecordOutcomes") in names
    assert not [s for s in collector.spans if "grpc.health" in s.name]
