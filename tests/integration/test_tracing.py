"""Tracing: a caller's W3C traceparent continues in the service's span, health checks are not
traced, and spans are flushed to the OTLP collector on shutdown; a provider attempt's GenAI
span records message content only when `telemetry.capture_message_content` is set."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.harness import stack_for
from tests.integration.test_router_reason import (
    PROVIDERS,
    mint,
    new_execution_id,
    request,
    stream_reason,
)
from tests.otlp import CLIENT, Collector, Span

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


async def reason_spans(tmp_path: Path, **env: str) -> tuple[list[Span], str]:
    """One Reason call (sim provider "cheap") under TRACE_ID; the spans collected when the
    router stops, and the text the caller received."""
    collector = Collector()
    endpoint = await collector.start()
    exe = new_execution_id()
    try:
        async with stack_for(
            tmp_path,
            ["auth", "optimizer", "router"],
            config=PROVIDERS,
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            **env,
        ) as stack:
            async with stack.channel_as("runtime", "router") as ch:
                got = await stream_reason(
                    ch,
                    request(exe, "tell me about sagas", pinned_provider="cheap"),
                    mint(stack, exe),
                    metadata=(("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),),
                )
            assert got.error is None
            assert await asyncio.to_thread(stack.stop, "router") == 0  # flushes its spans
    finally:
        await collector.stop()
    return [s for s in collector.spans if s.trace_id == TRACE_ID], got.text()


def attempt_span(spans: list[Span]) -> Span:
    (reason,) = [s for s in spans if s.name.endswith("RouterService/Reason")]
    (attempt,) = [s for s in spans if s.kind == CLIENT and s.service == "router"]
    assert attempt.parent_id == reason.span_id
    assert attempt.name == "chat sim-cheap"
    return attempt


async def test_message_content_is_not_recorded_by_default(tmp_path: Path) -> None:
    spans, text = await reason_spans(tmp_path)
    attempt = attempt_span(spans)
    assert attempt.attributes["gen_ai.operation.name"] == "chat"
    recorded = [s for s in spans if any(k.startswith("gen_ai.input") for k in s.attributes)]
    assert recorded == []
    assert not [s for s in spans if "gen_ai.output.messages" in s.attributes]
    assert not [s for s in spans if any(text in str(v) for v in s.attributes.values())]


async def test_message_content_is_recorded_when_configured(tmp_path: Path) -> None:
    spans, text = await reason_spans(tmp_path, SAGA_TELEMETRY__CAPTURE_MESSAGE_CONTENT="true")
    attempt = attempt_span(spans)
    assert json.loads(attempt.attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "tell me about sagas"}]}
    ]
    (output,) = json.loads(attempt.attributes["gen_ai.output.messages"])
    assert output["role"] == "assistant"
    assert output["parts"] == [{"type": "text", "content": text}]
    assert output["finish_reason"] in ("stop", "length")
    # Only the attempt's span carries it: the server spans never do.
    assert [s for s in spans if "gen_ai.input.messages" in s.attributes] == [attempt]
