"""Tool calling and structured output in domain terms: what a call offers the model (tools,
a tool choice, a response format), what the model gives back (tool calls, streamed as
deltas), and the assembly of those deltas into complete calls.

Engines translate these to and from each provider's wire format; the router validates the
request (`services.router.structured`) and the answer, and relays the deltas. Arguments and
schemas stay JSON text end to end (`arguments_json`, `parameters_json`): what the caller
sent is what the provider gets, and a provider's argument fragments cross Saga as they came.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call."""

    name: str
    description: str = ""
    parameters_json: str = ""
    """The JSON Schema of the arguments as JSON text ("" = no arguments)."""
    strict: bool = False

    def parameters(self) -> dict[str, Any]:
        """The schema as an object (an empty object schema when there is none). Call only
        after validation: the text is then a JSON object."""
        if not self.parameters_json:
            return {"type": "object", "properties": {}}
        value = json.loads(self.parameters_json)
        return value if isinstance(value, dict) else {"type": "object", "properties": {}}


class ToolChoiceMode(enum.Enum):
    """Whether and which tools the model must call (values mirror the proto's)."""

    AUTO = 1
    NONE = 2
    REQUIRED = 3
    NAMED = 4


@dataclass(frozen=True)
class ToolChoice:
    """The tool choice of a call; `name` with NAMED."""

    mode: ToolChoiceMode = ToolChoiceMode.AUTO
    name: str = ""


AUTO = ToolChoice()


class ResponseFormatType(enum.Enum):
    """The shape of the answer's text (values mirror the proto's)."""

    TEXT = 1
    JSON_OBJECT = 2
    JSON_SCHEMA = 3


DEFAULT_SCHEMA_NAME = "response"


@dataclass(frozen=True)
class ResponseFormat:
    """Structured output: a JSON object, or JSON valid against `schema_json`."""

    type: ResponseFormatType = ResponseFormatType.TEXT
    name: str = DEFAULT_SCHEMA_NAME
    schema_json: str = ""
    strict: bool = False

    @property
    def is_json(self) -> bool:
        """The answer must be JSON (checked by the router before it is delivered)."""
        return self.type is not ResponseFormatType.TEXT

    def schema(self) -> dict[str, Any]:
        """The schema as an object ({} = any JSON object). Call only after validation."""
        if self.type is not ResponseFormatType.JSON_SCHEMA or not self.schema_json:
            return {}
        value = json.loads(self.schema_json)
        return value if isinstance(value, dict) else {}


TEXT = ResponseFormat()


def json_instruction(form: ResponseFormat) -> str:
    """The system-prompt instruction that asks for a JSON answer, for a provider that has no
    JSON mode for this request (the router checks the answer either way)."""
    if form.type is ResponseFormatType.JSON_SCHEMA:
        return (
            "Answer with only a JSON value, no prose and no code fence, valid against this "
            f"JSON Schema: {form.schema_json}"
        )
    return "Answer with only a JSON object, no prose and no code fence."


@dataclass(frozen=True)
class ToolCall:
    """A complete tool call: the model asks the caller to run `name` with the arguments."""

    id: str
    name: str
    arguments_json: str = "{}"


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a tool call being streamed: the first piece of a call (per `index`) has
    its id and name, the next ones fragments of its arguments' JSON text."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class _Building:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallAssembler:
    """Collects the tool-call deltas of one attempt into complete calls.

    `add` takes every delta in order; `calls` gives the calls in index order once the
    attempt finished. `chars` counts argument characters, for the argument-size bound."""

    def __init__(self) -> None:
        self._calls: dict[int, _Building] = {}
        self.chars = 0

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, delta: ToolCallDelta) -> None:
        """Take one delta (an id or name repeated on later deltas is kept as first given)."""
        building = self._calls.setdefault(delta.index, _Building())
        if delta.id and not building.id:
            building.id = delta.id
        if delta.name and not building.name:
            building.name = delta.name
        if delta.arguments:
            building.arguments.append(delta.arguments)
            self.chars += len(delta.arguments)

    def calls(self, mint: str) -> tuple[ToolCall, ...]:
        """The calls, in index order; a call without an id gets `{mint}_{index}`. Empty
        arguments are `{}` (a tool without parameters)."""
        return tuple(
            ToolCall(
                b.id or f"{mint}_{index}",
                b.name,
                "".join(b.arguments) or "{}",
            )
            for index, b in sorted(self._calls.items())
        )
