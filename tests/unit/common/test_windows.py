"""Sliding counts: what left the window is forgotten, memory stays bounded."""

from __future__ import annotations

from services.common.windows import SlidingCounts


def test_counts_cover_the_window_and_forget_what_left_it() -> None:
    counts = SlidingCounts(10.0, ("calls", "failures"))
    counts.add(100.0, "calls")
    counts.add(100.5, "failures", 2)
    counts.add(105.0, "calls", 3)
    assert counts.total(105.0, "calls") == 4
    assert counts.total(105.0, "failures") == 2
    # At 110.0 the bucket of second 100 has left the 10 s window; second 105 is still in.
    assert counts.total(110.0, "calls") == 3
    assert counts.total(110.0, "failures") == 0
    assert counts.total(200.0, "calls") == 0


def test_clear_forgets_everything() -> None:
    counts = SlidingCounts(5.0, ("calls",))
    counts.add(1.0, "calls", 7)
    counts.clear()
    assert counts.total(1.0, "calls") == 0
    counts.add(1.0, "calls")
    assert counts.total(1.0, "calls") == 1
