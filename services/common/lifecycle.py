"""A service's background work: supervised tasks, one-shot tasks in flight, and the order
shutdown work runs in (the bootstrap, `services.common.server`, runs one per service).

Supervised tasks (`Lifecycle.spawn`) are a service's loops: a watch, a writer, a periodic
probe, a lease renewal. The rule for one that dies unexpectedly: a task that raises is logged
with its traceback and restarted after the shared reconnect backoff (`services.common.backoff`:
from `RESTART_INITIAL_SECONDS` doubling to `RESTART_MAX_SECONDS`, jittered; a run that lasted
longer than the cap starts the pauses over); a task that returns has finished and is not
restarted. Loops that expect failures (a peer down) handle them themselves; the restart is the
backstop for a bug, so one bad iteration never ends a loop for the life of the process.

Shutdown (`Lifecycle.shut_down`, after the servers drained) runs, in this order: the
`Phase.FINISH` work — finish queued work while the tasks still run (commit what a writer has
queued, let settlements in flight end); then every spawned task is cancelled and awaited; then
the `Phase.CLOSE` work — close stores and clients, which no task uses any more. Work of one
phase runs one piece after another, in the order it was registered. `stopping` is set when the
shutdown begins (the bootstrap sets it before the drain), so endless streams can end at once.

One-shot tasks (`InFlight`) are the work a call leaves behind (a record's write, a budget's
settlement): started by domain code without waiting for them, waited for by shutdown work.

No grpc here: domain modules use `InFlight`, and tests drive a `Lifecycle` without a server.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from services.common.backoff import Backoff

log = logging.getLogger("saga.lifecycle")

RESTART_INITIAL_SECONDS = 1.0
"""The pause before a background task that raised is restarted the first time."""
RESTART_MAX_SECONDS = 60.0
"""The longest pause between restarts (and how long a run must last to start them over)."""

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Work = Callable[[], Awaitable[None]]


class Phase(enum.Enum):
    """When a piece of shutdown work runs, relative to the background tasks' cancellation."""

    FINISH = "finish"
    """Before the tasks are cancelled: finish queued work they are still needed for."""
    CLOSE = "close"
    """After the tasks ended: close stores and clients."""


class Lifecycle:
    """A service's supervised tasks and shutdown work (see the module docstring)."""

    def __init__(
        self,
        *,
        restart_initial: float = RESTART_INITIAL_SECONDS,
        restart_max: float = RESTART_MAX_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._restart = Backoff(restart_initial, restart_max)
        self._clock = clock
        self._sleep = sleep
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._on_stop: dict[Phase, list[Work]] = {phase: [] for phase in Phase}
        self.stopping = asyncio.Event()
        """Set when the shutdown begins, before in-flight RPCs drain."""

    def spawn(self, name: str, factory: Work) -> None:
        """Run `factory()` now as the task `name`, and again after each time it raises, until
        the shutdown cancels it (after `Phase.FINISH`, before `Phase.CLOSE`)."""
        if self.running(name):
            raise ValueError(f"a background task {name!r} is already running")
        self._tasks[name] = asyncio.create_task(self._supervise(name, factory), name=name)

    def running(self, name: str) -> bool:
        """Whether the task `name` was spawned and has neither finished nor been cancelled."""
        task = self._tasks.get(name)
        return task is not None and not task.done()

    def on_stop(self, callback: Work, phase: Phase = Phase.CLOSE) -> None:
        """Run `callback` at shutdown in `phase`, after the work registered before it."""
        self._on_stop[phase].append(callback)

    async def shut_down(self) -> None:
        """The shutdown work, once the servers drained: `Phase.FINISH`, cancel every task
        and wait for it, `Phase.CLOSE` (`stopping` is set first, if it was not yet)."""
        self.stopping.set()
        for callback in self._on_stop[Phase.FINISH]:
            await callback()
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for callback in self._on_stop[Phase.CLOSE]:
            await callback()

    async def _supervise(self, name: str, factory: Work) -> None:
        failures = 0
        while True:
            started = self._clock()
            try:
                await factory()
            except Exception:
                # A run that outlasted the longest pause was healthy: start the pauses over.
                lasted = self._clock() - started
                failures = 1 if lasted >= self._restart.maximum else failures + 1
                delay = self._restart.delay(failures)
                log.exception(
                    "background task failed; restarting",
                    extra={"task": name, "failures": failures, "retry_in_seconds": round(delay, 3)},
                )
                await self._sleep(delay)
            else:
                return


class InFlight:
    """One-shot background tasks that shutdown work waits for (see the module docstring)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run `work` as a task now; it inherits the caller's context (its trace)."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def wait(self, grace: float | None = None) -> None:
        """Wait until none is left, those started meanwhile included; with `grace`, wait at
        most that long for those in flight, then cancel the rest and let them end."""
        if grace is None:
            while self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            return
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
