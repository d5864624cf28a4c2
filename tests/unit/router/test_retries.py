"""Retry waits (full jitter, Retry-After as a floor, a cap) and the retry budget."""

from __future__ import annotations

from services.common.backoff import Backoff
from services.common.config import RouterConfig
from services.router.retries import RetryBudget, retry_backoff, retry_delay
from tests.clock import Clock


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
