"""Time a test moves by hand (after Temporal's time-skipping test environment).

Saga's caches, limiters, circuits and publishers take their clock — a `() -> float` — and,
when they pause, their sleep as arguments, so a test hands them one `Clock` and decides
when time passes, instead of waiting on the wall clock for a TTL, a window or an interval.
`settle` lets the tasks that a change of time (or an event) woke run before the test looks.
"""

from __future__ import annotations

import asyncio

START = 1_800_000_000.0
"""Where a clock starts unless told: a plausible Unix time (2027-01-15), so code that
mixes it with dates sees a sensible one."""


class Clock:
    """A settable clock: `clock()` reads it, `advance` (or setting `now`) moves it, and
    `sleep` is an `asyncio.sleep` on it."""

    def __init__(self, now: float = START) -> None:
        self._now = now
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        """The current time, in seconds."""
        return self._now

    @property
    def now(self) -> float:
        """The current time; setting it wakes every sleeper whose time has come (they run
        at the test's next await)."""
        return self._now

    @now.setter
    def now(self, value: float) -> None:
        self._now = value
        for deadline, waiter in self._sleepers:
            if deadline <= value and not waiter.done():
                waiter.set_result(None)

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds`."""
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """Return once the test has advanced the clock by `seconds`; no real time passes,
        but the sleeper does not run on by itself either (so a background loop runs
        exactly as far as the test moves time)."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        entry = (self.now + seconds, asyncio.get_running_loop().create_future())
        self._sleepers.append(entry)
        try:
            await entry[1]
        finally:
            self._sleepers.remove(entry)


async def settle() -> None:
    """Let every task the test woke run until it waits again. asyncio runs ready callbacks
    in order, so a bounded number of empty turns is enough for the short hand-offs the
    tests make (an event set, a sleeper woken, a task reaching its next await)."""
    for _ in range(20):
        await asyncio.sleep(0)
