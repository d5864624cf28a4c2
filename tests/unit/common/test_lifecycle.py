"""The bootstrap's lifecycle: a background task that raises is logged and restarted after a
growing pause, one that returns is done; shutdown runs FINISH work while the tasks still run,
then cancels them, then CLOSE work, each phase in the order it was registered. One-shot tasks
in flight are waited for, those started meanwhile too, or for a grace period at most."""

from __future__ import annotations

import asyncio
import logging

import pytest

from services.common.lifecycle import InFlight, Lifecycle, Phase, Work
from tests.clock import Clock


class Pauses:
    """Stands in for asyncio.sleep: records each pause and returns at once."""

    def __init__(self) -> None:
        self.taken: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.taken.append(seconds)
        await asyncio.sleep(0)


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def test_a_task_that_raises_is_logged_and_restarted_after_a_growing_pause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pauses = Pauses()
    lifecycle = Lifecycle(restart_initial=1.0, restart_max=60.0, clock=Clock(), sleep=pauses)
    runs = 0
    again = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise RuntimeError(f"bug {runs}")
        again.set()
        await asyncio.Event().wait()  # healthy from now on

    with caplog.at_level(logging.ERROR, logger="saga.lifecycle"):
        lifecycle.spawn("flaky", flaky)
        await asyncio.wait_for(again.wait(), 5)
    assert runs == 4
    assert lifecycle.running("flaky")
    assert len(pauses.taken) == 3
    for pause, full in zip(pauses.taken, (1.0, 2.0, 4.0), strict=True):
        assert full / 2 <= pause <= full  # doubling, jittered to 50-100 %
    failed = [r for r in caplog.records if r.getMessage() == "background task failed; restarting"]
    assert [(r.__dict__["task"], r.__dict__["failures"]) for r in failed] == [
        ("flaky", 1),
        ("flaky", 2),
        ("flaky", 3),
    ]
    assert all(r.exc_info is not None and "bug" in str(r.exc_info[1]) for r in failed)
    await lifecycle.shut_down()
    assert not lifecycle.running("flaky")


async def test_a_run_that_lasted_longer_than_the_cap_starts_the_pauses_over() -> None:
    clock, pauses = Clock(), Pauses()
    lifecycle = Lifecycle(restart_initial=1.0, restart_max=10.0, clock=clock, sleep=pauses)
    runs = 0
    done = asyncio.Event()

    async def crashes() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            clock.now += 11.0  # this run was healthy for longer than the longest pause
        if runs == 4:
            done.set()
            return
        raise RuntimeError("bug")

    lifecycle.spawn("crashes", crashes)
    await asyncio.wait_for(done.wait(), 5)
    await settle()
    assert len(pauses.taken) == 3
    assert 1.0 <= pauses.taken[1] <= 2.0  # the second pause: 2 s at full length
    assert 0.5 <= pauses.taken[2] <= 1.0  # after the long run: 1 s again, not 4 s
    assert not lifecycle.running("crashes")  # it returned: done, not restarted
    await lifecycle.shut_down()


async def test_a_task_that_returns_is_not_restarted() -> None:
    pauses = Pauses()
    lifecycle = Lifecycle(sleep=pauses)
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    lifecycle.spawn("once", once)
    await settle()
    assert (runs, pauses.taken, lifecycle.running("once")) == (1, [], False)
    lifecycle.spawn("once", once)  # a finished task's name may be spawned again
    await settle()
    assert runs == 2
    await lifecycle.shut_down()


async def test_two_running_tasks_cannot_share_a_name() -> None:
    lifecycle = Lifecycle()
    lifecycle.spawn("loop", asyncio.Event().wait)
    with pytest.raises(ValueError, match="'loop' is already running"):
        lifecycle.spawn("loop", asyncio.Event().wait)
    await lifecycle.shut_down()


async def test_shutdown_finishes_work_then_cancels_tasks_then_closes_in_registration_order() -> (
    None
):
    lifecycle = Lifecycle()
    events: list[str] = []

    async def loop() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            events.append("task cancelled")
            raise

    def work(name: str) -> Work:
        async def run() -> None:
            # Every phase sees whether the task still runs when it runs.
            events.append(f"{name} (task running: {lifecycle.running('loop')})")

        return run

    lifecycle.spawn("loop", loop)
    await settle()
    lifecycle.on_stop(work("close store"))  # CLOSE is the default
    lifecycle.on_stop(work("flush queue"), Phase.FINISH)
    lifecycle.on_stop(work("close client"), Phase.CLOSE)
    lifecycle.on_stop(work("settle"), Phase.FINISH)
    assert not lifecycle.stopping.is_set()
    await lifecycle.shut_down()
    assert lifecycle.stopping.is_set()
    assert events == [
        "flush queue (task running: True)",
        "settle (task running: True)",
        "task cancelled",
        "close store (task running: False)",
        "close client (task running: False)",
    ]


async def test_a_task_is_cancelled_before_the_store_it_uses_is_closed() -> None:
    lifecycle = Lifecycle()
    store_open = True
    used_after_close = False
    started = asyncio.Event()

    async def writer() -> None:
        nonlocal used_after_close
        started.set()
        while True:
            if not store_open:
                used_after_close = True
            await asyncio.sleep(0)

    async def close_store() -> None:
        nonlocal store_open
        store_open = False
        await settle()  # a task still running would now touch the closed store

    lifecycle.spawn("writer", writer)
    lifecycle.on_stop(close_store)
    await started.wait()
    await lifecycle.shut_down()
    assert (store_open, used_after_close) == (False, False)


async def test_in_flight_waits_for_every_task_including_those_started_meanwhile() -> None:
    in_flight = InFlight()
    done: list[str] = []

    async def write(name: str, then: str | None = None) -> None:
        await asyncio.sleep(0)
        if then is not None:
            in_flight.start(write(then))  # e.g. a run abandoned while its insert is in flight
        done.append(name)

    in_flight.start(write("insert", then="cancelled"))
    await in_flight.wait()
    assert done == ["insert", "cancelled"]


async def test_in_flight_with_a_grace_cancels_what_is_late() -> None:
    in_flight = InFlight()
    ended: list[str] = []

    async def settle(seconds: float, name: str) -> None:
        try:
            await asyncio.sleep(seconds)
            ended.append(f"{name} settled")
        except asyncio.CancelledError:
            ended.append(f"{name} cancelled")
            raise

    in_flight.start(settle(0, "quick"))
    late = in_flight.start(settle(60, "late"))
    await in_flight.wait(grace=0.05)
    assert ended == ["quick settled", "late cancelled"]
    assert late.cancelled()
