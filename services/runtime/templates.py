"""Templates in pattern files: `{{inputs.prompt}}` in a step's args, `{{steps.answer.text}}`
in a pattern's outputs.

A template is parsed once, when its pattern is loaded, into literal text and references
(`root.name.field…`); only the roots the caller allows are accepted, so a template that could
never resolve is a load error rather than a surprise mid-run. Rendering never evaluates
anything: it looks names up in a scope of plain mappings.

A template that is exactly one placeholder renders to the referenced value itself (a number
stays a number, an absent optional input is None); placeholders inside longer text render as
text (JSON for objects and arrays, empty for absent values).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class TemplateError(ValueError):
    """A template that cannot be parsed or names a root that is not allowed where it is."""


@dataclass(frozen=True)
class Reference:
    """One placeholder: `root` (e.g. "inputs") and the names below it (e.g. ("prompt",))."""

    root: str
    path: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join((self.root, *self.path))

    def resolve(self, scope: Mapping[str, Any]) -> Any:
        """The referenced value in `scope`, or None when any part of the path is absent."""
        value: Any = scope.get(self.root)
        for name in self.path:
            if not isinstance(value, Mapping):
                return None
            value = value.get(name)
        return value


@dataclass(frozen=True)
class Template:
    """A parsed template: literal strings and references, in order."""

    source: str
    parts: tuple[str | Reference, ...]

    @property
    def references(self) -> tuple[Reference, ...]:
        """Every placeholder of the template."""
        return tuple(p for p in self.parts if isinstance(p, Reference))

    def render(self, scope: Mapping[str, Any]) -> Any:
        """The template's value in `scope` (see the module docstring)."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Reference):
            return self.parts[0].resolve(scope)
        return "".join(
            part if isinstance(part, str) else _as_text(part.resolve(scope)) for part in self.parts
        )


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def parse(text: str, roots: Collection[str]) -> Template:
    """Parse `text`; TemplateError names the bad placeholder and the roots allowed here."""
    parts: list[str | Reference] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        literal = text[position : match.start()]
        _check_literal(literal)
        if literal:
            parts.append(literal)
        parts.append(_reference(match.group(1).strip(), roots))
        position = match.end()
    tail = text[position:]
    _check_literal(tail)
    if tail or not parts:
        parts.append(tail)
    return Template(source=text, parts=tuple(parts))


def _check_literal(literal: str) -> None:
    if "{{" in literal:
        raise TemplateError(f"unclosed placeholder: '{{{{' without '}}}}' in {literal!r}")
    if "}}" in literal:
        raise TemplateError(f"stray '}}}}' without '{{{{' in {literal!r}")


def _reference(expression: str, roots: Collection[str]) -> Reference:
    names = expression.split(".")
    if not all(_NAME.fullmatch(n) for n in names):
        raise TemplateError(
            f"bad placeholder {{{{{expression}}}}}: expected dotted names such as "
            f"{{{{inputs.prompt}}}}"
        )
    allowed = ", ".join(sorted(roots))
    if names[0] not in roots:
        raise TemplateError(
            f"placeholder {{{{{expression}}}}} uses root {names[0]!r}, which is not "
            f"available here (allowed: {allowed})"
        )
    if len(names) < 2:
        raise TemplateError(f"placeholder {{{{{expression}}}}} names no field below {names[0]!r}")
    return Reference(root=names[0], path=tuple(names[1:]))


def compile_value(value: Any, roots: Collection[str]) -> Any:
    """`value` (from a pattern file) with every string parsed as a Template, recursively."""
    if isinstance(value, str):
        return parse(value, roots)
    if isinstance(value, Mapping):
        return {str(k): compile_value(v, roots) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [compile_value(v, roots) for v in value]
    return value


def render_value(value: Any, scope: Mapping[str, Any]) -> Any:
    """The value of a `compile_value` result in `scope`."""
    if isinstance(value, Template):
        return value.render(scope)
    if isinstance(value, Mapping):
        return {k: render_value(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, scope) for v in value]
    return value


def references_in(value: Any) -> list[Reference]:
    """Every reference inside a `compile_value` result."""
    if isinstance(value, Template):
        return list(value.references)
    if isinstance(value, Mapping):
        return [r for v in value.values() for r in references_in(v)]
    if isinstance(value, list):
        return [r for v in value for r in references_in(v)]
    return []
