"""Token usage as every service counts it — of one provider attempt, a step, or a whole run
(summed over every attempt, failed ones and fallbacks included). The one domain type;
`usage_messages` converts it to and from `saga.execution.v1.Usage`. Money is counted apart,
in integer micro-USD.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts; `total_tokens` is always input + output (as the contract defines it)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    """Input tokens served from the provider's prompt cache (a subset of `input_tokens`)."""
    estimated: bool = False
    """True when any count was estimated because a provider did not report it."""
    cache_write_tokens: int = 0
    """Input tokens written to the provider's prompt cache (a subset of `input_tokens`,
    apart from `cached_tokens`), billed at the cache-write price."""

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            estimated=self.estimated or other.estimated,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
        )


def usage_json(usage: Usage) -> str:
    """The JSON object a table stores (the fields of the contract's Usage; cache writes only
    when there are some, so usage without them keeps the form it always had)."""
    stored: dict[str, int | bool] = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "cached_tokens": usage.cached_tokens,
        "estimated": usage.estimated,
    }
    if usage.cache_write_tokens:
        stored["cache_write_tokens"] = usage.cache_write_tokens
    return json.dumps(stored)


def usage_from_json(text: str) -> Usage:
    """The usage a stored JSON object holds (`{}`: none); its total is recomputed."""
    stored = json.loads(text)
    return Usage(
        input_tokens=stored.get("input_tokens", 0),
        output_tokens=stored.get("output_tokens", 0),
        cached_tokens=stored.get("cached_tokens", 0),
        estimated=stored.get("estimated", False),
        cache_write_tokens=stored.get("cache_write_tokens", 0),
    )
