"""Mid-stream fallback: asking the next provider to continue a broken answer, seamlessly.

When a stream breaks after the caller received text, that text cannot be taken back. The
next provider gets the same conversation plus two messages: the partial answer as an
assistant message, then a user message asking it to continue exactly where the text stops
(`CONTINUE_INSTRUCTION`). Every provider we speak to understands that shape (an assistant
message followed by a user one); none needs a provider-specific "prefill" feature. The
continuation may use what is left of `max_tokens`.

Models sometimes ignore the instruction and start the answer over. `RepeatFilter` catches
that: it holds the continuation's first text back while it is still a prefix of the partial
answer (leading whitespace aside) and drops it when it turns out to repeat the partial answer
— whole, then going on, or only a beginning of it before the stream ended. Text that departs
from the partial answer is passed on untouched, held text included: a continuation that
happens to start with the answer's first word is not a repetition, and deleting real text on
a guess would be worse than a repeated phrase. The caller thus receives the partial answer
once, then the continuation.
"""

from __future__ import annotations

from dataclasses import replace

from services.router.engines.base import ChatMessage, EngineRequest

CONTINUE_INSTRUCTION = (
    "Your previous answer was cut off. Continue it from exactly where it stops, as if "
    "there had been no interruption: do not repeat any of it, do not comment on the "
    "interruption, and keep the same language and style."
)


def continuation_request(original: EngineRequest, partial: str, max_tokens: int) -> EngineRequest:
    """The request that asks a provider to continue `partial`, with at most `max_tokens`
    (at least 1) more tokens."""
    return replace(
        original,
        messages=(
            *original.messages,
            ChatMessage("assistant", partial),
            ChatMessage("user", CONTINUE_INSTRUCTION),
        ),
        max_tokens=max(1, max_tokens),
    )


class RepeatFilter:
    """Drops a continuation's repetition of the partial answer (see the module docstring).

    Feed it every chunk of the continuation and pass on what `feed` returns; call `flush` when
    the continuation ends and pass that on too."""

    def __init__(self, partial: str) -> None:
        self._partial = partial.lstrip()
        self._held = ""
        self._deciding = bool(self._partial)

    def feed(self, text: str) -> str:
        """The part of `text` (with anything held before) to send now."""
        if not self._deciding:
            return text
        self._held += text
        seen = self._held.lstrip()
        if not seen or (self._partial.startswith(seen) and len(seen) < len(self._partial)):
            return ""  # still repeating the beginning (or only whitespace): wait and see
        self._deciding = False
        held, self._held = self._held, ""
        if seen.startswith(self._partial):
            return seen[len(self._partial) :]  # the whole partial answer again: drop it
        return held

    def flush(self) -> str:
        """What is still held when the continuation ends: a repetition of the beginning of
        the partial answer, dropped; whitespace alone is kept."""
        held, self._held = self._held, ""
        self._deciding = False
        return held if not held.strip() else ""
