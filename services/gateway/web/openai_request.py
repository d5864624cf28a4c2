"""An OpenAI chat completion request (`POST /v1/chat/completions`) read as a run of a
pattern: its conversation and sampling fields become the pattern's inputs.

A plain conversation runs the `chat` pattern. One with tools, a tool choice, parallel tool
calls, a response format other than text, or tool turns (an assistant's `tool_calls`, a
`tool` message) runs the `tool_call` pattern, which takes them (`openai_tools`) and returns
the model's calls for the client to run.

Every field is acted on or refused: a field Saga does not build (n > 1, logprobs, audio,
...) is INVALID_ARGUMENT PARAMETER_UNSUPPORTED naming it (OpenAI's `param`), and a field
OpenAI does not define is INVALID_ARGUMENT PARAMETER_UNKNOWN; neither is ever dropped. The
bounds are `services.common.sampling`'s, the ones the `llm.complete` step and the router
check again.

The conversation: system and developer messages join the system prompt (in order, blank
line between); the last other message is the user's (then it is the prompt) or a tool
result (then there is no prompt: the model answers the results); the turns before it are
the pattern's `messages` (chat) or `history` (tool_call) input. A message's content is
text, or a list of text parts (joined); any other part is refused. A member whose value is
null is read as absent, as OpenAI reads it (the SDKs send an assistant message back with
`refusal: null`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2

from services.common import sampling
from services.common.config import MAX_MODEL_NAME
from services.common.errors import FieldViolation, InvalidArgument
from services.gateway.web.openai_tools import TOOL_FIELDS, history_calls, tool_inputs

MAX_MESSAGES = 200
"""The router's bound on a call's messages (system messages included here)."""
MAX_CONTENT_CHARS = 100_000
"""The chat pattern's bound on the prompt and the system prompt."""
MAX_STOP_SEQUENCES = 4
"""OpenAI's own bound on `stop` (Saga's router takes up to 16)."""

NUMBERS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
ACCEPTED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "user",
        "n",
        "logprobs",
        *TOOL_FIELDS,
        *NUMBERS,
    }
)
"""Fields read (n and logprobs only at their defaults)."""
UNSUPPORTED = frozenset(
    {
        "functions",
        "function_call",
        "top_logprobs",
        "logit_bias",
        "modalities",
        "audio",
        "prediction",
        "reasoning_effort",
        "service_tier",
        "store",
        "metadata",
        "web_search_options",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "verbosity",
    }
)
"""OpenAI fields Saga does not build yet (refused by name, never ignored)."""
ROLES = ("system", "developer", "user", "assistant", "tool")
CHAT_PATTERN = "chat"
TOOL_PATTERN = "tool_call"
_MESSAGE_KEYS = {
    "system": {"role", "content"},
    "developer": {"role", "content"},
    "user": {"role", "content"},
    "assistant": {"role", "content", "tool_calls"},
    "tool": {"role", "content", "tool_call_id"},
}
"""What each role's message may hold; another member (name, audio, ...) would change the
answer if honoured, so it is refused."""


@dataclass(frozen=True)
class ChatCompletionRequest:
    """A checked request: the model asked for, how to answer, and the pattern's inputs."""

    model: str
    stream: bool
    include_usage: bool
    inputs: struct_pb2.Struct
    pattern: str = CHAT_PATTERN


def invalid(param: str, message: str, reason: str = "OPTION_INVALID") -> InvalidArgument:
    """INVALID_ARGUMENT naming OpenAI's `param`."""
    return InvalidArgument(
        message, reason=reason, field_violations=[FieldViolation(param, message)]
    )


def unsupported(param: str, what: str) -> InvalidArgument:
    return invalid(param, f"{param}: {what} is not supported by Saga", "PARAMETER_UNSUPPORTED")


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(name, f"{name} must be a number")
    if problem := sampling.number_problem(name, float(value)):
        raise invalid(name, f"{name} must be {problem}")
    return float(value)


def _integer(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(name, f"{name} must be an integer")
    return value


def _content(value: Any, param: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for i, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise unsupported(f"{param}[{i}]", f"a content part of type {str(kind)[:32]!r}")
            if not isinstance(part.get("text"), str) or set(part) - {"type", "text"}:
                raise invalid(f"{param}[{i}]", "a text part is {type: text, text: string}")
            texts.append(part["text"])
        return "".join(texts)
    raise invalid(param, f"{param} must be a string or a list of text parts")


def _turn(message: dict[str, Any], role: str, param: str) -> dict[str, Any]:
    """A user, assistant or tool message as a history turn."""
    calls = message.get("tool_calls")
    if role == "assistant" and calls is not None:
        turn: dict[str, Any] = {"role": role, "content": "", "tool_calls": []}
        turn["tool_calls"] = history_calls(calls, f"{param}.tool_calls", unsupported)
        if message.get("content") is not None:
            turn["content"] = _content(message["content"], f"{param}.content")
        return turn
    turn = {"role": role, "content": _content(message.get("content"), f"{param}.content")}
    if role == "tool":
        if not isinstance(message.get("tool_call_id"), str):
            raise invalid(f"{param}.tool_call_id", "a tool message names its call: tool_call_id")
        turn["tool_call_id"] = message["tool_call_id"]
    return turn


def _conversation(messages: Any) -> tuple[str, str | None, list[dict[str, Any]]]:
    """(system prompt, prompt or None after tool results, earlier turns) of `messages`."""
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", "messages must be a non-empty list")
    if len(messages) > MAX_MESSAGES:
        raise invalid("messages", f"at most {MAX_MESSAGES} messages")
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, given in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(given, dict):
            raise invalid(param, f"{param} must be an object")
        message = {k: v for k, v in given.items() if v is not None}
        role = message.get("role")
        if role not in ROLES:
            raise unsupported(f"{param}.role", f"the role {str(role)[:32]!r}")
        extra = sorted(set(message) - _MESSAGE_KEYS[str(role)])
        if extra:
            raise unsupported(f"{param}.{extra[0]}", "this message field")
        if role in ("system", "developer"):
            system.append(_content(message.get("content"), f"{param}.content"))
        else:
            turns.append(_turn(message, str(role), param))
    if not turns or turns[-1]["role"] not in ("user", "tool"):
        raise invalid(
            "messages", "the last message that is not a system message is the user's or a tool's"
        )
    prompt = turns.pop()["content"] if turns[-1]["role"] == "user" else None
    joined = "\n\n".join(system)
    for text in (prompt or "", joined):
        if len(text) > MAX_CONTENT_CHARS:
            raise invalid(
                "messages", f"a prompt or system prompt has at most {MAX_CONTENT_CHARS} chars"
            )
    return joined, prompt, turns


def _stop(value: Any) -> list[str] | None:
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else value
    problem = sampling.stop_problem(stops)
    if not problem and len(stops) > MAX_STOP_SEQUENCES:
        problem = f"at most {MAX_STOP_SEQUENCES} sequences"
    if problem:
        raise invalid("stop", f"stop must be a string or {problem}")
    return list(stops)


def _max_tokens(body: dict[str, Any]) -> int | None:
    given: dict[str, int] = {}
    for name in ("max_tokens", "max_completion_tokens"):
        if (value := _integer(body, name)) is not None:
            if problem := sampling.max_tokens_problem(value):
                raise invalid(name, f"{name} must be {problem}")
            given[name] = value
    if len(set(given.values())) > 1:
        raise invalid("max_completion_tokens", "max_tokens and max_completion_tokens differ")
    return next(iter(given.values()), None)


def _stream_options(body: dict[str, Any], stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise invalid("stream_options", "stream_options is only allowed when stream is true")
    if not isinstance(options, dict):
        raise invalid("stream_options", "stream_options must be an object")
    for key in options:
        if key != "include_usage":
            raise unsupported(f"stream_options.{key}", "this stream option")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise invalid("stream_options.include_usage", "include_usage must be a boolean")
    return include


def refuse_fields(
    body: dict[str, Any], accepted: frozenset[str], not_built: frozenset[str]
) -> None:
    """Refuse the first field of `body` that is not `accepted` (a null one is absent):
    PARAMETER_UNSUPPORTED for OpenAI's fields Saga does not build, else PARAMETER_UNKNOWN."""
    for name in sorted(body):
        if name in accepted or body[name] is None:
            continue
        if name in not_built:
            raise unsupported(name, name)
        raise invalid(name, f"unrecognized request argument: {name[:64]}", "PARAMETER_UNKNOWN")


def _refuse_unbuilt(body: dict[str, Any]) -> None:
    refuse_fields(body, ACCEPTED, UNSUPPORTED)
    if body.get("n") not in (None, 1):
        raise unsupported("n", "more than one choice (n > 1)")
    if body.get("logprobs") not in (None, False):
        raise unsupported("logprobs", "logprobs")


def parse(body: Any) -> ChatCompletionRequest:
    """The checked request of JSON `body`; INVALID_ARGUMENT naming the first bad field."""
    if not isinstance(body, dict):
        raise invalid("body", "the request body must be a JSON object", "REQUEST_MALFORMED")
    _refuse_unbuilt(body)
    model = body.get("model")
    if not isinstance(model, str) or not model or len(model) > MAX_MODEL_NAME:
        raise invalid("model", f"model must be a model id of at most {MAX_MODEL_NAME} chars")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid("stream", "stream must be a boolean")
    system, prompt, turns = _conversation(body.get("messages"))
    inputs: dict[str, Any] = tool_inputs(body, unsupported)
    tooled = bool(inputs) or prompt is None or any(set(t) - {"role", "content"} for t in turns)
    if prompt is not None:
        inputs["prompt"] = prompt
    if system:
        inputs["system"] = system
    if turns:
        # The tool_call pattern names the caller's turns `history`; chat, `messages`.
        inputs["history" if tooled else "messages"] = turns
    for name in NUMBERS:
        if (number := _number(body, name)) is not None:
            inputs[name] = number
    if (tokens := _max_tokens(body)) is not None:
        inputs["max_tokens"] = tokens
    if (stops := _stop(body.get("stop"))) is not None:
        inputs["stop"] = stops
    if (seed := _integer(body, "seed")) is not None:
        if problem := sampling.seed_problem(seed):
            raise invalid("seed", f"seed must be {problem}")
        inputs["seed"] = seed
    user = body.get("user")
    if user is not None:
        if not isinstance(user, str) or (problem := sampling.end_user_problem(user)):
            raise invalid("user", f"user must be a string of at most {sampling.MAX_END_USER_CHARS}")
        if user:
            inputs["user"] = user
    struct = struct_pb2.Struct()
    struct.update(inputs)
    pattern = TOOL_PATTERN if tooled else CHAT_PATTERN
    return ChatCompletionRequest(model, stream, _stream_options(body, stream), struct, pattern)
