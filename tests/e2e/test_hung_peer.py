"""A peer that hangs (SIGSTOP: its sockets stay open, nothing answers) is found out by HTTP/2
keepalive in seconds: calls through it fail fast with UNAVAILABLE instead of waiting out
their deadline, the peer channels report it, and all is well again once it resumes."""

from __future__ import annotations

import os
import re
import signal
import urllib.request
from pathlib import Path

import grpc
import pytest

from saga.gateway.v1 import execution_pb2_grpc
from services.common.status import describe
from tests.e2e.test_execute import bearer, chat
from tests.harness import Stack, stack_for

# Well under what a hung peer used to cost (~62 s: a 30 s keepalive, its 10 s timeout, then
# a 20 s connect attempt), well over what keepalive needs now (10 s + 5 s).
DEADLINE = 40.0
CONNECTING, READY, TRANSIENT_FAILURE = (
    grpc.ChannelConnectivity.CONNECTING.value[0],
    grpc.ChannelConnectivity.READY.value[0],
    grpc.ChannelConnectivity.TRANSIENT_FAILURE.value[0],
)


async def execute(stack: Stack) -> list[str]:
    async with stack.gateway_channel() as ch:
        call = execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
            chat("are you there?"), metadata=bearer(stack.admin_key()), timeout=DEADLINE
        )
        return [event.WhichOneof("event") async for event in call]


def router_channel_state(stack: Stack) -> int:
    """What the runtime's metrics say of its channel to the router."""
    url = f"http://127.0.0.1:{stack.ports['runtime'].metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    [value] = re.findall(r'^saga_peer_channel_state\{peer="router"\} (\S+)$', text, re.M)
    return int(float(value))


async def test_a_hung_router_fails_calls_fast_and_recovers(tmp_path: Path) -> None:
    async with stack_for(tmp_path) as stack:
        kinds = await execute(stack)  # the runtime's channel to the router is up and warm
        assert kinds[-1] == "completed"
        assert router_channel_state(stack) == READY
        router = stack.processes["router"].pid
        os.kill(router, signal.SIGSTOP)
        try:
            for _ in range(2):  # the call that finds it out, and one after
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await execute(stack)
                details = describe(failed.value)
                assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, details
                assert details.domain == "runtime.saga", details
            assert router_channel_state(stack) in (CONNECTING, TRANSIENT_FAILURE)
        finally:
            os.kill(router, signal.SIGCONT)
        kinds = await execute(stack)
        assert kinds[-1] == "completed"
        assert router_channel_state(stack) == READY
