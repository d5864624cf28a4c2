"""Redis out of reach (cut through a TCP proxy in front of 127.0.0.1:6379) while the gateway's
rate limits live in it: callers see the configured `gateway.limits.redis_failure_mode` —
closed (the default) refuses new Executes typed, UNAVAILABLE RATE_LIMITER_UNAVAILABLE with
RetryInfo; open decides them with the gateway's in-memory limits — a run already streaming
finishes either way (its lease renewals fail quietly), the gateway stays ready (the limiter
degrades, it does not take the replica out: readiness is for what it cannot work without at
all), and once Redis is back decisions are shared again by themselves."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from saga.gateway.v1 import execution_pb2_grpc
from services.common.status import describe
from tests.e2e.test_execute import bearer, chat
from tests.e2e.test_rate_limits import (
    REDIS,
    STANDARD,
    config,
    new_user_key,
    reason,
    redis_env,
    run,
    until_admitted,
)
from tests.e2e.test_storage_outage import readiness
from tests.fakes.providers import FakeProviders, Script
from tests.fakes.tcp_proxy import TcpProxy
from tests.harness import Stack, metric, stack_for

EXECUTION = "saga.gateway.v1.ExecutionService"
STREAMING = Script(tokens=40, interval=0.05)
"""A ~2 s answer: long enough to be streaming while Redis is cut, and to outlive a lease
renewal (STANDARD's 2 s lease is renewed every third of it)."""


Streaming = grpc.aio.UnaryStreamCall  # type: ignore[type-arg]


async def streaming_run(stack: Stack, key: str) -> tuple[grpc.aio.Channel, Streaming]:
    """An Execute that has been admitted and is streaming tokens."""
    channel = stack.gateway_channel()
    call = execution_pb2_grpc.ExecutionServiceStub(channel).Execute(
        chat("stream"), metadata=bearer(key), timeout=60
    )
    kinds: list[str] = []
    while not kinds or kinds[-1] != "token":
        event = await call.read()
        assert event is not grpc.aio.EOF, kinds
        kinds.append(event.WhichOneof("event"))  # type: ignore[union-attr]
    assert kinds[0] == "accepted"
    return channel, call


async def rest(call: Streaming) -> str:
    """How a streaming run ended: the kind of its last event, or its code and reason."""
    last = ""
    try:
        while (event := await call.read()) is not grpc.aio.EOF:
            last = event.WhichOneof("event")
    except grpc.aio.AioRpcError as error:
        return f"{error.code().name} {describe(error).reason}"
    return last


@pytest.mark.parametrize("mode", ["closed", "open"])
async def test_redis_outage_is_the_configured_failure_mode_and_recovers(
    tmp_path: Path, mode: str
) -> None:
    async with FakeProviders() as fake, TcpProxy(*REDIS) as proxy:
        # closed is the default: not set, so the test sees what a deployment gets.
        extra = {"SAGA_GATEWAY__LIMITS__REDIS_FAILURE_MODE": "open"} if mode == "open" else {}
        env = redis_env(proxy.port, **extra)
        async with stack_for(tmp_path, config=config(fake), **STANDARD, **env) as stack:
            streaming_key, key = await new_user_key(stack), await new_user_key(stack)
            assert await run(stack, key) is None
            fake.script("ollama", STREAMING)
            channel, call = await streaming_run(stack, streaming_key)
            await proxy.stop()
            during = await run(stack, key)
            if mode == "closed":
                assert reason(during) == (grpc.StatusCode.UNAVAILABLE, "RATE_LIMITER_UNAVAILABLE")
                assert during is not None
                assert describe(during).retry_after is not None
            else:
                assert during is None, reason(during)  # decided by this gateway's own limits
            assert await metric(stack, "gateway", "saga_gateway_rate_limiter_degraded") == 1
            assert await readiness(stack, "gateway", EXECUTION) == "SERVING"
            assert await rest(call) == "completed"
            await channel.close()
            await proxy.start()
            await until_admitted(stack, key)
            # Open mode stays local until an Execute after the retry interval finds Redis.
            for _ in range(100):
                if await metric(stack, "gateway", "saga_gateway_rate_limiter_degraded") == 0:
                    break
                await until_admitted(stack, key)
            assert await metric(stack, "gateway", "saga_gateway_rate_limiter_degraded") == 0
            assert "rate limiter recovered" in stack.read_log("gateway")
