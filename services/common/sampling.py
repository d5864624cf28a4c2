"""The sampling fields of an LLM call and their bounds, in one place for every hop that
checks them: the OpenAI-compatible door (naming OpenAI's parameter), the `llm.complete`
step's arguments and the router's ReasonRequest (`services/router/calls.py`).

Which engines send which field is `ENGINE_FIELDS`: the router never calls a provider whose
engine would drop a field the call set (see `services/router/calls.py`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MAX_TOKENS = 32_768
"""Most tokens a call may ask to generate (the router's bound)."""
MAX_STOP_SEQUENCES = 16
MAX_STOP_CHARS = 256
MAX_END_USER_CHARS = 256
SEED_BOUND = 2**53
"""|seed| at most this: it travels through a protobuf Struct (doubles) in a step's args."""

RANGES: Mapping[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}
"""Number fields -> (lowest, highest), as OpenAI bounds them."""

OPTIONAL_FIELDS = ("top_p", "seed", "presence_penalty", "frequency_penalty", "end_user")
"""Fields some engines cannot send (temperature, stop and max_tokens every engine sends)."""

ENGINE_FIELDS: Mapping[str, frozenset[str]] = {
    "sim": frozenset(OPTIONAL_FIELDS),
    "openai": frozenset(OPTIONAL_FIELDS),
    "copilot": frozenset(OPTIONAL_FIELDS),
    # Ollama's options take these; it has no end-user field.
    "ollama": frozenset({"top_p", "seed", "presence_penalty", "frequency_penalty"}),
    # Anthropic's Messages API has top_p and metadata.user_id, no seed and no penalties.
    "anthropic": frozenset({"top_p", "end_user"}),
}
"""Engine kind -> the OPTIONAL_FIELDS it sends to the provider."""


def number_problem(name: str, value: float) -> str:
    """What is wrong with number field `name` ("" when nothing is)."""
    low, high = RANGES[name]
    if not (math.isfinite(value) and low <= value <= high):
        return f"a number from {low:g} to {high:g}"
    return ""


def max_tokens_problem(value: int) -> str:
    return "" if 1 <= value <= MAX_TOKENS else f"1 to {MAX_TOKENS}"


def seed_problem(value: int) -> str:
    return "" if -SEED_BOUND <= value <= SEED_BOUND else "an integer from -2^53 to 2^53"


def stop_problem(value: Any) -> str:
    if not isinstance(value, list | tuple) or not all(isinstance(s, str) for s in value):
        return "a list of strings"
    if len(value) > MAX_STOP_SEQUENCES or any(not s or len(s) > MAX_STOP_CHARS for s in value):
        return (
            f"at most {MAX_STOP_SEQUENCES} non-empty sequences of at most {MAX_STOP_CHARS} "
            "characters"
        )
    return ""


def end_user_problem(value: str) -> str:
    return "" if len(value) <= MAX_END_USER_CHARS else f"at most {MAX_END_USER_CHARS} characters"


def unsupported(kind: str, present: set[str]) -> list[str]:
    """The fields of `present` an engine of `kind` would not send, in OPTIONAL_FIELDS order."""
    sent = ENGINE_FIELDS.get(kind, frozenset())
    return [f for f in OPTIONAL_FIELDS if f in present and f not in sent]
