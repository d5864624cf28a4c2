"""Every service starts from the shared bootstrap, reports health, and stops gracefully."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.identity import SERVICES
from tests.harness import SERVICE_NAMES, Stack, stack_for

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.mark.parametrize("service", SERVICES)
async def test_probe_port_reports_liveness_and_readiness(stack: Stack, service: str) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports[service].probe_port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for name in ("", *SERVICE_NAMES[service]):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == SERVING, name
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAMES[service][0]))
        first = await asyncio.wait_for(watch.read(), 5)
        assert first.status == SERVING
        watch.cancel()
        # A name the process does not serve is NOT_FOUND, so readiness cannot be faked.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Check(health_pb2.HealthCheckRequest(service="saga.nope.v1.X"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("service", SERVICES)
async def test_probe_port_exposes_nothing_but_health(stack: Stack, service: str) -> None:
    method = f"/{SERVICE_NAMES[service][0]}/Anything"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports[service].probe_port}") as ch:
        call = ch.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(b"", timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        reflection = ch.unary_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=bytes,
            response_deserializer=bytes,
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await reflection(b"", timeout=5).read()
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("service", [s for s in SERVICES if s != "gateway"])
async def test_service_port_serves_health_over_mtls(stack: Stack, service: str) -> None:
    async with stack.channel_as("gateway", service) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAMES[service][0]), timeout=5
        )
        assert reply.status == SERVING


async def test_gateway_public_port_is_plaintext_with_health(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.target("gateway")) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="saga.gateway.v1.ExecutionService"), timeout=5
        )
        assert reply.status == SERVING


async def test_metrics_endpoint_counts_rpcs(stack: Stack) -> None:
    async with stack.channel_as("runtime", "router") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for _ in range(3):
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    port = stack.ports["router"].metrics_port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
    body = (await reader.read()).decode()
    writer.close()
    line = next(
        line
        for line in body.splitlines()
        if line.startswith("saga_rpc_server_handled_total{")
        and "/grpc.health.v1.Health/Check" in line
        and 'code="OK"' in line
    )
    assert float(line.rsplit(" ", 1)[1]) >= 3


async def test_sigterm_flips_to_not_serving_while_a_stream_drains(tmp_path: Path) -> None:
    async with stack_for(tmp_path, ["router"], SAGA_SERVER__GRACE_SECONDS="3") as lone:
        probe = grpc.aio.insecure_channel(f"127.0.0.1:{lone.ports['router'].probe_port}")
        try:
            async with lone.channel_as("gateway", "router") as ch:
                # An open stream on the service port: the drain must wait for it.
                watch = health_pb2_grpc.HealthStub(ch).Watch(
                    health_pb2.HealthCheckRequest(service="saga.router.v1.RouterService")
                )
                assert (await asyncio.wait_for(watch.read(), 5)).status == SERVING
                sent = time.monotonic()
                lone.processes["router"].send_signal(15)
                assert (await asyncio.wait_for(watch.read(), 5)).status == NOT_SERVING
                stub = health_pb2_grpc.HealthStub(probe)
                for name in ("", "saga.router.v1.RouterService"):
                    reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)
                    assert reply.status == NOT_SERVING
                # Still draining: the process is alive and the probe still answers.
                assert lone.processes["router"].poll() is None
                code = await asyncio.to_thread(lone.processes["router"].wait, 20)
                assert code == 0
                # The stream was held open until the grace period ended, not cut at once.
                assert time.monotonic() - sent >= 2.5
        finally:
            await probe.close()
    log = lone.read_log("router")
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    messages = [e["msg"] for e in events]
    assert messages.index("signal received") < messages.index("stopped")
    assert all(e["service"] == "router" for e in events)


@pytest.mark.parametrize(("setting", "loop"), [(None, "uvloop"), ("asyncio", "asyncio")])
async def test_a_service_runs_on_the_event_loop_its_config_names(
    tmp_path: Path, setting: str | None, loop: str
) -> None:
    env = {} if setting is None else {"SAGA_SERVER__EVENT_LOOP": setting}
    async with stack_for(tmp_path, ["vault"], **env) as lone:
        log = lone.read_log("vault")
    serving = [e for e in map(json.loads, log.splitlines()) if e.get("msg") == "serving"]
    assert [e["event_loop"] for e in serving] == [loop]


async def test_an_unknown_event_loop_is_a_configuration_error(tmp_path: Path) -> None:
    async with stack_for(tmp_path, [], SAGA_SERVER__EVENT_LOOP="trio") as lone:
        process = lone.start("vault")
        code = await asyncio.to_thread(process.wait, 20)
    assert code != 0
    assert "server.event_loop" in lone.read_log("vault")


async def test_port_in_use_exits_non_zero_with_a_clear_log_line(tmp_path: Path) -> None:
    async with stack_for(tmp_path, []) as lone:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", lone.ports["optimizer"].port))
            taken.listen()
            process = lone.start("optimizer")
            code = await asyncio.to_thread(process.wait, 20)
    assert code == 1
    log = lone.read_log("optimizer")
    assert f"port already in use: 127.0.0.1:{lone.ports['optimizer'].port}" in log
    assert "Traceback" not in log


async def test_oversized_message_is_refused_and_the_server_keeps_serving(stack: Stack) -> None:
    async with stack.channel_as("runtime", "router") as ch:
        check = ch.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=bytes,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await check(b"\n" + b"x" * (5 * 1024 * 1024), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Positive control: a small request on the same channel is answered.
        assert (await check(b"", timeout=5)).status == SERVING
