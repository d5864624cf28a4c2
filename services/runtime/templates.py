"""Templates in pattern files: `{{inputs.prompt}}`, `{{state.fetch.rows[0].symbol}}`,
`{{ctx.asof}}` in a step's args and a pattern's outputs.

A template is parsed once, when its pattern is loaded, into literal text and references
(`root.name[index]…`); only the roots the caller allows are accepted, and `ctx` only with
the names the runtime fills in, so a template that could never resolve is a load error
rather than a surprise mid-run. Rendering never evaluates anything: it looks names up in a
scope of plain mappings and lists.

The roots: `inputs` (the run's inputs), `state` (step outputs, by step id or `as` name),
`ctx` (`asof`, `pricing_pack_id`, `ledger_commit_hash`, `execution_id`) and `session` (the
run's session: `id`, `stages`, `history`, see session_root.py; empty for a run without a
session, so its paths are absent).

A template that is exactly one placeholder renders to the referenced value itself (a number
stays a number, an object stays an object); placeholders inside longer text render as text
(JSON for objects and arrays). An absent path — an optional input not given, a skipped step,
an index past the end — renders as None alone and as empty text inside longer text.

The path grammar (`Reference.parse`) is shared with `when` expressions (expressions.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

ROOTS = ("ctx", "inputs", "session", "state")
"""Every template root."""
CTX_FIELDS = ("asof", "execution_id", "ledger_commit_hash", "pricing_pack_id")
"""What `{{ctx.<name>}}` may name: the run's pinned context."""
SESSION_FIELDS = ("history", "id", "stages")
"""What `{{session.<name>}}` may name (services/runtime/session_root.py fills them)."""
MAX_PATH_SEGMENTS = 16
MAX_INDEX_DIGITS = 6
MAX_PLACEHOLDERS = 200
"""Per template: bounds the work of rendering one string."""

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_SEGMENT = re.compile(rf"\.({_NAME})|\[(\d{{1,{MAX_INDEX_DIGITS}}})\]")
_HEAD = re.compile(_NAME)

PathPart = str | int


class TemplateError(ValueError):
    """A template that cannot be parsed or names a root that is not allowed where it is."""


@dataclass(frozen=True)
class Reference:
    """One path: `root` (e.g. "inputs") and the names and indices below it (e.g. ("rows",
    0, "symbol"))."""

    root: str
    path: tuple[PathPart, ...]

    def __str__(self) -> str:
        return self.root + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.path)

    def resolve(self, scope: Mapping[str, Any]) -> Any:
        """The referenced value in `scope`, or None when any part of the path is absent."""
        value: Any = scope.get(self.root)
        for part in self.path:
            if isinstance(part, int):
                if not isinstance(value, list | tuple) or part >= len(value):
                    return None
                value = value[part]
            elif isinstance(value, Mapping):
                value = value.get(part)
            else:
                return None
        return value

    @classmethod
    def parse(cls, text: str, roots: Collection[str]) -> Reference:
        """Parse a path such as `state.fetch.rows[0].symbol`; TemplateError says what is
        wrong, including a root not allowed here and a `ctx` name the runtime does not fill."""
        head = _HEAD.match(text)
        if head is None:
            raise TemplateError(_bad_path(text))
        parts: list[PathPart] = []
        position = head.end()
        while position < len(text):
            segment = _SEGMENT.match(text, position)
            if segment is None:
                raise TemplateError(_bad_path(text))
            name, index = segment.groups()
            parts.append(name if name is not None else int(index))
            position = segment.end()
        root = head.group()
        if root not in roots:
            allowed = ", ".join(sorted(roots))
            hint = " (step outputs are under `state`)" if root == "steps" else ""
            raise TemplateError(
                f"{text!r} uses root {root!r}, which is not available here (allowed: "
                f"{allowed}){hint}"
            )
        if not parts or not isinstance(parts[0], str):
            raise TemplateError(f"{text!r} names no field below {root!r}")
        if len(parts) > MAX_PATH_SEGMENTS:
            raise TemplateError(f"{text!r} is deeper than {MAX_PATH_SEGMENTS} names and indices")
        if root == "ctx" and (parts[0] not in CTX_FIELDS or len(parts) > 1):
            raise TemplateError(f"{text!r}: ctx holds only {', '.join(CTX_FIELDS)}")
        if root == "session" and parts[0] not in SESSION_FIELDS:
            raise TemplateError(f"{text!r}: session holds only {', '.join(SESSION_FIELDS)}")
        return cls(root=root, path=tuple(parts))


def _bad_path(text: str) -> str:
    return (
        f"bad path {text!r}: expected a root and dotted names or [indices], such as "
        "inputs.prompt or state.fetch.rows[0].symbol"
    )


@dataclass(frozen=True)
class Template:
    """A parsed template: literal strings and references, in order."""

    source: str
    parts: tuple[str | Reference, ...]

    @property
    def references(self) -> tuple[Reference, ...]:
        """Every placeholder of the template."""
        return tuple(p for p in self.parts if isinstance(p, Reference))

    @property
    def whole(self) -> Reference | None:
        """The reference when the template is exactly one placeholder (it keeps its type)."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Reference):
            return self.parts[0]
        return None

    def render(self, scope: Mapping[str, Any]) -> Any:
        """The template's value in `scope` (see the module docstring)."""
        whole = self.whole
        if whole is not None:
            return whole.resolve(scope)
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
        if len(parts) >= 2 * MAX_PLACEHOLDERS:
            raise TemplateError(f"more than {MAX_PLACEHOLDERS} placeholders in one string")
        try:
            parts.append(Reference.parse(match.group(1).strip(), roots))
        except TemplateError as error:
            raise TemplateError(f"placeholder {{{{{match.group(1).strip()}}}}}: {error}") from None
        position = match.end()
    tail = text[position:]
    _check_literal(tail)
    if tail or not parts:
        parts.append(tail)
    return Template(source=text, parts=tuple(parts))


def _check_literal(literal: str) -> None:
    if "{{" in literal:
        raise TemplateError(f"unclosed placeholder: '{{{{' without '}}}}' in {literal[:80]!r}")
    if "}}" in literal:
        raise TemplateError(f"stray '}}}}' without '{{{{' in {literal[:80]!r}")


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
