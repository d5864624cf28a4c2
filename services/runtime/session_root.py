"""The `session` root of a run's templates (SPEC 3.6), filled from the stages of the run's
session, oldest first:

- `session.id`: the session id;
- `session.stages`: the newest HISTORY_STAGES stages as {execution_id, pattern_id, outputs};
- `session.history`: the conversation so far, as {role, content} messages for an LLM. A
  stage is a turn of it when its run was given a text `prompt` input and answered a text
  `text` output (the `chat` pattern and any pattern shaped like it): its prompt as a `user`
  message, then its answer as an `assistant` one. Other stages are not conversation.

The history is bounded by `runtime.session_history_max_tokens`, estimated as the router
estimates text it was not told the size of (services/common/tokens.py): the oldest turns are
dropped first, each turn whole, so the history always opens with a user message (providers
such as Anthropic require it) and never holds an answer without its question. It also holds
at most MAX_HISTORY_TURNS turns, so a long session of short turns stays within the router's
bound on the messages of one call.

A run reads only the newest HISTORY_STAGES stages of its session (one indexed query,
`SessionStore.recent_stages`), so what a run costs before it starts does not grow with the
session: the history could hold no older stage, since each turn is one stage and it holds at
most MAX_HISTORY_TURNS of them.

A run without a session has an empty root: every path below it is absent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from services.common.tokens import estimate_tokens
from services.runtime.sessions import Stage

MAX_HISTORY_TURNS = 99
"""The router takes at most 200 messages a call (services/router/calls.py): 99 turns of two,
and the prompt."""
HISTORY_STAGES = MAX_HISTORY_TURNS
"""How many of its session's newest stages a run reads: every turn its history could hold."""


def turn(stage: Stage) -> tuple[dict[str, str], dict[str, str]] | None:
    """The (user, assistant) messages of a conversational stage, or None."""
    prompt, answer = stage.inputs.get("prompt"), stage.outputs.get("text")
    if not isinstance(prompt, str) or not isinstance(answer, str):
        return None
    return {"role": "user", "content": prompt}, {"role": "assistant", "content": answer}


def history(stages: Iterable[Stage], max_tokens: int) -> list[dict[str, str]]:
    """The conversation of `stages`, its newest turns within `max_tokens` (see the module)."""
    turns = [t for t in map(turn, stages) if t is not None]
    kept: list[tuple[dict[str, str], dict[str, str]]] = []
    spent = 0
    for question, answer in reversed(turns[-MAX_HISTORY_TURNS:]):
        spent += estimate_tokens(question["content"]) + estimate_tokens(answer["content"])
        if spent > max_tokens:
            break  # older turns are dropped too: the history stays contiguous
        kept.append((question, answer))
    return [message for pair in reversed(kept) for message in pair]


def session_root(session_id: str, stages: Sequence[Stage], max_tokens: int) -> dict[str, Any]:
    """The `session` root of a run in `session_id`, whose stages so far are `stages`."""
    return {
        "id": session_id,
        "stages": [
            {"execution_id": s.execution_id, "pattern_id": s.pattern_id, "outputs": dict(s.outputs)}
            for s in stages
        ],
        "history": history(stages, max_tokens),
    }
