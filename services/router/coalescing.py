"""Token coalescing: when the caller reads slower than the provider writes, the text deltas
that pile up in between leave as one `Delta` instead of one message each.

A streamed message costs far more than the bytes in it (framing, a write, a wake-up at every
hop down the chain: ~55-85 µs of CPU per message per hop in Python), so a provider that
produces faster than the caller consumes would otherwise make us spend most of our time on
overhead and queue ever more messages. `coalesce` runs the event source in its own task,
which pulls from the provider at the provider's pace and queues events; each time the caller
is ready for the next message (gRPC asks the handler's generator for it once the previous
write completed), every delta queued at the head goes out merged into one. When the caller
keeps up, nothing waits and each delta leaves as it came; order is always kept, and
other events are never merged.

`merge` is given two consecutive events and returns their merge, or None when they do not
merge (`merge_text` merges `TextDelta`s, and consecutive argument pieces of one tool call).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Generic, TypeVar

from services.router.engines.base import TextDelta
from services.router.engines.tools import ToolCallDelta

E = TypeVar("E")


def merge_text(first: object, second: object) -> TextDelta | ToolCallDelta | None:
    """Two text deltas as one, or two pieces of the same tool call (the second adding only
    arguments); None for anything else."""
    if isinstance(first, TextDelta) and isinstance(second, TextDelta):
        return TextDelta(first.text + second.text)
    if (
        isinstance(first, ToolCallDelta)
        and isinstance(second, ToolCallDelta)
        and first.index == second.index
        and not second.id
        and not second.name
    ):
        return ToolCallDelta(first.index, first.id, first.name, first.arguments + second.arguments)
    return None


class _Pump(Generic[E]):
    """Pulls the source in a task of its own and queues what it yields."""

    def __init__(self, source: AsyncIterator[E]) -> None:
        self.source = source
        self.queue: deque[E] = deque()
        self.ready = asyncio.Event()
        self.done = False
        self.error: BaseException | None = None

    async def run(self) -> None:
        try:
            async for event in self.source:
                self.queue.append(event)
                self.ready.set()
        except BaseException as error:  # relayed to the consumer, in order
            self.error = error
            if isinstance(error, asyncio.CancelledError):
                raise
        finally:
            self.done = True
            self.ready.set()


async def coalesce(
    source: AsyncIterator[E], merge: Callable[[E, E], E | None]
) -> AsyncGenerator[E, None]:
    """The events of `source`, in order, with queued mergeable neighbours merged (see the
    module docstring). Closing this iterator cancels the source's task."""
    pump = _Pump(source)
    task = asyncio.create_task(pump.run(), name="coalesce")
    queue = pump.queue
    try:
        while True:
            if not queue:
                if pump.done:
                    if pump.error is not None:
                        raise pump.error
                    return
                pump.ready.clear()
                await pump.ready.wait()
                continue
            event = queue.popleft()
            while queue:
                merged = merge(event, queue[0])
                if merged is None:
                    break
                queue.popleft()
                event = merged
            yield event
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
