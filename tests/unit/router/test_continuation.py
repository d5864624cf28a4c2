"""Mid-stream continuation: the request that asks for the rest, and dropping a repetition of
the partial answer."""

from __future__ import annotations

import pytest

from services.router.continuation import CONTINUE_INSTRUCTION, RepeatFilter, continuation_request
from services.router.engines.base import ChatMessage, EngineRequest


def test_the_continuation_request_appends_the_partial_answer_and_the_instruction() -> None:
    original = EngineRequest(
        messages=(ChatMessage("user", "tell me"),), system_prompt="be brief", max_tokens=100
    )
    request = continuation_request(original, "Once upon", 97)
    assert request.messages == (
        ChatMessage("user", "tell me"),
        ChatMessage("assistant", "Once upon"),
        ChatMessage("user", CONTINUE_INSTRUCTION),
    )
    assert (request.system_prompt, request.max_tokens) == ("be brief", 97)
    assert continuation_request(original, "x", -3).max_tokens == 1


def run(partial: str, chunks: list[str]) -> str:
    f = RepeatFilter(partial)
    return "".join(f.feed(c) for c in chunks) + f.flush()


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        # A proper continuation passes untouched.
        ([" a time", " there was"], " a time there was"),
        # The model started over: its copy of the partial answer is dropped.
        (["Once", " upon", " a time"], " a time"),
        (["Once upon a time"], " a time"),
        ([" Once upon", " a time"], " a time"),  # leading whitespace aside
        # Only a beginning of it, then the stream ended: all repetition.
        (["Once"], ""),
        # Starts like the answer but departs from it: not a repetition, kept whole.
        (["Once", " more"], "Once more"),
        (["On", "ward"], "Onward"),
    ],
)
def test_a_repetition_of_the_partial_answer_is_dropped(chunks: list[str], expected: str) -> None:
    assert run("Once upon", chunks) == expected


def test_nothing_is_held_once_the_continuation_departs() -> None:
    f = RepeatFilter("Once upon")
    assert f.feed("Once") == ""  # held: could be a repetition
    assert f.feed(" more") == "Once more"
    assert f.feed(" Once upon") == " Once upon"  # decided: passes as is
    assert f.flush() == ""
