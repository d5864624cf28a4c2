"""Query parameters (and path parameters) as the fields of a request message.

A parameter is named by the field's proto name; its text is read as the field's JSON value
(numbers and enum names as they are, booleans `true`/`false`, timestamps RFC 3339), so the
one JSON parser (`calls.from_json`) checks it and names the field when it does not fit. A
repeated field takes the parameter more than once or comma-separated; a parameter the message
has no field for is refused, never ignored."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from multidict import MultiMapping

from services.common.errors import FieldViolation, InvalidArgument

MAX_PARAMETERS = 32
"""More parameters than any request message has fields: a bound on what is parsed."""

_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


def query_fields(
    query: MultiMapping[str], descriptor: Any, path: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The JSON object of `descriptor`'s message that `query` (and the path's parameters)
    spell; INVALID_ARGUMENT naming the parameter that is not a field or repeats one that
    is not repeated."""
    if len(query) > MAX_PARAMETERS:
        raise _refused("query", f"at most {MAX_PARAMETERS} parameters")
    body: dict[str, Any] = {}
    for name in dict.fromkeys(query):
        field = descriptor.fields_by_name.get(name)
        if field is None or not is_parameter(field):
            known = ", ".join(f.name for f in descriptor.fields if is_parameter(f))
            raise _refused(name, f"not a parameter of this route (known: {known})")
        values = query.getall(name)
        if field.is_repeated:
            body[name] = [_value(field, v) for text in values for v in text.split(",") if v]
        elif len(values) > 1:
            raise _refused(name, "given more than once")
        else:
            body[name] = _value(field, values[0])
    body.update(path or {})
    return body


def refuse_query(query: MultiMapping[str]) -> None:
    """A route whose request is its JSON body takes no query parameter: one given is refused
    (INVALID_ARGUMENT naming it), never ignored."""
    for name in query:
        raise _refused(name, "not a parameter of this route (its request is the JSON body)")


SCALAR_MESSAGES = frozenset({"google.protobuf.Timestamp", "google.protobuf.Duration"})
"""Well-known messages whose JSON is one string, so a parameter can spell them."""


def is_parameter(field: Any) -> bool:
    """Whether a query parameter can spell `field` (a scalar, an enum, a Timestamp)."""
    return field.message_type is None or field.message_type.full_name in SCALAR_MESSAGES


def _value(field: FieldDescriptor, text: str) -> Any:
    if field.type == FieldDescriptor.TYPE_BOOL:
        if text.lower() not in _BOOLEANS:
            raise _refused(field.name, "true or false")
        return _BOOLEANS[text.lower()]
    return text


def _refused(name: str, description: str) -> InvalidArgument:
    return InvalidArgument(
        f"query parameter {name}: {description}",
        reason="REQUEST_MALFORMED",
        field_violations=[FieldViolation(name, description)],
    )
