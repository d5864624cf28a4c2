"""Single flight: concurrent callers asking for the same key share one piece of work.

The first caller for a key starts the work as a task of its own; callers that arrive while it
runs wait for that task instead of starting another. Every waiter gets the work's result, or
its exception — a failure reaches all of them and is not kept: the next caller after it
starts afresh (a cache decides itself what to keep; this only merges concurrent calls).

A waiter that is cancelled (its client gave up) stops waiting, but the work runs on for the
others, and to its end even when nobody waits any more: half-done work such as a refresh
whose rotated token is not saved yet must not be abandoned. Only `close` cancels it (at
shutdown). The task runs in the context of the caller that started it (contextvars: its
trace span, for instance).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from functools import partial
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """One task in flight per key (see the module docstring)."""

    def __init__(self, name: str = "single-flight") -> None:
        self._name = name  # of its tasks (not the key, which may be a user's)
        self._flights: dict[K, asyncio.Task[V]] = {}

    async def run(self, key: K, work: Callable[[], Coroutine[Any, Any, V]]) -> V:
        """The result of the work in flight for `key`, or of `work()` started now when none
        is (`work` is only called then)."""
        task = self._flights.get(key)
        if task is None or task.done():  # a finished task's done callback may not have run yet
            task = asyncio.create_task(work(), name=self._name)
            self._flights[key] = task
            task.add_done_callback(partial(self._landed, key))
        # shield: a waiter that gives up does not cancel the work the others wait for.
        return await asyncio.shield(task)

    def _landed(self, key: K, task: asyncio.Task[V]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have gone

    async def close(self) -> None:
        """Cancel the work in flight and wait for it to end (at shutdown)."""
        tasks = list(self._flights.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
