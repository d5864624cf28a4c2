"""The `session` root: a session's stages as templates see them, and its conversation
history bounded by a token budget that drops the oldest turns first."""

from __future__ import annotations

from typing import Any

from services.router.calls import MAX_MESSAGES
from services.runtime.session_root import MAX_HISTORY_TURNS, history, session_root
from services.runtime.sessions import Stage


def stage(n: int, inputs: dict[str, Any], outputs: dict[str, Any], pattern: str = "chat") -> Stage:
    return Stage(f"exe_{n}", pattern, outputs, n, n + 1, inputs)


def chat(n: int, prompt: str, answer: str) -> Stage:
    return stage(n, {"prompt": prompt}, {"text": answer})


def test_the_root_names_the_session_its_stages_and_the_conversation() -> None:
    stages = (
        chat(1, "hello", "hi there"),
        stage(2, {"portfolio": "demo"}, {"value": "12.00"}, "portfolio_value"),
        chat(3, "and now?", "still here"),
    )
    root = session_root("ses_1", stages, 1000)
    assert root["id"] == "ses_1"
    assert root["stages"] == [
        {"execution_id": "exe_1", "pattern_id": "chat", "outputs": {"text": "hi there"}},
        {"execution_id": "exe_2", "pattern_id": "portfolio_value", "outputs": {"value": "12.00"}},
        {"execution_id": "exe_3", "pattern_id": "chat", "outputs": {"text": "still here"}},
    ]
    # The stage without a prompt and a text answer is not conversation.
    assert root["history"] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi there"},
        {"role": "user", "content": "and now?"},
        {"role": "assistant", "content": "still here"},
    ]


def test_stages_stored_without_inputs_or_text_are_no_turns() -> None:
    assert history([stage(1, {}, {"text": "orphan answer"})], 1000) == []
    assert history([stage(1, {"prompt": "q"}, {"text": 3})], 1000) == []
    assert session_root("ses_1", (), 1000) == {"id": "ses_1", "stages": [], "history": []}


def test_the_budget_drops_the_oldest_turns_whole() -> None:
    # 8 characters = 2 estimated tokens per message, so 4 per turn.
    stages = [chat(n, f"ask {n:04d}", f"say {n:04d}") for n in range(1, 4)]
    assert [m["content"] for m in history(stages, 12)] == [
        "ask 0001",
        "say 0001",
        "ask 0002",
        "say 0002",
        "ask 0003",
        "say 0003",
    ]
    assert [m["content"] for m in history(stages, 11)] == [
        "ask 0002",
        "say 0002",
        "ask 0003",
        "say 0003",
    ]
    # A budget that holds a turn's question but not its answer keeps neither.
    assert [m["content"] for m in history(stages, 7)] == ["ask 0003", "say 0003"]
    assert history(stages, 3) == []
    assert history(stages, 0) == []


def test_an_old_turn_that_fits_is_not_kept_past_a_newer_one_that_did_not() -> None:
    stages = [chat(1, "a", "b"), chat(2, "x" * 400, "y"), chat(3, "c", "d")]
    assert [m["content"] for m in history(stages, 10)] == ["c", "d"]


def test_a_long_session_of_short_turns_keeps_what_one_router_call_takes() -> None:
    stages = [chat(n, f"q{n}", f"a{n}") for n in range(150)]
    kept = history(stages, 10_000)
    assert len(kept) == 2 * MAX_HISTORY_TURNS
    assert (kept[0]["content"], kept[-1]["content"]) == (
        f"q{150 - MAX_HISTORY_TURNS}",
        "a149",
    )
    # The router's own bound, which the history and the prompt must fit together.
    assert len(kept) + 1 <= MAX_MESSAGES
