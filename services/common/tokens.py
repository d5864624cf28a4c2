"""Token estimates where no provider has counted: the router's accounting of an answer that
reported no usage, and the runtime's bound on a session's history, estimate alike."""

from __future__ import annotations

import math


def estimate_tokens(text: str) -> int:
    """Tokens of `text` when the provider does not say: ~4 characters each (OpenAI's rule
    of thumb for English); 0 for no text."""
    return math.ceil(len(text) / 4)
