"""Context windows the providers stated themselves, learned from their context-length errors.

A configured `context_window` may be wrong (most deployments keep the default). When a
provider refuses a prompt as too long and its error names its window (`context_limits`),
the router believes the provider: `LearnedWindow` keeps that window for
`LEARNED_WINDOW_SECONDS` (one hour) and then forgets it, so a deployment moved to a larger
model is tried again within the hour without a restart; a later error naming another window
replaces it at once. The learning is per router process and in memory: one window per
configured provider (bounded by the configuration), lost at restart, which costs one refused
call to learn again.

The router's estimate of a prompt (~4 characters a token) is not the provider's count, so the
learned window also keeps how the provider counted the refused prompt against the estimate:
the same prompt sent again is known too long for that provider however far the estimate is
off, and a prompt estimated shorter in proportion is tried. A provider whose error counted
the completion against the window (vLLM, Anthropic's `max_tokens` wording) has the call's
max tokens counted too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from services.router.context_limits import ContextLimit

LEARNED_WINDOW_SECONDS = 3600.0
"""How long a window a provider stated is believed over the configured one."""

_SCALE_BOUNDS = (0.1, 10.0)
"""Provider tokens per estimated token, bounded: beyond these the counts are not of the
same prompt (the estimate of an empty prompt, a misread number)."""


class LearnedWindow:
    """One provider's context window as its last context-length error stated it."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        keep_seconds: float = LEARNED_WINDOW_SECONDS,
    ) -> None:
        self._clock = clock
        self._keep = keep_seconds
        self._window = 0
        self._scale = 1.0
        self._counts_completion = False
        self._until = 0.0

    def learn(self, limit: ContextLimit, estimate: int) -> None:
        """Believe the window `limit` names (nothing when it names none); `estimate` is the
        router's estimate of the refused prompt's tokens."""
        if limit.window is None:
            return
        self._window = limit.window
        self._scale = 1.0
        # The provider counted the completion (max tokens) against the window too.
        self._counts_completion = (
            limit.requested is not None
            and limit.prompt is not None
            and limit.requested > limit.prompt
        )
        if limit.prompt is not None and estimate > 0:
            low, high = _SCALE_BOUNDS
            self._scale = min(high, max(low, limit.prompt / estimate))
        self._until = self._clock() + self._keep

    def window(self) -> int | None:
        """The window learned and still believed, in the provider's tokens, or None."""
        if self._window and self._clock() < self._until:
            return self._window
        return None

    def refuses(self, estimate: int, completion: int = 0) -> bool:
        """Whether a prompt of `estimate` tokens (the router's estimate) asking for up to
        `completion` tokens is known too long for the provider: over the learned window,
        counted as the provider counts (the completion only if its error counted it)."""
        window = self.window()
        if window is None:
            return False
        asked = completion if self._counts_completion else 0
        return estimate * self._scale + asked > window
