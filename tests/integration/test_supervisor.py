"""`make run`'s supervisor starts the six services, reports them, and stops them in order."""

from __future__ import annotations

import asyncio
import json
import os
import re
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


async def probe_status(stack: Stack, service: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports[service].probe_port}") as ch:
        try:
            reply = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        except grpc.aio.AioRpcError:
            return -1
        return int(reply.status)


async def test_a_crashed_service_is_restarted_alone_while_the_others_serve(
    tmp_path: Path,
) -> None:
    stack = Stack.create(tmp_path)
    process = stack.spawn("supervisor", "services.supervisor")
    out = stack.log_path("supervisor")

    async def until(text: str) -> str:
        deadline = time.monotonic() + 60
        while text not in (log := out.read_text()):
            assert process.poll() is None, log
            assert time.monotonic() < deadline, log
            await asyncio.sleep(0.1)
        return log

    def pids(log: str, service: str) -> list[int]:
        return [int(p) for p in re.findall(rf"started {service} \(pid (\d+)\)", log)]

    try:
        log = await until("Saga is up")
        [router_pid] = pids(log, "router")
        os.kill(router_pid, signal.SIGKILL)
        log = await until("router exited (killed by SIGKILL); restarting in")
        # The rest of the stack never stopped: same gateway process, still SERVING.
        assert await probe_status(stack, "gateway") == health_pb2.HealthCheckResponse.SERVING
        deadline = time.monotonic() + 60
        while len(pids(log := out.read_text(), "router")) < 2 or (
            await probe_status(stack, "router") != health_pb2.HealthCheckResponse.SERVING
        ):
            assert process.poll() is None, log
            assert time.monotonic() < deadline, log
            await asyncio.sleep(0.2)
        assert pids(log, "router")[-1] != router_pid
        for service in SERVICES:
            assert len(pids(log, service)) == (2 if service == "router" else 1), log
        process.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(process.wait, 60) == 0
    finally:
        if process.poll() is None:
            process.kill()
