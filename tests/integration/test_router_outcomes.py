"""Outcomes are reported in the background yet stay in the call's trace: the optimizer's
span for recording a Reason call's outcome carries the trace id of that call (the outcome
carries the call's traceparent; the RecordOutcomes call itself, which may carry many calls'
outcomes, is untraced)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.harness import stack_for
from tests.integration.test_router_reason import (
    PROVIDERS,
    mint,
    new_execution_id,
    request,
    stream_reason,
)
from tests.otlp import Collector

TRACE_ID = "5af7183fb1d4cf5f11b2d3a4e5f60718"
PARENT_ID = "00f067aa0ba902b7"


async def test_the_outcome_is_recorded_in_the_calls_trace(tmp_path: Path) -> None:
    collector = Collector()
    endpoint = await collector.start()
    exe = new_execution_id()
    try:
        async with stack_for(
            tmp_path,
            ["auth", "optimizer", "router"],
            config=PROVIDERS,
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        ) as stack:
            async with stack.channel_as("runtime", "router") as ch:
                got = await stream_reason(
                    ch,
                    request(exe, pinned_provider="cheap"),
                    mint(stack, exe),
                    metadata=(("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),),
                )
            assert got.error is None
            assert '"msg": "serving"' in stack.read_log("optimizer")  # the log is being captured
            for _ in range(200):
                if exe in stack.read_log("optimizer"):
                    break
                await asyncio.sleep(0.05)
            assert exe in stack.read_log("optimizer")
            # Stopping flushes every process's spans to the collector.
            for service in ("router", "optimizer", "auth"):
                assert await asyncio.to_thread(stack.stop, service) == 0
    finally:
        await collector.stop()

    spans = [s for s in collector.spans if s.trace_id == TRACE_ID]
    by_id = {s.span_id: s for s in spans}
    (reason,) = [s for s in spans if s.name.endswith("RouterService/Reason")]
    assert (reason.service, reason.parent_id) == ("router", PARENT_ID)
    recorded = [
        s for s in spans if s.service == "optimizer" and s.name == "saga.optimizer.record_outcomes"
    ]
    assert len(recorded) == 1, [(s.service, s.name) for s in spans]
    # The optimizer's span hangs off the router's Reason span (no client spans are made).
    assert by_id[recorded[0].parent_id] == reason
    # Every span of the call (JWKS fetch included) hangs off a span that was collected.
    assert all(s.parent_id in by_id for s in spans if s is not reason)
