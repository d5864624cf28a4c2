"""The tool-calling and structured-output arguments of `llm.complete`, as the router takes
them, and the tool calls of its answer as the step's output.

* `tools`: [{name, description?, parameters? (a JSON Schema object), strict?}] — the router
  checks names, bounds and that each schema is valid JSON Schema (TOOLS_INVALID naming the
  field, e.g. `tools[1].parameters_json`).
* `tool_choice`: `auto`, `none`, `required`, or the name of one of the tools.
* `parallel_tool_calls`: whether the model may call several tools in one answer.
* `response_format`: {type: text | json_object | json_schema, name?, schema?, strict?}.

The output gets `tool_calls`: [{id, name, arguments (the object)}] when the model called
tools — the caller runs them and sends the results in the next run's `history` as
{role: tool, content, tool_call_id}, after the assistant turn {role: assistant, content,
tool_calls} (`llm_history`). What is not of these shapes is STEP_ARGS_INVALID, refused
before the router is called.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from saga.execution.v1 import reason_events_pb2
from saga.router.v1 import router_pb2

CHOICES = {
    "auto": router_pb2.TOOL_CHOICE_MODE_AUTO,
    "none": router_pb2.TOOL_CHOICE_MODE_NONE,
    "required": router_pb2.TOOL_CHOICE_MODE_REQUIRED,
}
FORMATS = {
    "text": router_pb2.RESPONSE_FORMAT_TYPE_TEXT,
    "json_object": router_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
    "json_schema": router_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
}
TOOL_KEYS = frozenset(("name", "description", "parameters", "strict"))
FORMAT_KEYS = frozenset(("type", "name", "schema", "strict"))


def tools_problem(tools: Any) -> str:
    """What is wrong with a step's `tools` ("" when nothing is; bounds are the router's)."""
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
            return f"tools[{i}]: an object with a string name"
        if extra := set(tool) - TOOL_KEYS:
            return f"tools[{i}]: unknown key(s) {', '.join(sorted(map(str, extra)))}"
        if "parameters" in tool and not isinstance(tool["parameters"], Mapping):
            return f"tools[{i}].parameters: a JSON Schema object"
        if not isinstance(tool.get("description", ""), str):
            return f"tools[{i}].description: a string"
        if not isinstance(tool.get("strict", False), bool):
            return f"tools[{i}].strict: a boolean"
    return ""


def format_problem(form: Any) -> str:
    """What is wrong with a step's `response_format` ("" when nothing is)."""
    if extra := set(form) - FORMAT_KEYS:
        return f"unknown key(s) {', '.join(sorted(map(str, extra)))}"
    if form.get("type") not in FORMATS:
        return f"type: one of {', '.join(FORMATS)}"
    if "schema" in form and not isinstance(form["schema"], Mapping):
        return "schema: a JSON Schema object"
    if not isinstance(form.get("name", ""), str) or not isinstance(form.get("strict", False), bool):
        return "name is a string, strict a boolean"
    return ""


def apply(request: router_pb2.ReasonRequest, args: Mapping[str, Any]) -> None:
    """Put a checked step's tool and response-format arguments on `request`."""
    for tool in args.get("tools") or ():
        request.tools.append(
            router_pb2.Tool(
                name=tool["name"],
                description=tool.get("description", ""),
                parameters_json=json.dumps(tool["parameters"]) if "parameters" in tool else "",
                strict=tool.get("strict", False),
            )
        )
    choice = args.get("tool_choice")
    if choice is not None:
        mode = CHOICES.get(choice, router_pb2.TOOL_CHOICE_MODE_NAMED)
        request.tool_choice.mode = mode
        if mode == router_pb2.TOOL_CHOICE_MODE_NAMED:
            request.tool_choice.name = choice
    if args.get("parallel_tool_calls") is not None:
        request.parallel_tool_calls = bool(args["parallel_tool_calls"])
    form = args.get("response_format")
    if form is not None:
        request.response_format.CopyFrom(
            router_pb2.ResponseFormat(
                type=FORMATS[form["type"]],
                name=form.get("name", ""),
                schema_json=json.dumps(form["schema"]) if "schema" in form else "",
                strict=form.get("strict", False),
            )
        )


def calls_output(calls: Sequence[reason_events_pb2.ToolCall]) -> list[dict[str, Any]]:
    """The step output's `tool_calls` (arguments parsed: the router checked they are JSON
    objects)."""
    return [{"id": c.id, "name": c.name, "arguments": json.loads(c.arguments_json)} for c in calls]


def history_calls(turn: Mapping[str, Any]) -> list[reason_events_pb2.ToolCall] | None:
    """An assistant history turn's `tool_calls` as the router's (None: not of the shape
    [{id, name, arguments: object}])."""
    calls = turn.get("tool_calls", [])
    if not isinstance(calls, list):
        return None
    out = []
    for call in calls:
        match call:
            case {"id": str(call_id), "name": str(name), "arguments": dict(arguments)}:
                out.append(
                    reason_events_pb2.ToolCall(
                        id=call_id, name=name, arguments_json=json.dumps(arguments)
                    )
                )
            case _:
                return None
    return out
