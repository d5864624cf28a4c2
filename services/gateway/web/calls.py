"""Calling a gateway servicer method from an HTTP handler, and protobuf <-> JSON.

JSON field names are the proto field names (snake_case, as the OpenAI API and most HTTP
APIs spell them); enums are their names; int64 values are strings (proto3 JSON)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from services.common.errors import FieldViolation, InvalidArgument
from services.gateway.web.context import HttpCallContext
from services.gateway.web.errors import error_response

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


def _field_of(problem: str) -> str:
    # json_format names the field as `... at "Message.field"` or `... field "name"`; the
    # message is the best description we have when it does not.
    for marker in ('at "', 'field "', 'field named "'):
        start = problem.find(marker)
        if start >= 0:
            rest = problem[start + len(marker) :]
            return rest.split('"', 1)[0].split(".", 1)[-1]
    return "body"


async def read_json(request: web.Request) -> Any:
    """The request's JSON body; INVALID_ARGUMENT when it is not JSON."""
    try:
        text = await request.text()
        return json.loads(text) if text.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidArgument(
            f"the request body is not JSON: {error}",
            reason="REQUEST_MALFORMED",
            field_violations=[FieldViolation("body", "valid JSON")],
        ) from None


async def call_unary(
    method: UnaryMethod, message: Message, request: web.Request, deadline: float | None
) -> web.Response:
    """Call a servicer method as the gRPC door would and answer its reply (or its error)
    as JSON; metadata the servicer sent becomes response headers. `deadline` is the
    seconds the servicer may take (what a gRPC caller's timeout would be)."""
    context = HttpCallContext(request, deadline)
    try:
        reply = await method(message, context)
    except Exception as error:
        return error_response(error, headers_of(context))
    return web.json_response(to_json(reply), headers=headers_of(context))


def headers_of(context: HttpCallContext) -> dict[str, str]:
    """The text metadata a servicer sent, as response headers (binary `-bin` keys stay on
    the gRPC door)."""
    return {
        key: value
        for key, value in (*context.initial_metadata, *context.trailing_metadata)
        if isinstance(value, str) and not key.endswith("-bin")
    }
