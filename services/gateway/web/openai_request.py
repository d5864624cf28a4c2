"""An OpenAI chat completion request (`POST /v1/chat/completions`) read as a run of the
`chat` pattern: its conversation and sampling fields become the pattern's inputs.

Every field is acted on or refused: a field Saga does not build (tools, n > 1, logprobs,
response formats other than text, ...) is INVALID_ARGUMENT PARAMETER_UNSUPPORTED naming it
(OpenAI's `param`), and a field OpenAI does not define is INVALID_ARGUMENT
PARAMETER_UNKNOWN; neither is ever dropped. The bounds are `services.common.sampling`'s,
the ones the `llm.complete` step and the router check again.

The conversation: system and developer messages join the system prompt (in order, blank
line between); the last message must be the user's and is the prompt; the user and
assistant turns before it are the pattern's `messages` input. A message's content is text,
or a list of text parts (joined); any other part is refused."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2

from services.common import sampling
from services.common.config import MAX_MODEL_NAME
from services.common.errors import FieldViolation, InvalidArgument

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
        *NUMBERS,
    }
)
"""Fields read (n and logprobs only at their defaults)."""
UNSUPPORTED = frozenset(
    {
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "functions",
        "function_call",
        "top_logprobs",
        "logit_bias",
        "response_format",
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
ROLES = ("system", "developer", "user", "assistant")


@dataclass(frozen=True)
class ChatCompletionRequest:
    """A checked request: the model asked for, how to answer, and the chat inputs."""

    model: str
    stream: bool
    include_usage: bool
    inputs: struct_pb2.Struct


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


def _conversation(messages: Any) -> tuple[str, str, list[dict[str, str]]]:
    """(system prompt, prompt, earlier turns) of `messages`."""
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", "messages must be a non-empty list")
    if len(messages) > MAX_MESSAGES:
        raise invalid("messages", f"at most {MAX_MESSAGES} messages")
    system: list[str] = []
    turns: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(param, f"{param} must be an object")
        role = message.get("role")
        if role not in ROLES:
            raise unsupported(f"{param}.role", f"the role {str(role)[:32]!r}")
        extra = sorted(set(message) - {"role", "content"})
        if extra:
            # name, tool_calls, refusal, audio: each would change the answer if honoured.
            raise unsupported(f"{param}.{extra[0]}", "this message field")
        content = _content(message.get("content"), f"{param}.content")
        if role in ("system", "developer"):
            system.append(content)
        else:
            turns.append({"role": str(role), "content": content})
    if not turns or turns[-1]["role"] != "user":
        raise invalid("messages", "the last message that is not a system message is the user's")
    prompt = turns.pop()["content"]
    joined = "\n\n".join(system)
    for name, text in (("messages", prompt), ("messages", joined)):
        if len(text) > MAX_CONTENT_CHARS:
            raise invalid(name, f"a prompt or system prompt has at most {MAX_CONTENT_CHARS} chars")
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


def _refuse_unbuilt(body: dict[str, Any]) -> None:
    for name in sorted(body):
        if name in ACCEPTED or body[name] is None:
            continue
        if name in UNSUPPORTED:
            raise unsupported(name, name)
        raise invalid(name, f"unrecognized request argument: {name[:64]}", "PARAMETER_UNKNOWN")
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
    inputs: dict[str, Any] = {"prompt": prompt}
    if system:
        inputs["system"] = system
    if turns:
        inputs["messages"] = turns
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
    return ChatCompletionRequest(model, stream, _stream_options(body, stream), struct)
