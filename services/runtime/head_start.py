"""An async iterator whose first item is already being fetched.

A run's first event (the step starting, its call to the router on the way) would otherwise
wait until the run's Accepted has been written to the caller: grpc.aio resumes a streaming
handler only once its previous message is handed to the transport, a round trip through
grpc's poller thread. Fetching the first event in a task of its own while Accepted is
written overlaps the two.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Generic, TypeVar

T = TypeVar("T")

_END = object()


class HeadStart(Generic[T]):
    """Iterates `events`, the first `__anext__` started at once (in a task that inherits
    the caller's context, so its trace span). Close it with `aclose`."""

    def __init__(self, events: AsyncGenerator[T, None]) -> None:
        self._events = events
        self._first: asyncio.Future[object] | None = asyncio.ensure_future(anext(events, _END))

    def __aiter__(self) -> HeadStart[T]:
        return self

    async def __anext__(self) -> T:
        first, self._first = self._first, None
        if first is None:
            return await anext(self._events)
        item = await first  # cancelling the wait cancels the fetch
        if item is _END:
            raise StopAsyncIteration
        return item  # type: ignore[return-value]

    async def aclose(self) -> None:
        """Stop a first fetch still running, then close `events`."""
        first, self._first = self._first, None
        if first is not None:
            # Cancelled if still running; awaited either way, so an error it ended with is
            # retrieved here (the run's own handlers saw the run end) and not logged as lost.
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await first
        await self._events.aclose()
