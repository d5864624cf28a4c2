"""Print the configuration reference table (docs/configuration.md embeds it; a test keeps
the two in step): every key, its environment override, default and meaning."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator
from typing import Any

from services.common.config import Config, _table_item, env_name


def _default(f: dataclasses.Field[Any], instance: object | None) -> str:
    if instance is not None:
        return f"`{getattr(instance, f.name)!r}`"
    if f.default is not dataclasses.MISSING:
        return f"`{f.default!r}`"
    return "required"


def rows(cls: type = Config, path: str = "", instance: object | None = None) -> Iterator[str]:
    """One markdown table row per leaf key of the schema."""
    hints = typing.get_type_hints(cls)
    if instance is None and path == "":
        instance = cls()
    for f in dataclasses.fields(cls):
        key = f"{path}.{f.name}" if path else f.name
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            sub = getattr(instance, f.name) if instance is not None else None
            if sub is None and f.default_factory is not dataclasses.MISSING:
                sub = f.default_factory()
            yield from rows(typing.cast(type, hint), key, sub)
            continue
        item = _table_item(hint)
        doc = f.metadata.get("doc", "")
        choices = f.metadata.get("choices")
        if choices:
            shown = ", ".join(c or '""' for c in choices)
            doc += f" (one of: {shown})"
        in_array = "[]." in key
        env = "—" if in_array or item is not None else f"`{env_name(key)}`"
        if item is not None:
            yield f"| `{key}` | {env} | see below | {doc} |"
            yield from rows(item, f"{key}[]", None)
            continue
        yield f"| `{key}` | {env} | {_default(f, instance)} | {doc} |"


def table() -> str:
    """The whole reference table."""
    head = "| key | environment | default | meaning |\n|---|---|---|---|\n"
    return head + "\n".join(rows()) + "\n"


if __name__ == "__main__":
    print(table(), end="")
