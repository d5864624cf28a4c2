"""The OpenAPI 3.1 document of the JSON/SSE facade, built from its route table
(`Facade.table()`) and the protobuf descriptors of each route's messages, so neither the
paths nor the schemas can drift from what is served.

Schemas follow the proto3 JSON mapping as `calls.to_json` writes it: proto field names,
enums by name, 64-bit integers as decimal strings, Timestamps as RFC 3339 strings, Structs
as objects."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from google.protobuf.descriptor import FieldDescriptor

from services.gateway.web.query import is_parameter

if TYPE_CHECKING:
    from services.gateway.web.facade import Route

_INT64 = {"type": "string", "pattern": "^-?[0-9]+$", "format": "int64"}
_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "minimum": 0},
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_UINT64: {"type": "string", "pattern": "^[0-9]+$", "format": "uint64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "pattern": "^[0-9]+$", "format": "uint64"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}}},
}

ERROR_SCHEMA = {
    "type": "object",
    "description": "Google's HTTP mapping of a google.rpc.Status (AIP-193), see docs/errors.md",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "status", "message", "details"],
            "properties": {
                "code": {"type": "integer", "description": "the HTTP status"},
                "status": {"type": "string", "description": "the gRPC code's name"},
                "message": {"type": "string"},
                "reason": {"type": "string", "description": "ErrorInfo.reason"},
                "domain": {"type": "string", "description": "ErrorInfo.domain"},
                "details": {"type": "array", "items": {"type": "object"}},
            },
        }
    },
}


class _Schemas:
    """The components' schemas, each message once, by full name."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def message(self, descriptor: Any) -> dict[str, Any]:
        if descriptor.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[descriptor.full_name])
        if descriptor.full_name not in self.components:
            self.components[descriptor.full_name] = {}  # placeholder: messages recurse
            self.components[descriptor.full_name] = {
                "type": "object",
                "properties": {f.name: self.field(f) for f in descriptor.fields},
                # A field the message does not have is refused (400), never ignored.
                "additionalProperties": False,
            }
        return {"$ref": f"#/components/schemas/{descriptor.full_name}"}

    def body(self, descriptor: Any, path: list[str]) -> dict[str, Any]:
        """A request body's schema: the message without the fields the path gives."""
        if not path:
            return self.message(descriptor)
        return {
            "type": "object",
            "properties": {f.name: self.field(f) for f in descriptor.fields if f.name not in path},
            "additionalProperties": False,
        }

    def field(self, field: Any) -> dict[str, Any]:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.single(value)}
        single = self.single(field)
        return {"type": "array", "items": single} if field.is_repeated else single

    def single(self, field: Any) -> dict[str, Any]:
        if field.enum_type is not None:
            return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
        if field.message_type is not None:
            return self.message(field.message_type)
        return dict(_SCALARS[field.type])


def _parameters(route: Route, schemas: _Schemas) -> list[dict[str, Any]]:
    names = re.findall(r"{(\w+)}", route.path)
    out: list[dict[str, Any]] = [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
    ]
    if route.request is not None and not route.body:
        for field in route.request.DESCRIPTOR.fields:
            if field.name in names:
                continue
            if not is_parameter(field):
                continue
            out.append({"name": field.name, "in": "query", "schema": schemas.field(field)})
    if route.events is not None and not route.body:
        out.append(
            {
                "name": "Last-Event-ID",
                "in": "header",
                "description": "resume after this sequence (an EventSource sends it itself)",
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        )
    return out


def _events(route: Route, schemas: _Schemas) -> dict[str, Any]:
    """The SSE media type: `schema` describes one event (OpenAPI 3.1 has no itemSchema yet),
    its `data` the event message as JSON, or the error JSON of a last `event: error`."""
    assert route.events is not None
    kinds = [f.name for f in route.events.DESCRIPTOR.oneofs[0].fields]
    return {
        "schema": {
            "type": "object",
            "description": (
                "One Server-Sent Event: `event:` the oneof's kind (or `error`, last, carrying "
                f"the error JSON), `id:` its sequence, `data:` the {route.events.DESCRIPTOR.name} "
                "as JSON; comment lines are heartbeats"
            ),
            "required": ["data"],
            "properties": {
                "event": {"type": "string", "enum": [*kinds, "error"]},
                "id": {"type": "string", "pattern": "^[0-9]+$"},
                "retry": {"type": "integer"},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {
                        "anyOf": [schemas.message(route.events.DESCRIPTOR), ERROR_SCHEMA]
                    },
                },
            },
        }
    }


def _operation(route: Route, schemas: _Schemas) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if route.path == "/v1/execute":
        from saga.execution.v1 import events_pb2

        content["application/json"] = {
            "schema": {
                "description": "Accepted and Completed merged, and the last event's sequence",
                "allOf": [
                    schemas.message(events_pb2.Accepted.DESCRIPTOR),
                    schemas.message(events_pb2.Completed.DESCRIPTOR),
                    {"type": "object", "properties": {"last_sequence": _INT64}},
                ],
            }
        }
    elif route.response is not None:
        content["application/json"] = {"schema": schemas.message(route.response.DESCRIPTOR)}
    elif route.path == "/openapi.json":
        content["application/json"] = {"schema": {"type": "object"}}
    if route.events is not None:
        content["text/event-stream"] = _events(route, schemas)
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": content},
        "default": {"$ref": "#/components/responses/Error"},
    }
    if route.path == "/v1/execute":
        responses["200"]["headers"] = {
            "x-saga-execution-id": {
                "description": "the run's id (also on an error answered after it started)",
                "schema": {"type": "string"},
            }
        }
    if route.path == "/health/pack":
        assert route.response is not None
        responses["503"] = {
            "description": "the pack is not fresh (Retry-After while it warms)",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "health": schemas.single(
                                route.response.DESCRIPTOR.fields_by_name["health"]
                            ),
                            "error": ERROR_SCHEMA["properties"]["error"],  # type: ignore[index]
                        },
                    }
                }
            },
        }
    operation: dict[str, Any] = {
        "summary": route.summary,
        "operationId": f"{route.method.lower()}{_camel(route.path)}",
        "parameters": _parameters(route, schemas),
        "responses": responses,
    }
    if route.rpc:
        operation["description"] = f"The RPC {route.rpc}, over HTTP."
    if route.body and route.request is not None:
        operation["requestBody"] = {
            # Every proto3 field has a default: an empty body is the empty message.
            "required": False,
            "content": {
                "application/json": {
                    "schema": schemas.body(
                        route.request.DESCRIPTOR, re.findall(r"{(\w+)}", route.path)
                    )
                }
            },
        }
    if not route.credential:
        operation["security"] = []
    return operation


def _camel(path: str) -> str:
    words = re.findall(r"[a-zA-Z0-9]+", path.replace("{", "by_"))
    return "".join(w[:1].upper() + w[1:] for w in words)


def document(routes: Sequence[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes`."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Saga JSON/SSE facade",
            "version": "v1",
            "description": (
                "Each route calls the gateway RPC it names, with the same authentication, "
                "scopes, limits and errors as the gRPC contract (protos/saga/gateway/v1)."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "responses": {
                "Error": {
                    "description": "a refusal or failure (docs/errors.md)",
                    "content": {"application/json": {"schema": ERROR_SCHEMA}},
                }
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a Saga API key or JWT",
                }
            },
        },
        "security": [{"bearer": []}],
    }
