"""HeadStart: the first item is fetched before anyone asks; closing stops a fetch still
running and closes the source."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from services.runtime.head_start import HeadStart


async def test_the_first_item_is_fetched_before_it_is_asked_for() -> None:
    started = asyncio.Event()

    async def source() -> AsyncGenerator[int, None]:
        started.set()
        yield 1
        yield 2

    events = HeadStart(source())
    await asyncio.sleep(0)
    assert started.is_set()
    assert [e async for e in events] == [1, 2]


async def test_closing_stops_a_first_fetch_still_running_and_closes_the_source() -> None:
    closed = asyncio.Event()

    async def source() -> AsyncGenerator[int, None]:
        try:
            await asyncio.sleep(3600)
            yield 1
        finally:
            closed.set()

    events = HeadStart(source())
    await asyncio.sleep(0)
    await asyncio.wait_for(events.aclose(), 5)
    assert closed.is_set()
