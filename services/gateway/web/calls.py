"""Calling a gateway servicer method from an HTTP handler, and protobuf <-> JSON.

JSON field names are the proto field names (snake_case, as the OpenAI API and most HTTP
APIs spell them); enums are their names; int64 values are strings (proto3 JSON)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from services.common.errors import DeadlineExceeded, FieldViolation, InvalidArgument
from services.gateway.web.context import HttpCallContext
from services.gateway.web.errors import error_response, too_large

M = TypeVar("M", bound=Message)
UnaryMethod = Callable[[Any, Any], Awaitable[Message]]


def to_json(message: Message) -> dict[str, Any]:
    """`message` as a JSON object (every field, defaults included, so clients see the
    shape)."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def from_json(body: Any, message_type: type[M]) -> M:
    """`body` (parsed JSON) as a `message_type`; INVALID_ARGUMENT naming the field when it
    does not fit (unknown field, wrong type)."""
    if not isinstance(body, dict):
        raise InvalidArgument(
            "the request body must be a JSON object",
            reason="REQUEST_MALFORMED",
            field_violations=[FieldViolation("body", "a JSON object")],
        )
    message = message_type()
    try:
        json_format.ParseDict(body, message)
    except json_format.ParseError as error:
        raise InvalidArgument(
            f"the request body does not fit {message_type.DESCRIPTOR.name}: {error}",
            reason="REQUEST_MALFORMED",
            field_violations=[FieldViolation(_field_of(str(error)), str(error))],
        ) from None
    return message


_PARSING = re.compile(r"Failed to parse (\w+) field: ")
_UNKNOWN = re.compile(r'has no field named "([^"]+)"')


def _field_of(problem: str) -> str:
    # json_format names each level it descends as `Failed to parse <field> field: ` and an
    # unknown field as `has no field named "<name>"`: their chain is the field's path.
    path = _PARSING.findall(problem)
    if unknown := _UNKNOWN.search(problem):
        path.append(unknown.group(1))
    return ".".join(path) or "body"


async def read_json(request: web.Request) -> Any:
    """The request's JSON body; INVALID_ARGUMENT when it is not JSON."""
    try:
        text = await request.text()
        return json.loads(text) if text.strip() else {}
    except web.HTTPRequestEntityTooLarge:
        raise too_large(request.client_max_size) from None
    # Nesting deeper than the parser's recursion limit is malformed too, not a crash.
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise InvalidArgument(
            f"the request body is not JSON: {error}",
            reason="REQUEST_MALFORMED",
            field_violations=[FieldViolation("body", "valid JSON")],
        ) from None


def with_path(fields: Any, path: Mapping[str, str]) -> Any:
    """A JSON body with the route's path parameters (`/v1/admin/api-keys/{key_id}/limits`)
    as its fields; INVALID_ARGUMENT when the body names one too (the path says which)."""
    if not path or not isinstance(fields, dict):
        return fields  # no path parameters, or not an object: from_json refuses the latter
    for name, value in path.items():
        if name in fields:
            raise InvalidArgument(
                f"{name} comes from the path, not the body",
                reason="REQUEST_MALFORMED",
                field_violations=[FieldViolation(name, "absent from the body: the path names it")],
            )
        fields[name] = value
    return fields


async def invoke(
    method: UnaryMethod, message: Message, context: HttpCallContext, deadline: float
) -> Any:
    """Call a servicer method as the gRPC door would, bounded by `deadline` seconds (what a
    gRPC caller's timeout would be); past it DEADLINE_EXCEEDED."""
    try:
        async with asyncio.timeout(deadline):
            return await method(message, context)
    except TimeoutError:
        raise timed_out(deadline) from None


async def call_unary(
    method: UnaryMethod, message: Message, request: web.Request, deadline: float
) -> web.Response:
    """`invoke` a servicer method and answer its reply (or its error) as JSON; metadata the
    servicer sent becomes response headers."""
    context = HttpCallContext(request, deadline)
    try:
        reply = await invoke(method, message, context, deadline)
    except Exception as error:
        return error_response(error, headers_of(context))
    return web.json_response(to_json(reply), headers=headers_of(context))


def timed_out(deadline: float) -> DeadlineExceeded:
    """The refusal of an HTTP request that outlived its deadline."""
    return DeadlineExceeded(
        f"the request took longer than its {deadline:g} s deadline",
        reason="HTTP_REQUEST_TIMEOUT",
        metadata={"timeoutSeconds": f"{deadline:g}"},
    )


def headers_of(context: HttpCallContext) -> dict[str, str]:
    """The text metadata a servicer sent, as response headers (binary `-bin` keys stay on
    the gRPC door)."""
    return {
        key: value
        for key, value in (*context.initial_metadata, *context.trailing_metadata)
        if isinstance(value, str) and not key.endswith("-bin")
    }
