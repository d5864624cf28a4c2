"""Server-sent events (the WHATWG `text/event-stream` format), parsed a line at a time so an
engine can pass each event on the moment its blank line arrives.

Only what LLM providers use: `event:` (the type; "message" when absent), `data:` (several
lines join with "\\n"), comments (`:`) and `id:` / `retry:` ignored.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True)
class SseEvent:
    """One dispatched event."""

    type: str
    data: str


class SseParser:
    """Feed it lines (without their line ending); it returns each event when it is complete."""

    def __init__(self) -> None:
        self._type = ""
        self._data: list[str] = []

    def feed(self, line: str) -> SseEvent | None:
        """The event `line` completes (a blank line ends an event), else None."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        return None

    def flush(self) -> SseEvent | None:
        """The event left pending when the stream ended without its blank line."""
        return self._dispatch()

    def _dispatch(self) -> SseEvent | None:
        if not self._data and not self._type:
            return None
        event = SseEvent(self._type or "message", "\n".join(self._data))
        self._type, self._data = "", []
        return event


async def sse_events(lines: AsyncIterator[str]) -> AsyncGenerator[SseEvent, None]:
    """The events of a stream of lines, each yielded as soon as it is complete."""
    parser = SseParser()
    async for line in lines:
        event = parser.feed(line)
        if event is not None:
            yield event
    event = parser.flush()
    if event is not None:
        yield event
