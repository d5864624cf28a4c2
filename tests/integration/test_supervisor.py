"""`make run`'s supervisor starts the six services, reports them, and stops them in order."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.identity import DISPLAY_NAMES, SERVICES, START_ORDER
from tests.harness import Stack


async def test_supervisor_starts_all_six_and_stops_gateway_first(tmp_path: Path) -> None:
    stack = Stack.create(tmp_path)
    process = stack.spawn("supervisor", "services.supervisor")
    out = stack.log_path("supervisor")
    try:
        deadline = time.monotonic() + 60
        while "Saga is up" not in out.read_text():
            assert process.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            await asyncio.sleep(0.1)
        text = out.read_text()
        # First start: auth made the admin key and the supervisor shows it once.
        assert f"  {stack.admin_key()}\n" in text
        for service in SERVICES:
            assert f"grpc 127.0.0.1:{stack.ports[service].port}" in text
            async with grpc.aio.insecure_channel(
                f"127.0.0.1:{stack.ports[service].probe_port}"
            ) as ch:
                reply = await health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(process.wait, 60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    events = [json.loads(line) for line in out.read_text().splitlines() if line.startswith("{")]
    stopped = [e["service"] for e in events if e["msg"] == "stopped"]
    assert stopped == [DISPLAY_NAMES[s] for s in reversed(START_ORDER)]
