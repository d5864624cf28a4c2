"""Tool calling and structured output on the OpenAI-compatible API, both ways: OpenAI's
`tools`, `tool_choice`, `parallel_tool_calls`, `response_format` and the tool turns of a
conversation read as the `tool_call` pattern's inputs (the shapes `llm.complete` takes,
services/runtime/agents/llm_tools.py), and the step's tool calls written back in OpenAI's
shape.

Only what the chain acts on is read: function tools (`{type: function, function: {name,
description, parameters, strict}}`), `tool_choice` auto / none / required / a named
function, `response_format` text / json_object / json_schema (`{name, schema, strict}`).
Anything else — custom tools, `allowed_tools`, a schema `description` — is INVALID_ARGUMENT
PARAMETER_UNSUPPORTED naming it. Names, bounds and schema validity are the router's checks
(TOOLS_INVALID, RESPONSE_FORMAT_INVALID), whose field names `openai_errors` maps back to
OpenAI's parameters."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from services.common.errors import FieldViolation, InvalidArgument

TOOL_FIELDS = ("tools", "tool_choice", "parallel_tool_calls", "response_format")
"""The request fields that make a completion a run of the `tool_call` pattern."""
MAX_TOOLS = 64
"""The tool_call pattern's bound on `tools` (the router's too)."""
_FUNCTION_KEYS = frozenset(("name", "description", "parameters", "strict"))
_SCHEMA_KEYS = frozenset(("name", "schema", "strict"))

Refuse = Callable[[str, str], InvalidArgument]
"""How the request module words a refusal: (param, what) -> the error."""


def _invalid(param: str, message: str) -> InvalidArgument:
    return InvalidArgument(
        message, reason="OPTION_INVALID", field_violations=[FieldViolation(param, message)]
    )


def _present(value: Mapping[str, Any]) -> dict[str, Any]:
    """`value` without its null members (OpenAI reads a null as absent; so does Saga)."""
    return {k: v for k, v in value.items() if v is not None}


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(param, f"{param} must be an object")
    return _present(value)


def _tool(value: Any, param: str, unsupported: Refuse) -> dict[str, Any]:
    tool = _object(value, param)
    if tool.get("type") != "function":
        raise unsupported(f"{param}.type", f"a tool of type {str(tool.get('type'))[:32]!r}")
    if extra := sorted(set(tool) - {"type", "function"}):
        raise unsupported(f"{param}.{extra[0]}", "this tool field")
    function = _object(tool.get("function"), f"{param}.function")
    if extra := sorted(set(function) - _FUNCTION_KEYS):
        raise unsupported(f"{param}.function.{extra[0]}", "this function field")
    if not isinstance(function.get("name"), str):
        raise _invalid(f"{param}.function.name", "a function tool has a string name")
    if "parameters" in function and not isinstance(function["parameters"], dict):
        raise _invalid(f"{param}.function.parameters", "parameters is a JSON Schema object")
    if not isinstance(function.get("description", ""), str):
        raise _invalid(f"{param}.function.description", "description is a string")
    if not isinstance(function.get("strict", False), bool):
        raise _invalid(f"{param}.function.strict", "strict is a boolean")
    return function


def _choice(value: Any, unsupported: Refuse) -> str:
    if value in ("auto", "none", "required"):
        return str(value)
    if isinstance(value, dict) and value.get("type") == "function":
        function = value.get("function")
        if (
            set(value) == {"type", "function"}
            and isinstance(function, dict)
            and set(function) == {"name"}
            and isinstance(function["name"], str)
        ):
            return function["name"]
        raise _invalid("tool_choice", "a named choice is {type: function, function: {name}}")
    if isinstance(value, dict):
        raise unsupported("tool_choice", f"a tool choice of type {str(value.get('type'))[:32]!r}")
    raise _invalid("tool_choice", "tool_choice is auto, none, required or a named function")


def _format(value: Any, unsupported: Refuse) -> dict[str, Any] | None:
    form = _object(value, "response_format")
    kind = form.get("type")
    if kind == "text" and set(form) == {"type"}:
        return None  # the default: nothing to ask of the router
    if kind == "json_object" and set(form) == {"type"}:
        return {"type": "json_object"}
    if kind != "json_schema":
        raise unsupported("response_format.type", f"a response format of type {str(kind)[:32]!r}")
    if extra := sorted(set(form) - {"type", "json_schema"}):
        raise unsupported(f"response_format.{extra[0]}", "this response_format field")
    spec = _object(form.get("json_schema"), "response_format.json_schema")
    if extra := sorted(set(spec) - _SCHEMA_KEYS):
        raise unsupported(f"response_format.json_schema.{extra[0]}", "this json_schema field")
    if not isinstance(spec.get("name"), str):
        raise _invalid("response_format.json_schema.name", "a json_schema format has a name")
    if not isinstance(spec.get("schema"), dict):
        raise _invalid("response_format.json_schema.schema", "schema is a JSON Schema object")
    if not isinstance(spec.get("strict", False), bool):
        raise _invalid("response_format.json_schema.strict", "strict is a boolean")
    return {"type": "json_schema", **spec}


def tool_inputs(body: Mapping[str, Any], unsupported: Refuse) -> dict[str, Any]:
    """The `tool_call` pattern's tools, tool_choice, parallel_tool_calls and
    response_format inputs of `body` (only those given)."""
    inputs: dict[str, Any] = {}
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
            raise _invalid("tools", f"tools must be a list of at most {MAX_TOOLS} tools")
        inputs["tools"] = [_tool(t, f"tools[{i}]", unsupported) for i, t in enumerate(tools)]
    if body.get("tool_choice") is not None:
        inputs["tool_choice"] = _choice(body["tool_choice"], unsupported)
    parallel = body.get("parallel_tool_calls")
    if parallel is not None:
        if not isinstance(parallel, bool):
            raise _invalid("parallel_tool_calls", "parallel_tool_calls must be a boolean")
        inputs["parallel_tool_calls"] = parallel
    if body.get("response_format") is not None:
        form = _format(body["response_format"], unsupported)
        if form is not None:
            inputs["response_format"] = form
    return inputs


def history_calls(value: Any, param: str, unsupported: Refuse) -> list[dict[str, Any]]:
    """An assistant message's `tool_calls` as history turns take them: [{id, name,
    arguments (the object)}]; arguments that are no JSON object are refused naming them."""
    if not isinstance(value, list):
        raise _invalid(param, f"{param} must be a list")
    calls = []
    for i, entry in enumerate(value):
        where = f"{param}[{i}]"
        call = _object(entry, where)
        if call.get("type", "function") != "function":
            raise unsupported(f"{where}.type", f"a tool call of type {str(call['type'])[:32]!r}")
        if extra := sorted(set(call) - {"id", "type", "function"}):
            raise unsupported(f"{where}.{extra[0]}", "this tool call field")
        function = _object(call.get("function"), f"{where}.function")
        name, arguments = function.get("name"), function.get("arguments")
        if not isinstance(call.get("id"), str) or not isinstance(name, str):
            raise _invalid(where, "a tool call has a string id and function.name")
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else None
        except (ValueError, RecursionError):
            parsed = None
        if not isinstance(parsed, dict):
            raise _invalid(f"{where}.function.arguments", "arguments is a JSON object as text")
        calls.append({"id": call["id"], "name": name, "arguments": parsed})
    return calls


def _integers(value: Any) -> Any:
    """`value` with its whole floats as integers: a Struct holds every number as a double,
    and a schema's `integer` must not come back as 3.0."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _integers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integers(v) for v in value]
    return value


def openai_calls(calls: Any) -> list[dict[str, Any]]:
    """The step output's tool calls ([{id, name, arguments}]) as OpenAI's message
    `tool_calls` (arguments as JSON text)."""
    return [
        {
            "id": call.get("id", ""),
            "type": "function",
            "function": {
                "name": call.get("name", ""),
                "arguments": json.dumps(
                    _integers(call.get("arguments", {})), separators=(",", ":")
                ),
            },
        }
        for call in calls or ()
        if isinstance(call, dict)
    ]
