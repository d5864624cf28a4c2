"""The bounds and checks of tool calling and structured output, in one place.

Requests (`check_request`, INVALID_ARGUMENT naming the field): at most `MAX_TOOLS` tools of
unique names (`NAME_PATTERN`), each schema JSON text of at most `MAX_SCHEMA_CHARS`
characters, nested at most `MAX_SCHEMA_DEPTH` deep, that is a valid JSON Schema (draft
2020-12, checked by the `jsonschema` package) — a tool's schema must be an object schema;
a tool choice that names a tool the request has; tool calls only on assistant messages and
tool-call ids only on tool messages (which need one), arguments a JSON object of at most
`MAX_ARGUMENT_CHARS`.

Answers (`tool_call_problem`, `output_problem`): a tool call names one of the request's
tools and its arguments are a JSON object valid against that tool's schema; a structured
answer is JSON (an object for JSON_OBJECT) valid against the response format's schema. They
return what is wrong, worded for the model (the router sends it back once) — never raise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from services.common.errors import FailedPrecondition, FieldViolation, InvalidArgument
from services.router.engines.base import ChatMessage, EngineRequest
from services.router.engines.tools import (
    ResponseFormat,
    ResponseFormatType,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
    ToolSpec,
)

MAX_TOOLS = 64
MAX_DESCRIPTION_CHARS = 4_096
MAX_SCHEMA_CHARS = 32_768
MAX_SCHEMA_DEPTH = 32
MAX_ARGUMENT_CHARS = 65_536
"""Longest arguments JSON of one tool call, and of all the calls of one answer together."""
MAX_TOOL_CALLS = 64
"""Most tool calls of one message (and of one answer)."""
MAX_ID_CHARS = 128
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PROBLEM_CHARS = 500  # a validation problem as sent back to the model and shown in errors


def _invalid(reason: str, field: str, description: str) -> InvalidArgument:
    return InvalidArgument(
        f"{field}: {description}",
        reason=reason,
        field_violations=[FieldViolation(field, description)],
    )


def _depth(value: Any, depth: int = 0) -> int:
    """How deep `value` nests (stops counting past the bound: no deep recursion)."""
    if depth > MAX_SCHEMA_DEPTH:
        return depth
    if isinstance(value, dict):
        return max((_depth(v, depth + 1) for v in value.values()), default=depth + 1)
    if isinstance(value, list):
        return max((_depth(v, depth + 1) for v in value), default=depth + 1)
    return depth


def schema_problem(text: str, *, object_schema: bool) -> str | None:
    """What is wrong with `text` as a JSON Schema, or None."""
    if len(text) > MAX_SCHEMA_CHARS:
        return f"at most {MAX_SCHEMA_CHARS} characters"
    try:
        schema = json.loads(text)
    except ValueError as error:
        return f"not JSON ({error})"[:_PROBLEM_CHARS]
    if not isinstance(schema, dict):
        return "a JSON Schema object"
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        return f"nested deeper than {MAX_SCHEMA_DEPTH}"
    if object_schema and schema.get("type", "object") != "object":
        return 'the arguments schema must be an object schema ("type": "object")'
    # Imported on the first call that has a schema: jsonschema loads its format checkers
    # (rfc3987_syntax's grammar, arrow, …), ~20 MiB the router holds for good otherwise.
    import jsonschema
    from jsonschema import exceptions as schema_errors

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except schema_errors.SchemaError as error:
        return f"not a valid JSON Schema: {error.message}"[:_PROBLEM_CHARS]
    return None


def _check_tools(tools: Sequence[ToolSpec]) -> None:
    if len(tools) > MAX_TOOLS:
        raise _invalid("TOOLS_INVALID", "tools", f"at most {MAX_TOOLS} tools")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        if not NAME_PATTERN.fullmatch(tool.name):
            raise _invalid(
                "TOOLS_INVALID", f"tools[{i}].name", "1 to 64 characters of [A-Za-z0-9_-]"
            )
        if tool.name in names:
            raise _invalid("TOOLS_INVALID", f"tools[{i}].name", f"{tool.name!r} is given twice")
        names.add(tool.name)
        if len(tool.description) > MAX_DESCRIPTION_CHARS:
            raise _invalid(
                "TOOLS_INVALID",
                f"tools[{i}].description",
                f"at most {MAX_DESCRIPTION_CHARS} characters",
            )
        if tool.parameters_json and (
            problem := schema_problem(tool.parameters_json, object_schema=True)
        ):
            raise _invalid(
                "TOOLS_INVALID", f"tools[{i}].parameters_json", f"tool {tool.name!r}: {problem}"
            )


def _check_choice(choice: ToolChoice, parallel: bool | None, tools: Sequence[ToolSpec]) -> None:
    if choice.mode is ToolChoiceMode.NAMED:
        if choice.name not in {t.name for t in tools}:
            raise _invalid(
                "TOOLS_INVALID", "tool_choice.name", "the name of one of the request's tools"
            )
    elif choice.name:
        raise _invalid("TOOLS_INVALID", "tool_choice.name", "only with TOOL_CHOICE_MODE_NAMED")
    if choice.mode is ToolChoiceMode.REQUIRED and not tools:
        raise _invalid("TOOLS_INVALID", "tool_choice", "TOOL_CHOICE_MODE_REQUIRED needs tools")
    if parallel is not None and not tools:
        raise _invalid("TOOLS_INVALID", "parallel_tool_calls", "only with tools")


def arguments_problem(text: str) -> str | None:
    """What is wrong with `text` as a tool call's arguments (a JSON object), or None."""
    if len(text) > MAX_ARGUMENT_CHARS:
        return f"at most {MAX_ARGUMENT_CHARS} characters"
    try:
        value = json.loads(text)
    except ValueError:
        return "not JSON"
    return None if isinstance(value, dict) else "not a JSON object"


def _check_messages(messages: Sequence[ChatMessage]) -> None:
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if m.tool_calls and m.role != "assistant":
            raise _invalid("TOOLS_INVALID", f"{where}.tool_calls", "only on assistant messages")
        if len(m.tool_calls) > MAX_TOOL_CALLS:
            raise _invalid(
                "TOOLS_INVALID", f"{where}.tool_calls", f"at most {MAX_TOOL_CALLS} calls"
            )
        for j, call in enumerate(m.tool_calls):
            if not call.id or len(call.id) > MAX_ID_CHARS:
                raise _invalid(
                    "TOOLS_INVALID", f"{where}.tool_calls[{j}].id", f"1 to {MAX_ID_CHARS} chars"
                )
            if not NAME_PATTERN.fullmatch(call.name):
                raise _invalid(
                    "TOOLS_INVALID",
                    f"{where}.tool_calls[{j}].name",
                    "1 to 64 characters of [A-Za-z0-9_-]",
                )
            if problem := arguments_problem(call.arguments_json):
                raise _invalid("TOOLS_INVALID", f"{where}.tool_calls[{j}].arguments_json", problem)
        if m.role == "tool":
            if not m.tool_call_id or len(m.tool_call_id) > MAX_ID_CHARS:
                raise _invalid(
                    "TOOLS_INVALID",
                    f"{where}.tool_call_id",
                    f"a tool message names its call: 1 to {MAX_ID_CHARS} characters",
                )
        elif m.tool_call_id:
            raise _invalid("TOOLS_INVALID", f"{where}.tool_call_id", "only on tool messages")


def _check_format(response_format: ResponseFormat) -> None:
    f = response_format
    if f.type is not ResponseFormatType.JSON_SCHEMA:
        if f.schema_json or f.strict:
            raise _invalid(
                "RESPONSE_FORMAT_INVALID",
                "response_format.schema_json",
                "only with RESPONSE_FORMAT_TYPE_JSON_SCHEMA",
            )
        return
    if not NAME_PATTERN.fullmatch(f.name):
        raise _invalid(
            "RESPONSE_FORMAT_INVALID", "response_format.name", "1 to 64 characters of [A-Za-z0-9_-]"
        )
    if not f.schema_json:
        raise _invalid(
            "RESPONSE_FORMAT_INVALID", "response_format.schema_json", "JSON_SCHEMA needs a schema"
        )
    if problem := schema_problem(f.schema_json, object_schema=False):
        raise _invalid("RESPONSE_FORMAT_INVALID", "response_format.schema_json", problem)


def check_request(
    messages: Sequence[ChatMessage],
    tools: Sequence[ToolSpec],
    choice: ToolChoice,
    parallel: bool | None,
    response_format: ResponseFormat,
) -> None:
    """Raise InvalidArgument (TOOLS_INVALID, RESPONSE_FORMAT_INVALID) for the first bound or
    rule the call's tools, tool choice, tool messages or response format break."""
    _check_tools(tools)
    _check_choice(choice, parallel, tools)
    _check_messages(messages)
    _check_format(response_format)


def _schema_violation(value: Any, schema: dict[str, Any]) -> str | None:
    import jsonschema  # on first use, as in schema_problem
    from jsonschema import exceptions as schema_errors
    from referencing import exceptions as reference_errors

    try:
        error = schema_errors.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))
    except (reference_errors.Unresolvable, schema_errors.SchemaError) as problem:
        return f"the schema cannot be applied: {problem}"[:_PROBLEM_CHARS]
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    message = str(error.message)[:_PROBLEM_CHARS]
    return f"at /{where}: {message}" if where else message


def tool_call_problem(call: ToolCall, tools: Sequence[ToolSpec]) -> str | None:
    """What is wrong with a tool call the model made, or None."""
    tool = next((t for t in tools if t.name == call.name), None)
    if tool is None:
        return f"tool call {call.id}: {call.name[:64]!r} is not one of the tools"
    if problem := arguments_problem(call.arguments_json):
        return f"tool call {call.id} ({call.name}): arguments {problem}"
    arguments: Any = json.loads(call.arguments_json)
    violation = _schema_violation(arguments, tool.parameters())
    return None if violation is None else f"tool call {call.id} ({call.name}): {violation}"


def output_problem(text: str, response_format: ResponseFormat) -> str | None:
    """What is wrong with a structured answer's text, or None."""
    try:
        value = json.loads(text)
    except ValueError as error:
        return f"the answer is not JSON ({error})"[:_PROBLEM_CHARS]
    if response_format.type is ResponseFormatType.JSON_OBJECT:
        return None if isinstance(value, dict) else "the answer is not a JSON object"
    violation = _schema_violation(value, response_format.schema())
    return None if violation is None else f"the answer does not match the schema: {violation}"


def answer_problem(request: EngineRequest, text: str, tool_calls: Sequence[ToolCall]) -> str | None:
    """What is wrong with an answer to `request` (its tool calls, or its structured text
    when it made none), or None. The tool choice is held too: a provider that cannot
    enforce it (Ollama) is checked like one that can."""
    choice = request.tool_choice
    if choice.mode is ToolChoiceMode.NONE and tool_calls:
        return "no tool call was allowed"
    if choice.mode in (ToolChoiceMode.REQUIRED, ToolChoiceMode.NAMED) and not tool_calls:
        return "a tool call was required" + (f": {choice.name}" if choice.name else "")
    if choice.mode is ToolChoiceMode.NAMED and any(c.name != choice.name for c in tool_calls):
        return f"only the tool {choice.name} may be called"
    if tool_calls:
        if len(tool_calls) > MAX_TOOL_CALLS:
            return f"at most {MAX_TOOL_CALLS} tool calls"
        if sum(len(c.arguments_json) for c in tool_calls) > MAX_ARGUMENT_CHARS:
            return f"the tool calls' arguments exceed {MAX_ARGUMENT_CHARS} characters"
        for call in tool_calls:
            if problem := tool_call_problem(call, request.tools):
                return problem
        return None
    if request.response_format.is_json:
        return output_problem(text, request.response_format)
    return None


RETRY_INSTRUCTION = (
    "Your previous answer was not accepted: {problem}. Answer again, following the "
    "required schema exactly: only the JSON (or the tool calls), nothing else."
)


def feedback_request(
    request: EngineRequest, text: str, tool_calls: Sequence[ToolCall], problem: str
) -> EngineRequest:
    """`request` asked once more: the rejected answer, then what is wrong with it (as the
    rejected tool calls' results when it made calls, since providers want every call
    answered; else as a user message)."""
    said = ChatMessage("assistant", text, tuple(tool_calls))
    instruction = RETRY_INSTRUCTION.format(problem=problem)
    if tool_calls:
        answers = tuple(
            ChatMessage("tool", f"error: {instruction}", tool_call_id=c.id) for c in tool_calls
        )
        return replace(request, messages=(*request.messages, said, *answers))
    return replace(request, messages=(*request.messages, said, ChatMessage("user", instruction)))


def invalid_output(problem: str, provider: str) -> FailedPrecondition:
    """The error of a structured answer (or tool call) that failed its check twice."""
    return FailedPrecondition(
        f"the model's answer failed its schema twice: {problem}",
        reason="STRUCTURED_OUTPUT_INVALID",
        metadata={"provider": provider, "problem": problem[:_PROBLEM_CHARS]},
    )
