"""The simulator's JSON: a deterministic value valid against a JSON Schema, for `sim`'s tool
arguments and structured answers.

`sample(schema, word)` walks the common keywords: `const`, `enum` (the first), `anyOf` /
`oneOf` / `allOf` (the first branch), `type` (the first non-null of a list), object
`properties` (the required ones, or all when none are required), `items` with `minItems`,
string `minLength` / `maxLength`, number `minimum` / `maximum`. `word(i)` gives the
strings, so the same conversation gives the same values. It is a simulator: a schema that
leans on keywords it does not walk (`pattern`, `format`, `$ref`) may get a value that does
not fit, which the router's check then catches like any provider's misfit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MAX_DEPTH = 16


def sample(schema: Any, word: Callable[[int], str], depth: int = 0) -> Any:
    """A value for `schema` (see the module docstring)."""
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            return sample(branches[0], word, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = schema.get("required")
        names = (
            [n for n in required if n in properties]
            if isinstance(required, list) and required
            else list(properties)
        )
        return {name: sample(properties[name], word, depth + 1) for name in names}
    if kind == "array":
        least = schema.get("minItems")
        count = max(1, least if isinstance(least, int) else 1)
        return [sample(schema.get("items", {}), word, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        low, high = schema.get("minimum"), schema.get("maximum")
        value = low if isinstance(low, int | float) else 3
        if isinstance(high, int | float) and value > high:
            value = high
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, word(depth))


def _string(schema: dict[str, Any], text: str) -> str:
    least, most = schema.get("minLength"), schema.get("maxLength")
    if isinstance(least, int):
        while len(text) < least:
            text += text
    if isinstance(most, int):
        text = text[:most]
    return text
