"""One trace per execution: every service on the path reports spans under the trace id the
client sees in Accepted, including the optimizer's background recording of the outcome; each
provider attempt is a GenAI CLIENT span under the router's Reason span, and the router's
metrics carry the GenAI client histograms with the conventions' buckets."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import aiohttp
from google.protobuf import struct_pb2
from prometheus_client.parser import text_string_to_metric_families

from saga.gateway.v1 import admin_pb2, admin_pb2_grpc, execution_pb2, execution_pb2_grpc
from tests.e2e.test_execute import bearer
from tests.e2e.test_resilience_gateway import (
    KEEP_CIRCUITS_SHUT,
    RANK_FAILING_PROVIDERS,
    execute,
    fakes,
    provider_toml,
)
from tests.fakes.providers import Script
from tests.harness import stack_for
from tests.otlp import CLIENT, ERROR, Collector


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
    assert ("optimizer", "saga.optimizer.record_outcomes") in names
    assert not [s for s in collector.spans if "grpc.health" in s.name]


# --- GenAI attempt spans and metrics --------------------------------------------------------

# The conventions' ExplicitBucketBoundaries, written out here (not imported from Saga).
GENAI_DURATION_BUCKETS = [
    *(0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92),
    math.inf,
]
GENAI_TOKEN_BUCKETS = [*(float(4**i) for i in range(14)), math.inf]  # 1, 4, 16 … 67108864


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of metric `name` in a Prometheus exposition: (labels, value)."""
    got = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                got.append((dict(sample.labels), sample.value))
    return got


async def test_each_provider_attempt_is_a_genai_client_span_with_metrics(
    tmp_path: Path,
) -> None:
    collector = Collector()
    endpoint = await collector.start()
    try:
        async with fakes(2) as (a, b):
            # "cheap" (openai) fails at once and is not retried: the call falls back to
            # "backup" (ollama), which answers: two attempts, two CLIENT spans.
            config = provider_toml(
                "cheap", a, "openai", credential="api_key", max_retries=0
            ) + provider_toml("backup", b, "ollama", credential="none")
            env = KEEP_CIRCUITS_SHUT | RANK_FAILING_PROVIDERS
            async with stack_for(
                tmp_path,
                config=config,
                OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                OTEL_BSP_SCHEDULE_DELAY="100",
                **env,
            ) as stack:
                async with stack.gateway_channel() as ch:
                    await admin_pb2_grpc.AdminServiceStub(ch).SetProviderKey(
                        admin_pb2.SetProviderKeyRequest(provider="cheap", api_key=a.api_key),
                        metadata=bearer(stack.admin_key()),
                        timeout=10,
                    )
                a.defaults["openai"] = Script(fail="server_error")
                b.defaults["ollama"] = Script(tokens=5, response_model="ollama-model:7b")
                run = await execute(
                    stack, "trace my attempts", preferred_providers=["cheap", "backup"]
                )
                assert run.switches() == [("cheap", "backup", "PROVIDER_UNAVAILABLE")]
                trace_id = run.events[0].accepted.trace_id
                url = f"http://127.0.0.1:{stack.ports['router'].metrics_port}/metrics"
                async with aiohttp.ClientSession() as http, http.get(url) as response:
                    metrics = await response.text()
                # The router's spans are flushed when it stops.
                assert await asyncio.to_thread(stack.stop, "router") == 0
                for _ in range(50):
                    if any(s.kind == CLIENT and s.trace_id == trace_id for s in collector.spans):
                        break
                    await asyncio.sleep(0.1)
    finally:
        await collector.stop()

    spans = [s for s in collector.spans if s.trace_id == trace_id]
    (reason,) = [s for s in spans if s.name == "/saga.router.v1.RouterService/Reason"]
    # The call's span no longer claims gen_ai.system (it held Saga's provider name).
    assert not [k for k in reason.attributes if k.startswith("gen_ai.")], reason.attributes
    assert reason.attributes["saga.provider"] == "backup"
    attempts = sorted(
        (s for s in spans if s.service == "router" and s.kind == CLIENT),
        key=lambda s: s.start_ns,
    )
    # One span per attempt, never per token: the answer streamed five chunks.
    assert b.requests()[-1].tokens == 5
    assert [s.name for s in attempts] == ["chat openai-model", "chat ollama-model"]
    assert all(s.parent_id == reason.span_id for s in attempts)
    failed, answered = (s.attributes for s in attempts)
    for attributes, provider, model, fake in (
        (failed, "openai", "openai-model", a),
        (answered, "ollama", "ollama-model", b),
    ):
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.provider.name"] == provider
        assert attributes["gen_ai.request.model"] == model
        assert (attributes["server.address"], attributes["server.port"]) == (
            "127.0.0.1",
            fake.port,
        )
    assert failed["saga.provider"] == "cheap"
    assert failed["error.type"] == "PROVIDER_UNAVAILABLE"
    assert failed["gen_ai.response.finish_reasons"] == ["error"]
    assert attempts[0].status_code == ERROR
    assert "gen_ai.response.time_to_first_chunk" not in failed
    assert answered["saga.provider"] == "backup"
    assert "error.type" not in answered
    assert answered["gen_ai.response.finish_reasons"] == ["stop"]
    assert answered["gen_ai.response.model"] == "ollama-model:7b"  # as the provider named it
    assert "gen_ai.response.model" not in failed
    reported = b.requests()[-1].usage
    assert reported is not None
    assert (answered["gen_ai.usage.input_tokens"], answered["gen_ai.usage.output_tokens"]) == (
        reported[:2]
    )
    assert 0 < answered["gen_ai.response.time_to_first_chunk"] < 10
    # Content is not recorded unless configured.
    assert not [s for s in spans if "gen_ai.input.messages" in s.attributes]
    assert not [s for s in spans if "trace my attempts" in str(s.attributes)]

    # Metrics, by the conventions' names and buckets, beside Saga's own.
    duration = samples(metrics, "gen_ai_client_operation_duration_seconds_bucket")
    by_provider = {(labels["gen_ai_provider_name"], labels["error_type"]) for labels, _ in duration}
    assert by_provider == {("openai", "PROVIDER_UNAVAILABLE"), ("ollama", "")}
    for provider in ("openai", "ollama"):
        buckets = [
            labels["le"] for labels, _ in duration if labels["gen_ai_provider_name"] == provider
        ]
        assert [float(le) for le in buckets] == GENAI_DURATION_BUCKETS
    labels = next(labels for labels, _ in duration if labels["gen_ai_provider_name"] == "ollama")
    assert labels["gen_ai_operation_name"] == "chat"
    assert labels["gen_ai_request_model"] == "ollama-model"
    assert labels["server_address"] == "127.0.0.1"
    assert labels["server_port"] == str(b.port)
    assert labels["gen_ai_response_model"] == "ollama-model:7b"
    tokens = samples(metrics, "gen_ai_client_token_usage_bucket")
    for kind, count in (("input", reported[0]), ("output", reported[1])):
        rows = [
            (labels["le"], value)
            for labels, value in tokens
            if labels["gen_ai_token_type"] == kind and labels["gen_ai_provider_name"] == "ollama"
        ]
        assert [float(le) for le, _ in rows] == GENAI_TOKEN_BUCKETS
        # Cumulative buckets: the one observation lands in the first bucket ≥ its count.
        first = float(next(le for le, value in rows if value == 1))
        assert first >= count > first / 4
    counts = samples(metrics, "gen_ai_client_operation_duration_seconds_count")
    assert sorted((labels["gen_ai_provider_name"], value) for labels, value in counts) == [
        ("ollama", 1),
        ("openai", 1),
    ]
    ttfc = samples(metrics, "gen_ai_client_operation_time_to_first_chunk_seconds_count")
    assert [(labels["gen_ai_provider_name"], value) for labels, value in ttfc] == [("ollama", 1)]
    assert samples(metrics, "saga_router_attempts_total")  # Saga's own metrics stay
