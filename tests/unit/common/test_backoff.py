"""The one backoff policy: doubling to a cap, jittered within the top `jitter` of the ceiling,
Retry-After as a floor, a bound on attempts."""

from __future__ import annotations

from services.common.backoff import Backoff


def test_the_wait_doubles_up_to_the_cap_with_jitter() -> None:
    backoff = Backoff(initial=0.2, maximum=5.0)  # jittered to 50-100 %
    for failures, full in ((1, 0.2), (2, 0.4), (3, 0.8), (10, 5.0)):
        delays = [backoff.delay(failures) for _ in range(200)]
        assert all(full * 0.5 <= d <= full for d in delays)
        assert max(delays) - min(delays) > full * 0.2  # jittered, not constant


def test_the_draw_picks_the_wait_within_the_jittered_range() -> None:
    half = Backoff(initial=1.0, maximum=8.0, jitter=0.5)
    assert [half.delay(n, draw=lambda: 1.0) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert [half.delay(n, draw=lambda: 0.0) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    full = Backoff(initial=0.1, maximum=2.0, jitter=1.0)
    assert full.delay(3, draw=lambda: 0.5) == 0.2
    assert full.delay(1, draw=lambda: 0.0) == 0.0
    none = Backoff(initial=0.4, maximum=1.6, jitter=0.0)
    assert [none.delay(n, draw=lambda: 0.3) for n in (1, 2, 3, 4)] == [0.4, 0.8, 1.6, 1.6]


def test_retry_after_is_a_floor_even_past_the_cap() -> None:
    backoff = Backoff(initial=1.0, maximum=2.0)
    assert backoff.delay(1, retry_after=3.0, draw=lambda: 1.0) == 3.0
    assert backoff.delay(2, retry_after=0.5, draw=lambda: 1.0) == 2.0
    assert backoff.delay(1, retry_after=None, draw=lambda: 1.0) == 1.0


def test_a_long_run_of_failures_stays_at_the_cap() -> None:
    assert Backoff(initial=0.2, maximum=5.0).delay(5000, draw=lambda: 1.0) == 5.0


def test_max_attempts_bounds_the_tries_and_zero_bounds_nothing() -> None:
    bounded = Backoff(initial=1.0, maximum=2.0, max_attempts=3)
    assert [bounded.exhausted(n) for n in (1, 2, 3, 4)] == [False, False, True, True]
    assert not Backoff(initial=1.0, maximum=2.0).exhausted(10_000)
