"""A small JSON Schema subset, for `llm.extract`: the schema a step gives, and a value
checked against it.

`jsonschema` is not among the pinned dependencies, and an extraction needs only a few
keywords: `type` (one name or a list of them), `properties`, `required`, `enum`, `items`,
`additionalProperties` (a boolean), plus the annotations `description` and `title`, which
validate nothing and reach the model with the schema. Any other keyword is refused by
`schema_problems` rather than silently ignored, so a schema never promises a check that is
not made. Depth is bounded on both sides: a schema or a value nested deeper than
`MAX_DEPTH` is a problem, never a recursion error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 32
TYPES = ("string", "number", "integer", "boolean", "object", "array", "null")
KEYWORDS = frozenset(
    (
        "type",
        "properties",
        "required",
        "enum",
        "items",
        "additionalProperties",
        "description",
        "title",
    )
)


def schema_problems(schema: Any, path: str = "", depth: int = 0) -> list[str]:
    """What is wrong with `schema` as a schema of this subset ([] when nothing is)."""
    where = path or "the schema"
    if depth > MAX_DEPTH:
        return [f"{where}: nested deeper than {MAX_DEPTH}"]
    if not isinstance(schema, Mapping):
        return [f"{where}: a schema is an object"]
    problems = [
        f"{where}: keyword {key!r} is not supported (supported: {', '.join(sorted(KEYWORDS))})"
        for key in schema
        if key not in KEYWORDS
    ]
    kinds = schema.get("type")
    names = kinds if isinstance(kinds, list) else [kinds] if kinds is not None else []
    if (not names and kinds is not None) or any(k not in TYPES for k in names):
        problems.append(f"{where}.type: one of {', '.join(TYPES)}, or a list of them")
    properties = schema.get("properties", {})
    if not isinstance(properties, Mapping):
        problems.append(f"{where}.properties: an object of schemas")
    else:
        for name, sub in properties.items():
            problems += schema_problems(sub, f"{path}.properties.{name}".lstrip("."), depth + 1)
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        problems.append(f"{where}.required: a list of property names")
    if "enum" in schema and not (isinstance(schema["enum"], list) and schema["enum"]):
        problems.append(f"{where}.enum: a non-empty list")
    if "items" in schema:
        problems += schema_problems(schema["items"], f"{path}.items".lstrip("."), depth + 1)
    if not isinstance(schema.get("additionalProperties", True), bool):
        problems.append(f"{where}.additionalProperties: true or false")
    return problems


def _is(kind: str, value: Any) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind in ("number", "integer"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return kind == "number" or float(value).is_integer()
    if kind == "string":
        return isinstance(value, str)
    if kind == "object":
        return isinstance(value, Mapping)
    return isinstance(value, list)


def value_problems(
    schema: Mapping[str, Any], value: Any, path: str = "", depth: int = 0
) -> list[str]:
    """Where `value` does not match `schema` (a schema `schema_problems` accepts), by path
    (`$`, `$.a.0.b`); [] when it matches."""
    where = path or "$"
    if depth > MAX_DEPTH:
        return [f"{where}: nested deeper than {MAX_DEPTH}"]
    kinds = schema.get("type")
    names = kinds if isinstance(kinds, list) else [kinds] if kinds is not None else []
    if names and not any(_is(k, value) for k in names):
        return [f"{where}: expected {' or '.join(names)}"]
    problems: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: not one of {schema['enum']!r}")
    if isinstance(value, Mapping):
        properties = schema.get("properties", {})
        problems += [
            f"{where}.{name}: required" for name in schema.get("required", []) if name not in value
        ]
        for name, item in value.items():
            if name in properties:
                problems += value_problems(properties[name], item, f"{where}.{name}", depth + 1)
            elif schema.get("additionalProperties") is False:
                problems.append(f"{where}.{name}: not a declared property")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problems += value_problems(schema["items"], item, f"{where}.{i}", depth + 1)
    return problems
