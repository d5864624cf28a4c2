"""PostgreSQL out of reach (cut through a TCP proxy in front of the suite's server, real
sockets) while the stack runs: calls fail with a typed UNAVAILABLE — never INTERNAL — and
once the database is back the services recover by themselves: the next run completes, no
restart."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest

from saga.gateway.v1 import execution_pb2_grpc
from services.common.status import describe
from tests.conftest import PG_URL, drop_schemas
from tests.e2e.test_execute import bearer, chat
from tests.fakes.tcp_proxy import TcpProxy
from tests.harness import Stack, stack_for


@pytest.fixture
async def behind_proxy(tmp_path: Path) -> AsyncIterator[tuple[Stack, TcpProxy]]:
    real = urlsplit(PG_URL)
    proxy = await TcpProxy(real.hostname or "127.0.0.1", real.port or 5432).start()
    url = real._replace(netloc=f"{real.username}@127.0.0.1:{proxy.port}").geturl()
    namespace = f"t{secrets.token_hex(6)}"
    try:
        async with stack_for(
            tmp_path, SAGA_STORAGE__URL=url, SAGA_STORAGE__NAMESPACE=namespace
        ) as stack:
            yield stack, proxy
    finally:
        await proxy.stop()
        await drop_schemas(namespace)


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
