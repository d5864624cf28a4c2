"""What a provider's context-length error says in numbers: its context window, and how many
tokens the refused request counted. Pure text parsing (no I/O), so the router can learn a
window the configuration got wrong (`context_windows`) and fall back to the candidates the
prompt may fit.

The wordings read, as the providers send them (numbers plain or with thousands separators):

* OpenAI, Azure OpenAI: "This model's maximum context length is 8192 tokens. However, your
  messages resulted in 9000 tokens." (code `context_length_exceeded`);
* OpenAI, Azure OpenAI, vLLM: "This model's maximum context length is 4096 tokens. However,
  you requested 5000 tokens (4000 in the messages, 1000 in the completion).";
* vLLM (newer): "'max_tokens' or 'max_completion_tokens' is too large: 1000. This model's
  maximum context length is 4096 tokens and your request has 3500 input tokens (1000 > 4096
  - 3500).";
* Azure OpenAI (newer models): "Input tokens exceed the configured limit of 272000 tokens.
  Your messages resulted in 509178 tokens.";
* Anthropic: "prompt is too long: 210000 tokens > 200000 maximum", and "input length and
  `max_tokens` exceed context limit: 197202 + 21333 > 200000, decrease input length or
  `max_tokens` and try again".

A message in none of these shapes gives None: the router then knows only that the prompt
did not fit, as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_TOKENS_READ = 1_000_000_000
"""A count above this is not a token count (a misread, or a hostile message): ignored."""

_N = r"(?:\d{1,3}(?:,\d{3})+|\d+)"
"""A count: plain digits, or digits in groups of three separated by commas."""

_WORDINGS = tuple(
    re.compile(pattern.replace("N", _N), re.IGNORECASE)
    for pattern in (
        r"maximum context length is (?P<window>N) tokens",
        r"configured limit of (?P<window>N) tokens",
        r"you requested (?P<requested>N) tokens \((?P<prompt>N) in the messages, "
        r"(?P<completion>N) in the completion",
        r"(?:messages|prompt) resulted in (?P<prompt>N) tokens",
        r"your request has (?P<prompt>N) input tokens \((?P<completion>N) > ",
        r"context limit: (?P<prompt>N) \+ (?P<completion>N) > (?P<window>N)",
        r"prompt is too long: (?P<prompt>N) tokens > (?P<window>N) maximum",
    )
)
"""The wordings of the module docstring; each names some of window, prompt, completion and
requested."""


@dataclass(frozen=True)
class ContextLimit:
    """The numbers of one context-length error (each None when the message does not say)."""

    window: int | None
    """The provider's context window, tokens."""
    prompt: int | None
    """The tokens of the refused prompt (the messages), as the provider counted them."""
    requested: int | None
    """Everything the provider counted against the window: the prompt, plus the completion
    (max_tokens) where the provider counts it (vLLM, Anthropic's `max_tokens` wording)."""


def _count(text: str | None) -> int | None:
    if text is None:
        return None
    value = int(text.replace(",", ""))
    return value if 0 < value <= MAX_TOKENS_READ else None


def parse(message: str) -> ContextLimit | None:
    """The numbers a context-length error `message` gives, or None when it gives none."""
    found: dict[str, int] = {}
    for wording in _WORDINGS:
        if match := wording.search(message):
            for name, text in match.groupdict().items():
                value = _count(text)
                if value is not None:
                    found.setdefault(name, value)
    window, prompt = found.get("window"), found.get("prompt")
    if window is None and prompt is None:
        return None
    requested = found.get("requested")
    if requested is None and prompt is not None:
        requested = prompt + found.get("completion", 0)
    return ContextLimit(window, prompt, requested)
