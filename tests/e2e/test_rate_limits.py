"""Rate limits on Execute, as a client sees them (SPEC 3.1): all six services as real
processes, the standard limits profile (the harness lifts limits for every other test).

A run that must hold its concurrency slot calls a fake provider scripted to stream for
longer than any test, so "this run is in flight" is a fact, not a matter of timing.
Redis is the one on 127.0.0.1:6379, each stack under its own key prefix; "Redis goes away"
is a loopback TCP proxy in front of it that the test stops and starts.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from saga.gateway.v1 import admin_pb2, admin_pb2_grpc, execution_pb2_grpc
from services.common.status import describe
from tests.e2e.test_budgets import new_key, new_user
from tests.e2e.test_cli import ok, refused_in_one_line, saga_cli
from tests.e2e.test_execute import bearer, chat
from tests.e2e.test_resilience_gateway import provider_toml
from tests.fakes.providers import FakeProviders, Script
from tests.fakes.tcp_proxy import TcpProxy
from tests.harness import Stack, metric, stack_for

REDIS = ("127.0.0.1", 6379)
ENDLESS = Script(tokens=100_000, interval=0.05)
"""A provider answer that streams for longer than any test: its run holds its slot until
the client cancels (a cancel mid-stream reaches the provider)."""
PER_HOUR = 4
STANDARD = {
    "SAGA_GATEWAY__LIMITS__PROFILE": "standard",
    "SAGA_GATEWAY__LIMITS__REQUESTS_PER_HOUR": str(PER_HOUR),
    "SAGA_GATEWAY__LIMITS__LEASE_TTL_SECONDS": "2",
}


def redis_env(port: int = REDIS[1], **extra: str) -> dict[str, str]:
    """Limits in the Redis at `port`, under a prefix of this stack's own."""
    return {
        "SAGA_GATEWAY__LIMITS__REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "SAGA_GATEWAY__LIMITS__REDIS_KEY_PREFIX": f"saga:test:{secrets.token_hex(6)}:",
        **extra,
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeProviders]:
    async with FakeProviders() as f:
        yield f


def config(fake: FakeProviders) -> str:
    return provider_toml("fake", fake, "ollama", max_retries=0)


async def new_user_key(stack: Stack) -> str:
    """A new user's API key (scopes execute and usage:read)."""
    _, session = await new_user(stack)
    return (await new_key(stack, session))[0]


async def set_key_limits(stack: Stack, key_id: str, rpm: int, concurrent: int, as_key: str) -> None:
    async with stack.gateway_channel() as ch:
        await admin_pb2_grpc.AdminServiceStub(ch).SetApiKeyLimits(
            admin_pb2.SetApiKeyLimitsRequest(
                key_id=key_id, requests_per_minute=rpm, concurrent_executions=concurrent
            ),
            metadata=bearer(as_key),
            timeout=10,
        )


async def run(stack: Stack, key: str, gateway: str = "gateway") -> grpc.aio.AioRpcError | None:
    """One Execute to its end: None when it completed, else its error."""
    async with stack.gateway_channel(gateway) as ch:
        call = execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
            chat("hi"), metadata=bearer(key), timeout=60
        )
        try:
            events = [e async for e in call]
        except grpc.aio.AioRpcError as error:
            return error
    assert events[-1].WhichOneof("event") == "completed"
    return None


class Held:
    """An Execute whose provider call hangs: it holds its slot until `cancel`."""

    def __init__(self, stack: Stack, key: str, gateway: str = "gateway") -> None:
        self._channel = stack.gateway_channel(gateway)
        self.call = execution_pb2_grpc.ExecutionServiceStub(self._channel).Execute(
            chat("hold"), metadata=bearer(key), timeout=60
        )

    async def accepted(self) -> None:
        """Wait for the run's first token: it was admitted and its provider call (which took
        the script queued for it) is streaming."""
        kinds = []
        while not kinds or kinds[-1] != "token":
            event = await self.call.read()
            assert event is not grpc.aio.EOF, kinds
            kinds.append(event.WhichOneof("event"))  # type: ignore[union-attr]
        assert kinds[0] == "accepted"

    async def cancel(self) -> None:
        self.call.cancel()
        await self._channel.close()


def reason(error: grpc.aio.AioRpcError | None) -> tuple[grpc.StatusCode, str] | None:
    return None if error is None else (error.code(), describe(error).reason)


async def until_admitted(stack: Stack, key: str, gateway: str = "gateway") -> None:
    """Execute until one completes (a slot frees, Redis returns), within 30 s."""
    deadline = time.monotonic() + 30
    while (error := await run(stack, key, gateway)) is not None:
        assert time.monotonic() < deadline, reason(error)
        await asyncio.sleep(0.2)


async def test_five_parallel_executes_with_one_key_run_one(
    tmp_path: Path, fake: FakeProviders
) -> None:
    fake.script("ollama", ENDLESS)
    async with stack_for(tmp_path, config=config(fake), **STANDARD) as stack:
        key = await new_user_key(stack)

        async def execute() -> tuple[str, grpc.aio.AioRpcError | None, Held]:
            held = Held(stack, key)
            try:
                await held.accepted()
                return "running", None, held
            except grpc.aio.AioRpcError as error:
                return "refused", error, held

        outcomes = await asyncio.gather(*(execute() for _ in range(5)))
        assert sorted(o[0] for o in outcomes) == ["refused"] * 4 + ["running"]
        for _, error, _ in (o for o in outcomes if o[0] == "refused"):
            assert error is not None
            details = describe(error)
            assert (error.code(), details.reason) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "CONCURRENCY_LIMITED",
            )
            assert details.retry_after is not None
            assert details.retry_after > 0
            assert [v.description for v in details.quota_violations] == ["1 executions at once"]
            # The same values as headers (the HTTP door's) and as trailers.
            for sent in (error.initial_metadata(), error.trailing_metadata()):
                assert dict(sent or ())["x-ratelimit-limit"] == str(PER_HOUR)
        assert (
            await metric(
                stack, "gateway", "saga_gateway_rate_limit_refusals_total", limit="concurrent"
            )
            == 4
        )
        (running,) = [o[2] for o in outcomes if o[0] == "running"]
        for _, _, held in outcomes:
            if held is not running:
                await held.cancel()
        await running.cancel()
        # The cancelled run gave its slot back: the next one runs at once.
        assert await run(stack, key) is None


async def test_per_user_requests_per_hour_then_retry_info(
    tmp_path: Path, fake: FakeProviders
) -> None:
    async with stack_for(tmp_path, config=config(fake), **STANDARD) as stack:
        key, other = await new_user_key(stack), await new_user_key(stack)
        remaining = []
        for _ in range(PER_HOUR):
            async with stack.gateway_channel() as ch:
                call = execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
                    chat("hi"), metadata=bearer(key), timeout=60
                )
                [e async for e in call]
                headers = dict(await call.initial_metadata())
            assert headers["x-ratelimit-limit"] == str(PER_HOUR)
            remaining.append(int(headers["x-ratelimit-remaining"]))
        assert remaining == list(range(PER_HOUR - 1, -1, -1))
        error = await run(stack, key)
        assert reason(error) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
        assert error is not None
        details = describe(error)
        # One request's worth of the hour comes back after 3600 / PER_HOUR seconds.
        assert details.retry_after is not None
        assert 0 < details.retry_after <= 3600 / PER_HOUR
        assert details.quota_violations[0].description == f"{PER_HOUR} Executes per hour"
        assert dict(error.trailing_metadata() or ())["x-ratelimit-remaining"] == "0"
        assert await run(stack, other) is None  # another user is not affected


async def test_an_admin_sets_a_keys_own_limits(tmp_path: Path, fake: FakeProviders) -> None:
    async with stack_for(tmp_path, config=config(fake), **STANDARD) as stack:
        _, session = await new_user(stack)
        (wide, wide_id), (plain, _) = await new_key(stack, session), await new_key(stack, session)
        with pytest.raises(grpc.aio.AioRpcError) as denied:  # only an admin may
            await set_key_limits(stack, wide_id, 2, 2, as_key=plain)
        assert reason(denied.value) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING")
        shown = ok(
            await asyncio.to_thread(
                saga_cli, stack, "keys", "limits", wide_id, "--rpm", "3", "--concurrent", "2"
            )
        )
        assert shown.strip() == f"{wide_id}: 3/min, 2 at once"
        refused_in_one_line(await asyncio.to_thread(saga_cli, stack, "keys", "limits", wide_id))

        fake.script("ollama", ENDLESS, ENDLESS, ENDLESS)
        first, second = Held(stack, wide), Held(stack, wide)
        await first.accepted()
        await second.accepted()  # two at once for this key
        error = await run(stack, wide)
        assert reason(error) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "CONCURRENCY_LIMITED")
        assert error is not None
        assert describe(error).quota_violations[0].subject == f"key:{wide_id}"
        assert dict(error.trailing_metadata() or ())["x-ratelimit-limit"] == "3"
        # The key's own counters: the user's other key still has the default slot.
        third = Held(stack, plain)
        await third.accepted()
        for held in (first, second, third):
            await held.cancel()
        assert await run(stack, wide) is None  # its third Execute this minute
        error = await run(stack, wide)
        assert reason(error) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
        assert error is not None
        assert describe(error).quota_violations[0].description == "3 Executes per minute"


async def test_two_gateways_on_one_redis_share_one_limit_and_a_killed_ones_slot_expires(
    tmp_path: Path, fake: FakeProviders
) -> None:
    fake.script("ollama", ENDLESS)
    gateways = {"gateway": 3}  # "gateway", "gateway-2", "gateway-3"
    env = {**STANDARD, **redis_env()}
    async with stack_for(tmp_path, config=config(fake), replicas=gateways, **env) as stack:
        key = await new_user_key(stack)
        held = Held(stack, key, "gateway-2")
        await held.accepted()
        # The slot taken through one replica is held for the other.
        assert reason(await run(stack, key, "gateway")) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "CONCURRENCY_LIMITED",
        )
        # kill -9: no release runs, only the lease's TTL frees the slot.
        stack.processes["gateway-2"].kill()
        stack.processes["gateway-2"].wait()
        await held.cancel()
        await until_admitted(stack, key, "gateway")
        # Requests are counted once across replicas: PER_HOUR in all, whichever replica.
        counted = 2  # the held run and the one admitted after the kill
        while counted < PER_HOUR:
            assert await run(stack, key, "gateway-3" if counted % 2 else "gateway") is None
            counted += 1
        for gateway in ("gateway", "gateway-3"):
            assert reason(await run(stack, key, gateway)) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "RATE_LIMITED",
            )


async def test_redis_down_fails_closed_then_recovers(tmp_path: Path, fake: FakeProviders) -> None:
    async with TcpProxy(*REDIS) as proxy:
        env = redis_env(proxy.port, SAGA_GATEWAY__LIMITS__REDIS_RETRY_SECONDS="0.2")
        async with stack_for(tmp_path, config=config(fake), **STANDARD, **env) as stack:
            key = await new_user_key(stack)
            assert await run(stack, key) is None
            await proxy.stop()
            error = await run(stack, key)
            assert reason(error) == (grpc.StatusCode.UNAVAILABLE, "RATE_LIMITER_UNAVAILABLE")
            assert error is not None
            assert describe(error).retry_after is not None
            assert await metric(stack, "gateway", "saga_gateway_rate_limiter_degraded") == 1
            assert "rate limiter degraded" in stack.read_log("gateway")
            await proxy.start()
            await until_admitted(stack, key)
            assert await metric(stack, "gateway", "saga_gateway_rate_limiter_degraded") == 0
            assert "rate limiter recovered" in stack.read_log("gateway")


async def test_redis_down_fails_open_to_local_limits(tmp_path: Path, fake: FakeProviders) -> None:
    async with TcpProxy(*REDIS) as proxy:
        env = redis_env(
            proxy.port,
            SAGA_GATEWAY__LIMITS__REDIS_RETRY_SECONDS="0.2",
            SAGA_GATEWAY__LIMITS__REDIS_FAILURE_MODE="open",
        )
        async with stack_for(tmp_path, config=config(fake), **STANDARD, **env) as stack:
            key = await new_user_key(stack)
            await proxy.stop()
            assert await run(stack, key) is None  # decided locally
            assert await metric(stack, "gateway", "saga_gateway_rate_limiter_degraded") == 1
            assert "rate limiter degraded" in stack.read_log("gateway")
            # The local limits still hold: one run at a time.
            fake.script("ollama", ENDLESS)
            held = Held(stack, key)
            await held.accepted()
            assert reason(await run(stack, key)) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "CONCURRENCY_LIMITED",
            )
            await held.cancel()
            await proxy.start()
            # Decisions stay local until an Execute after the retry interval finds Redis.
            deadline = time.monotonic() + 30
            while await metric(stack, "gateway", "saga_gateway_rate_limiter_degraded") != 0:
                assert time.monotonic() < deadline
                await until_admitted(stack, key)
            assert "rate limiter recovered" in stack.read_log("gateway")


async def test_both_http_doors_count_and_refuse_like_grpc(
    tmp_path: Path, fake: FakeProviders
) -> None:
    """The facade's /v1/execute and the OpenAI door draw on the same per-user limit as the
    gRPC door, send its x-ratelimit-* headers, and refuse with 429 + Retry-After."""
    async with stack_for(tmp_path, config=config(fake), **STANDARD) as stack:
        key = await new_user_key(stack)
        base = f"http://127.0.0.1:{stack.ports['gateway'].http_port}/v1"
        auth = {"Authorization": f"Bearer {key}"}
        openai_body = {"model": "saga/default", "messages": [{"role": "user", "content": "hi"}]}
        execute_body = {"pattern_id": "chat", "inputs": {"prompt": "hi"}}
        calls = [("/chat/completions", openai_body), ("/execute", execute_body)] * 2
        async with aiohttp.ClientSession() as http:
            remaining = []
            for path, body in calls:
                async with http.post(base + path, json=body, headers=auth) as answered:
                    assert answered.status == 200, await answered.text()
                    assert answered.headers["x-ratelimit-limit"] == str(PER_HOUR)
                    remaining.append(int(answered.headers["x-ratelimit-remaining"]))
            assert remaining == list(range(PER_HOUR - 1, -1, -1))
            for path, body in calls[:2]:
                async with http.post(base + path, json=body, headers=auth) as refused:
                    error = (await refused.json())["error"]
                    assert refused.status == 429, error
                    assert int(refused.headers["Retry-After"]) > 0
                    assert refused.headers["x-ratelimit-remaining"] == "0"
                    reason_of = error.get("reason") or error.get("code")
                    assert reason_of == "RATE_LIMITED", error
