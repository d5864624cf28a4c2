"""Retry waits (full jitter, Retry-After as a floor, a cap; a longer jittered floor for a
429 without Retry-After) and the retry budget."""

from __future__ import annotations

from services.common.backoff import Backoff
from services.common.config import RouterConfig
from services.router.engines.base import ProviderRateLimited, ProviderUnavailable
from services.router.retries import RetryBudget, rate_limit_backoff, retry_backoff, retry_delay
from tests.clock import Clock
from tests.unit.router.test_reasoning import CALL, GOOD, Scripted, resilience_for, run, sim


def test_the_wait_is_a_full_jitter_draw_under_a_doubling_cap() -> None:
    backoff = Backoff(initial=0.1, maximum=2.0, jitter=1.0)
    assert retry_delay(backoff, 1, draw=lambda: 1.0) == 0.1
    assert retry_delay(backoff, 2, draw=lambda: 1.0) == 0.2
    assert retry_delay(backoff, 3, draw=lambda: 0.5) == 0.2
    assert retry_delay(backoff, 10, draw=lambda: 1.0) == 2.0  # capped
    assert retry_delay(backoff, 1, draw=lambda: 0.0) == 0.0


def test_retry_after_is_a_floor_and_too_long_a_wait_is_refused() -> None:
    backoff = Backoff(initial=0.1, maximum=2.0, jitter=1.0)
    assert retry_delay(backoff, 1, retry_after=1.5, draw=lambda: 1.0) == 1.5
    assert retry_delay(backoff, 1, retry_after=2.0, draw=lambda: 1.0) == 2.0
    assert retry_delay(backoff, 1, retry_after=2.5, draw=lambda: 1.0) is None


def test_the_budget_allows_the_minimum_then_a_share_of_calls() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, minimum=2, window=10, clock=clock)
    assert budget.try_spend()
    assert budget.try_spend()
    assert not budget.try_spend()  # the minimum is spent and no calls earned more
    for _ in range(10):
        budget.note_call()
    assert budget.try_spend()  # 10 calls earn 2 more retries (20 %)
    assert budget.try_spend()
    assert not budget.try_spend()


def test_the_budget_refills_as_retries_leave_the_window() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.0, minimum=1, window=10, clock=clock)
    assert budget.try_spend()
    assert not budget.try_spend()
    clock.now += 10
    assert budget.try_spend()


def test_the_configured_backoff_is_full_jitter_in_seconds() -> None:
    config = RouterConfig(retry_initial_backoff_ms=100.0, retry_max_backoff_ms=2000.0)
    assert retry_backoff(config) == Backoff(initial=0.1, maximum=2.0, jitter=1.0)


def test_a_rate_limit_without_retry_after_waits_its_own_longer_jittered_floor() -> None:
    backoff = Backoff(initial=0.1, maximum=2.0, jitter=1.0)
    limited = rate_limit_backoff(RouterConfig(rate_limit_backoff_ms=1000.0))
    assert limited == Backoff(initial=1.0, maximum=2.0, jitter=0.5)
    # A 5xx may come back at once; a 429 waits at least half the floor, at most all of it.
    assert retry_delay(backoff, 1, draw=lambda: 0.0) == 0.0
    assert retry_delay(backoff, 1, draw=lambda: 0.0, rate_limit=limited) == 0.5
    assert retry_delay(backoff, 1, draw=lambda: 1.0, rate_limit=limited) == 1.0
    assert retry_delay(backoff, 2, draw=lambda: 1.0, rate_limit=limited) == 2.0
    assert retry_delay(backoff, 5, draw=lambda: 1.0, rate_limit=limited) == 2.0  # capped
    # A Retry-After the provider sent is what counts, as before.
    assert retry_delay(backoff, 1, retry_after=0.2, draw=lambda: 0.0, rate_limit=limited) == 0.2
    assert retry_delay(backoff, 1, retry_after=3.0, rate_limit=limited) is None


async def test_a_429_without_retry_after_is_retried_after_the_rate_limit_floor() -> None:
    limited = Scripted([ProviderRateLimited("429")], ["ok "])
    got = await run(CALL, [sim("limited")], {"limited": limited})
    assert got.error is None
    assert len(got.sleeps) == 1
    assert 0.5 <= got.sleeps[0] <= 1.0  # rate_limit_backoff_ms 1000, at least half
    flaky = Scripted([ProviderUnavailable("503")], ["ok "])
    got = await run(CALL, [sim("flaky")], {"flaky": flaky})
    assert got.sleeps[0] <= 0.01  # a 5xx keeps the short full-jitter wait (10 ms cap here)


async def test_the_rate_limit_wait_stays_within_the_retry_budget() -> None:
    limited = Scripted([ProviderRateLimited("429")], ["ok "])
    spent = resilience_for([sim("limited"), GOOD], retry_budget_min=0, retry_budget_ratio=0.0)
    got = await run(CALL, [sim("limited"), GOOD], {"limited": limited}, spent)
    assert got.sleeps == []
    assert got.attempts() == [("limited", 1), ("good", 2)]
