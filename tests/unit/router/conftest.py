"""Shared fixtures of the router's unit tests: the fake providers that the engine tests call
over real HTTP on loopback, and feeding an engine's stream parser lines directly."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.router.engines.base import EngineEvent, EngineRequest
from services.router.engines.http import HttpEngine
from services.router.engines.progress import Deadlines, Progress
from tests.fakes.providers import FakeProviders


@pytest.fixture(scope="module")
async def fake_server() -> AsyncIterator[FakeProviders]:
    """One fake-providers server per test module (a server per test would dominate)."""
    async with FakeProviders() as f:
        yield f


@pytest.fixture
async def fake(fake_server: FakeProviders) -> AsyncIterator[FakeProviders]:
    """The module's fake providers, reset for this test; the engines it built are closed
    after it."""
    fake_server.reset()
    yield fake_server
    await fake_server.close_engines()


async def parse_lines(engine: HttpEngine, req: EngineRequest, *items: str) -> list[EngineEvent]:
    """What `engine`'s stream parser makes of the response lines `items`, for `req`, once
    the answer has started streaming."""

    async def lines() -> AsyncIterator[str]:
        for item in items:
            yield item

    progress = Progress(req, Deadlines(engine.provider, req.stream))
    progress.streamed = True
    return [e async for e in engine.read_stream(lines(), progress)]
