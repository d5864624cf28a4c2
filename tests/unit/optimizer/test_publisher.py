"""The ranking publisher: a change reaches the board promptly, and a storm of changes is
coalesced to at most one snapshot per configured interval."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator

import pytest

from services.common.config import DEFAULT_PROVIDERS
from services.common.strategy import Strategy
from services.optimizer.metrics import LiveMetrics
from services.optimizer.publisher import RankingPublisher
from services.optimizer.snapshots import SnapshotBoard

INTERVAL = 0.2


@pytest.fixture
async def publisher() -> AsyncIterator[RankingPublisher]:
    live = LiveMetrics(DEFAULT_PROVIDERS, window=100, window_seconds=300, prior_weight=10)
    board = SnapshotBoard(DEFAULT_PROVIDERS, Strategy.BALANCED, start_version=1)
    p = RankingPublisher(live, board, interval=INTERVAL)
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


async def test_a_change_after_a_quiet_spell_is_published_within_the_interval(
    publisher: RankingPublisher,
) -> None:
    await asyncio.sleep(INTERVAL * 1.5)  # let the first (no-change) pass go by
    version = publisher.board.current.version
    _set_fast_ttft(publisher, 5000)
    # Arrival against the configured pace, with a generous margin.
    snapshot = await asyncio.wait_for(publisher.board.next_after(version), INTERVAL * 5)
    assert snapshot is not None
    assert snapshot.rankings[Strategy.FASTEST].order == ("sim-smart", "sim-fast")


async def test_a_storm_of_changes_is_coalesced(publisher: RankingPublisher) -> None:
    start = time.monotonic()
    for i in range(40):
        _set_fast_ttft(publisher, 5000 if i % 2 == 0 else 10)
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - start
    # Forty flips; at most one snapshot per interval (plus the one at the start of it).
    assert 1 <= publisher.published <= elapsed / INTERVAL + 1
    # Positive control: once the storm settles, the last state is what routers see.
    await asyncio.sleep(INTERVAL * 3)
    assert publisher.board.current.rankings[Strategy.FASTEST].order == ("sim-fast", "sim-smart")
