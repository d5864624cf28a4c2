"""PostgreSQL out of reach (cut through a TCP proxy in front of the suite's server, real
sockets) while the stack runs: calls fail with a typed UNAVAILABLE — never INTERNAL — the
PostgreSQL-backed services report NOT_SERVING on their readiness probe, and once the
database is back they recover by themselves: SERVING again, the next run completes, no
restart. The gateway has no storage and stays ready throughout."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from saga.execution.v1 import records_pb2
from saga.gateway.v1 import execution_pb2, execution_pb2_grpc, usage_pb2, usage_pb2_grpc
from services.common.status import describe
from tests.conftest import PG_URL, drop_schemas
from tests.e2e.test_execute import bearer, chat
from tests.e2e.test_resilience_gateway import provider_toml
from tests.fakes.providers import FakeProviders, Script
from tests.fakes.tcp_proxy import TcpProxy
from tests.harness import Stack, stack_for


@asynccontextmanager
async def stack_behind_proxy(
    tmp_path: Path, config: str = ""
) -> AsyncIterator[tuple[Stack, TcpProxy]]:
    """A stack whose services reach PostgreSQL through a proxy the test can cut."""
    real = urlsplit(PG_URL)
    proxy = await TcpProxy(real.hostname or "127.0.0.1", real.port or 5432).start()
    url = real._replace(netloc=f"{real.username}@127.0.0.1:{proxy.port}").geturl()
    namespace = f"t{secrets.token_hex(6)}"
    try:
        async with stack_for(
            tmp_path, config=config, SAGA_STORAGE__URL=url, SAGA_STORAGE__NAMESPACE=namespace
        ) as stack:
            yield stack, proxy
    finally:
        await proxy.stop()
        await drop_schemas(namespace)


@pytest.fixture
async def behind_proxy(tmp_path: Path) -> AsyncIterator[tuple[Stack, TcpProxy]]:
    async with stack_behind_proxy(tmp_path) as pair:
        yield pair


READINESS = {
    "auth": "saga.auth.v1.AuthService",
    "router": "saga.router.v1.RouterService",
    "optimizer": "saga.optimizer.v1.OptimizerService",
    "runtime": "saga.runtime.v1.RuntimeService",
    "vault": "saga.vault.v1.VaultService",
}
"""The PostgreSQL-backed services and the readiness name each reports."""


async def readiness(stack: Stack, service: str, name: str) -> str:
    """What `service`'s probe port says about health name `name`."""
    target = f"127.0.0.1:{stack.ports[service].probe_port}"
    async with grpc.aio.insecure_channel(target) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=name), timeout=5
        )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def until_all(stack: Stack, status: str, within: float = 60) -> None:
    """Poll until every PostgreSQL-backed service's readiness says `status`."""
    deadline = time.monotonic() + within
    while True:
        seen = {s: await readiness(stack, s, name) for s, name in READINESS.items()}
        if all(v == status for v in seen.values()):
            return
        assert time.monotonic() < deadline, seen
        await asyncio.sleep(0.2)


async def run(stack: Stack) -> str:
    """ "completed", or the code and reason a run failed with."""
    async with stack.gateway_channel() as ch:
        try:
            events = [
                e
                async for e in execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
                    chat("hello"), metadata=bearer(stack.admin_key()), timeout=30
                )
            ]
        except grpc.aio.AioRpcError as error:
            return f"{error.code().name} {describe(error).reason}"
    return str(events[-1].WhichOneof("event"))


async def test_calls_fail_typed_while_postgresql_is_away_and_recover_after(
    behind_proxy: tuple[Stack, TcpProxy],
) -> None:
    stack, proxy = behind_proxy
    assert await run(stack) == "completed"
    await proxy.stop()
    during = [await run(stack) for _ in range(3)]
    assert all(r.startswith("UNAVAILABLE ") for r in during), during
    await proxy.start()
    deadline = time.monotonic() + 30
    while (after := await run(stack)) != "completed":
        assert after.startswith("UNAVAILABLE "), after
        assert time.monotonic() < deadline, after
        await asyncio.sleep(0.5)


async def test_postgresql_backed_services_go_not_serving_while_it_is_away_and_serving_after(
    behind_proxy: tuple[Stack, TcpProxy],
) -> None:
    stack, proxy = behind_proxy
    await until_all(stack, "SERVING")
    await proxy.stop()
    await until_all(stack, "NOT_SERVING")
    # Liveness is never held, and the gateway (no storage) stays ready.
    assert {s: await readiness(stack, s, "") for s in READINESS} == dict.fromkeys(
        READINESS, "SERVING"
    )
    assert await readiness(stack, "gateway", "saga.gateway.v1.ExecutionService") == "SERVING"
    assert (await run(stack)).startswith("UNAVAILABLE ")
    await proxy.start()
    await until_all(stack, "SERVING")
    assert await run(stack) == "completed"


def paid_chat(n: int) -> execution_pb2.ExecuteRequest:
    """`chat` answered by the fake provider only."""
    message = chat(f"hello {n}")
    message.options.allowed_providers.append("paid")
    return message


async def accepted_run(stack: Stack, n: int) -> str | None:
    """How a run the caller saw accepted ended ("completed", or its code and reason), None
    when it was refused before its Accepted event."""
    accepted = False
    async with stack.gateway_channel() as ch:
        try:
            async for event in execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
                paid_chat(n), metadata=bearer(stack.admin_key()), timeout=60
            ):
                accepted = accepted or event.WhichOneof("event") == "accepted"
                if event.WhichOneof("event") == "completed":
                    return "completed"
        except grpc.aio.AioRpcError as error:
            return f"{error.code().name} {describe(error).reason}" if accepted else None
    return "ended without Completed" if accepted else None


async def ledger_calls(stack: Stack, expected: int) -> int:
    """The calls the usage ledger counts for provider "paid", once it reaches `expected` or
    after a bounded wait (the router's outbox ships in the background)."""
    ask = usage_pb2.GetUsageRequest(all_users=True, group_by=[records_pb2.USAGE_DIMENSION_PROVIDER])
    counted = 0
    async with stack.gateway_channel() as ch:
        usage = usage_pb2_grpc.UsageServiceStub(ch)
        for _ in range(150):
            reply = await usage.GetUsage(ask, metadata=bearer(stack.admin_key()), timeout=10)
            counted = sum(r.calls for r in reply.rows if r.provider == "paid")
            if counted >= expected:
                break
            await asyncio.sleep(0.2)
    return counted


@dataclass(frozen=True)
class LoadOutcome:
    """What a load through a PostgreSQL outage left: how each run ended (None: refused
    before it was accepted), the calls the provider received and the calls the ledger
    counts."""

    outcomes: list[str | None]
    received: int
    counted: int


@pytest.fixture(scope="module")
async def outage_under_load(tmp_path_factory: pytest.TempPathFactory) -> LoadOutcome:
    """Runs started in waves before, during and after PostgreSQL is cut."""
    async with FakeProviders() as fake:
        # ~1 s streams, so runs are in flight when the database goes.
        fake.defaults["ollama"] = Script(tokens=10, interval=0.1)
        config = provider_toml("paid", fake, "ollama", max_retries=0)
        directory = tmp_path_factory.mktemp("outage-load")
        async with stack_behind_proxy(directory, config) as (stack, proxy):
            runs: list[asyncio.Task[str | None]] = []

            async def wave(size: int) -> None:
                runs.extend(
                    asyncio.ensure_future(accepted_run(stack, len(runs) + i)) for i in range(size)
                )
                await asyncio.sleep(0.3)

            for _ in range(3):
                await wave(4)
            await proxy.stop()
            for _ in range(3):
                await wave(2)
            await until_all(stack, "NOT_SERVING")
            await proxy.start()
            await until_all(stack, "SERVING")
            # Peers' circuits opened by the outage close after their cool-down: the runs
            # that meet one are refused typed (AGENT_CIRCUIT_OPEN) until then.
            deadline = time.monotonic() + 60
            while (after := await accepted_run(stack, len(runs))) != "completed":
                assert time.monotonic() < deadline, after
                await asyncio.sleep(0.5)
            await wave(4)
            outcomes = list(await asyncio.gather(*runs))
            received = len(fake.requests("ollama"))
            return LoadOutcome(outcomes, received, await ledger_calls(stack, received))


async def test_every_accepted_run_completes_or_ends_typed_when_postgresql_goes_under_load(
    outage_under_load: LoadOutcome,
) -> None:
    outcomes = outage_under_load.outcomes
    seen = [o for o in outcomes if o is not None]
    assert "completed" in seen, outcomes
    untyped = [o for o in seen if o != "completed" and (o.endswith(" ") or " " not in o)]
    assert untyped == [], outcomes


async def test_the_ledger_counts_every_provider_call_made_through_a_postgresql_outage(
    outage_under_load: LoadOutcome,
) -> None:
    load = outage_under_load
    assert load.counted == load.received, load.outcomes
