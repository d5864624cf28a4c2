"""The ranking publisher: a change reaches the board promptly, a storm of changes is
coalesced to at most one snapshot per configured interval, and samples age out by time
alone. The publisher runs on a test `Clock`: time passes only when the test moves it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

import pytest

from services.common.config import DEFAULT_PROVIDERS
from services.common.strategy import Strategy
from services.optimizer.live_metrics import LiveMetrics, Sample
from services.optimizer.publisher import RankingPublisher
from services.optimizer.snapshots import SnapshotBoard
from tests.clock import Clock, settle

INTERVAL = 0.2
TICK = 5.0
WINDOW_SECONDS = 300


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def publisher(clock: Clock) -> AsyncIterator[RankingPublisher]:
    live = LiveMetrics(
        DEFAULT_PROVIDERS, window=100, window_seconds=WINDOW_SECONDS, prior_weight=10
    )
    board = SnapshotBoard(DEFAULT_PROVIDERS, Strategy.BALANCED, start_version=1)
    p = RankingPublisher(live, board, interval=INTERVAL, tick=TICK, clock=clock, sleep=clock.sleep)
    task = asyncio.create_task(p.run())
    try:
        yield p
    finally:
        board.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _set_fast_ttft(p: RankingPublisher, ttft_ms: float) -> None:
    prior = dataclasses.replace(p.live.prior("sim-fast"), p50_ttft_ms=ttft_ms)
    p.live.set_prior("sim-fast", prior)
    p.notify()


async def pass_time(clock: Clock, seconds: float) -> None:
    """Move the clock by `seconds` in steps of a tenth of the interval, letting the
    publisher run at each, as time passes in production."""
    for _ in range(round(seconds / (INTERVAL / 10))):
        clock.advance(INTERVAL / 10)
        await settle()


def _fastest(p: RankingPublisher) -> tuple[str, ...]:
    return p.board.current.rankings[Strategy.FASTEST].order


async def test_a_change_after_a_quiet_spell_is_published_within_the_interval(
    publisher: RankingPublisher, clock: Clock
) -> None:
    await pass_time(clock, TICK + 2 * INTERVAL)  # a quiet spell: a no-change pass, its rest
    assert publisher.published == 0
    version = publisher.board.current.version
    _set_fast_ttft(publisher, 5000)
    # Published without the clock moving at all: the first change is not held back. (The
    # bound is only there so a regression fails rather than hangs.)
    snapshot = await asyncio.wait_for(publisher.board.next_after(version), 5)
    assert snapshot is not None
    assert snapshot.rankings[Strategy.FASTEST].order == ("sim-smart", "sim-fast")


async def test_a_storm_of_changes_is_coalesced(publisher: RankingPublisher, clock: Clock) -> None:
    start = clock()
    for i in range(40):
        _set_fast_ttft(publisher, 5000 if i % 2 == 0 else 10)
        clock.advance(0.01)
        await settle()
    elapsed = clock() - start
    # Forty flips; at most one snapshot per interval (plus the one at the start of it).
    assert 1 <= publisher.published <= elapsed / INTERVAL + 1
    # Positive control: once the storm settles, the last state is what routers see.
    clock.advance(INTERVAL * 3)
    await settle()
    assert _fastest(publisher) == ("sim-fast", "sim-smart")


async def test_samples_age_out_of_the_window_by_time_alone(
    publisher: RankingPublisher, clock: Clock
) -> None:
    for _ in range(50):
        publisher.live.record("sim-fast", Sample(clock(), True, 9000.0, 5000.0), clock())
    publisher.notify()
    await settle()
    assert _fastest(publisher) == ("sim-smart", "sim-fast")
    published = publisher.published
    # No change is notified from here on; only time passes, and the samples leave the window.
    await pass_time(clock, WINDOW_SECONDS + TICK)
    assert _fastest(publisher) == ("sim-fast", "sim-smart")
    assert publisher.published == published + 1
