"""Token coalescing: deltas queued while the reader is busy leave as one; order is kept,
other events are never merged, errors arrive after what came before them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.router.coalescing import coalesce, merge_text
from services.router.engines.base import Finish, FinishReason, TextDelta
from services.router.engines.tools import ToolCallDelta
from tests.clock import settle

Event = TextDelta | Finish | str


async def source(events: list[Event], fail: Exception | None = None) -> AsyncIterator[Event]:
    for event in events:
        yield event
        await asyncio.sleep(0)
    if fail is not None:
        raise fail


def merge(a: Event, b: Event) -> Event | None:
    return merge_text(a, b)


async def test_a_reader_that_keeps_up_gets_every_delta_as_it_came() -> None:
    events: list[Event] = [TextDelta("a"), TextDelta("b"), "switch", TextDelta("c")]
    got = [e async for e in coalesce(source(events), merge)]
    assert got == events


async def test_deltas_queued_behind_a_slow_reader_leave_as_one() -> None:
    finish = Finish(FinishReason.STOP, 1, 5)
    events: list[Event] = [TextDelta(x) for x in "abcde"] + ["switch", TextDelta("f"), finish]
    got: list[Event] = []
    async for event in coalesce(source(events), merge):
        got.append(event)
        await settle()  # the reader is slower than the source: it runs ahead meanwhile
    split = got.index("switch")
    assert "".join(e.text for e in got[:split] if isinstance(e, TextDelta)) == "abcde"
    assert got[split + 1 :] == [TextDelta("f"), finish]
    assert len(got) < len(events)  # fewer messages than deltas


async def test_an_error_arrives_after_the_events_before_it() -> None:
    got: list[Event] = []

    async def read() -> None:
        async for event in coalesce(
            source([TextDelta("a"), TextDelta("b")], ValueError("broken")), merge
        ):
            got.append(event)

    with pytest.raises(ValueError, match="broken"):
        await read()
    assert "".join(e.text for e in got if isinstance(e, TextDelta)) == "ab"


async def test_closing_the_reader_cancels_the_source() -> None:
    cancelled = asyncio.Event()

    async def endless() -> AsyncIterator[Event]:
        try:
            while True:
                yield TextDelta("x")
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    stream = coalesce(endless(), merge)
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()
    assert cancelled.is_set()


def test_pieces_of_one_tool_call_merge_and_other_calls_stay_apart() -> None:
    first = ToolCallDelta(0, "call_1", "get_weather", '{"ci')
    more = ToolCallDelta(0, arguments='ty": "Oslo"}')
    assert merge_text(first, more) == ToolCallDelta(0, "call_1", "get_weather", '{"city": "Oslo"}')
    # A new call (its own id and name, or another index) is never folded into the last one.
    assert merge_text(first, ToolCallDelta(1, "call_2", "get_time")) is None
    assert merge_text(more, ToolCallDelta(0, "call_3", "get_time")) is None
    assert merge_text(first, TextDelta("x")) is None
