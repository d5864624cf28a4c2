"""Print the configuration reference table (docs/configuration.md embeds it; a test keeps
the two in step): every key, its environment override, default and meaning."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator

from services.common.config import Config, env_name


def rows(cls: type = Config, path: str = "", default: object = None) -> Iterator[str]:
    """One markdown table row per leaf key of the schema."""
    hints = typing.get_type_hints(cls)
    instance = default if default is not None else cls()
    for f in dataclasses.fields(cls):
        key = f"{path}.{f.name}" if path else f.name
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            yield from rows(typing.cast(type, hints[f.name]), key, value)
            continue
        doc = f.metadata.get("doc", "")
        choices = f.metadata.get("choices")
        if choices:
            doc += f" (one of: {', '.join(choices)})"
        yield f"| `{key}` | `{env_name(key)}` | `{value!r}` | {doc} |"


def table() -> str:
    """The whole reference table."""
    head = "| key | environment | default | meaning |\n|---|---|---|---|\n"
    return head + "\n".join(rows()) + "\n"


if __name__ == "__main__":
    print(table(), end="")
