"""Learned context windows: believed over the configured one for an hour, then forgotten;
scaled to how the provider counted the refused prompt."""

from __future__ import annotations

from services.router.context_limits import ContextLimit
from services.router.context_windows import LEARNED_WINDOW_SECONDS, LearnedWindow
from tests.clock import Clock


def test_a_stated_window_is_kept_for_an_hour_then_forgotten() -> None:
    clock = Clock()
    learned = LearnedWindow(clock)
    assert learned.window() is None
    assert not learned.refuses(10**9)
    learned.learn(ContextLimit(window=8192, prompt=9000, requested=9000), estimate=9000)
    assert learned.window() == 8192
    assert learned.refuses(9000)
    assert not learned.refuses(8000)
    clock.advance(LEARNED_WINDOW_SECONDS - 1)
    assert learned.window() == 8192
    clock.advance(1)
    assert learned.window() is None
    assert not learned.refuses(9000)


def test_the_same_prompt_is_refused_however_far_the_estimate_is_off() -> None:
    # The provider counted 1,500 tokens where the router estimated 1,875 (and the window,
    # 1,000, is in the provider's tokens): that prompt and longer ones are known too long,
    # a prompt estimated a third as long fits.
    learned = LearnedWindow(Clock())
    learned.learn(ContextLimit(window=1000, prompt=1500, requested=1500), estimate=1875)
    assert learned.refuses(1875)
    assert not learned.refuses(1875 // 3)
    # An error naming another window replaces the first at once.
    learned.learn(ContextLimit(window=4000, prompt=4100, requested=4100), estimate=4100)
    assert learned.window() == 4000
    assert not learned.refuses(1875)


def test_an_error_without_a_window_teaches_nothing() -> None:
    learned = LearnedWindow(Clock())
    learned.learn(ContextLimit(window=None, prompt=5000, requested=5000), estimate=5000)
    assert learned.window() is None
    assert not learned.refuses(5000)


def test_the_completion_counts_where_the_provider_counted_it() -> None:
    # Anthropic: "input length and `max_tokens` exceed context limit: 960 + 50 > 1000".
    counted = LearnedWindow(Clock())
    counted.learn(ContextLimit(window=1000, prompt=960, requested=1010), estimate=960)
    assert counted.refuses(960, completion=50)
    assert not counted.refuses(960, completion=40)
    # OpenAI's "your messages resulted in": only the prompt counted.
    prompt_only = LearnedWindow(Clock())
    prompt_only.learn(ContextLimit(window=1000, prompt=1500, requested=1500), estimate=1500)
    assert not prompt_only.refuses(960, completion=50)
    assert prompt_only.refuses(1001, completion=0)
