"""Single flight: one piece of work per key shared by concurrent callers; failures reach every
waiter and are not kept; a cancelled waiter does not cancel the work for the others."""

from __future__ import annotations

import asyncio

import pytest

from services.common.singleflight import SingleFlight


class Work:
    """Work that runs until `release` is set, counting its starts."""

    def __init__(self, result: str = "done", fail: Exception | None = None) -> None:
        self.starts = 0
        self.finished = 0
        self.release = asyncio.Event()
        self.result = result
        self.fail = fail

    async def __call__(self) -> str:
        self.starts += 1
        await self.release.wait()
        self.finished += 1
        if self.fail is not None:
            raise self.fail
        return self.result


async def settle() -> None:
    """Let every ready task run until it blocks."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_concurrent_callers_of_one_key_share_one_run() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    work = Work()
    callers = [asyncio.ensure_future(flights.run("k", work)) for _ in range(10)]
    await settle()
    work.release.set()
    assert await asyncio.gather(*callers) == ["done"] * 10
    assert work.starts == 1


async def test_other_keys_run_their_own_work() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    a, b = Work("a"), Work("b")
    first = asyncio.ensure_future(flights.run("a", a))
    second = asyncio.ensure_future(flights.run("b", b))
    await settle()
    a.release.set()
    b.release.set()
    assert (await first, await second) == ("a", "b")
    assert (a.starts, b.starts) == (1, 1)


async def test_a_caller_after_the_work_ended_starts_it_again() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    work = Work()
    work.release.set()
    assert await flights.run("k", work) == "done"
    assert await flights.run("k", work) == "done"
    assert work.starts == 2  # results are not kept: caching is the caller's business


async def test_a_failure_reaches_every_waiter_and_is_not_kept() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    work = Work(fail=ValueError("refused"))
    callers = [asyncio.ensure_future(flights.run("k", work)) for _ in range(3)]
    await settle()
    work.release.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(o, ValueError) and str(o) == "refused" for o in outcomes)
    assert work.starts == 1
    work.fail = None
    assert await flights.run("k", work) == "done"
    assert work.starts == 2


async def test_a_cancelled_waiter_does_not_cancel_the_work_for_the_others() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    work = Work()
    first = asyncio.ensure_future(flights.run("k", work))  # the one that started it
    await settle()
    second = asyncio.ensure_future(flights.run("k", work))
    await settle()
    first.cancel()
    await settle()
    assert first.cancelled()
    work.release.set()
    assert await second == "done"
    assert work.starts == 1


async def test_the_work_runs_to_its_end_when_every_waiter_gave_up() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    work = Work(fail=ValueError("nobody hears this"))
    only = asyncio.ensure_future(flights.run("k", work))
    await settle()
    only.cancel()
    await settle()
    work.release.set()
    await settle()
    assert work.finished == 1  # not abandoned half-way; its failure is retrieved, not logged
    work.fail = None
    assert await flights.run("k", work) == "done"  # and it is gone: a new run starts


async def test_close_cancels_the_work_in_flight() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    work = Work()
    waiter = asyncio.ensure_future(flights.run("k", work))
    await settle()
    await flights.close()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert work.finished == 0
