"""One owner per capability: a second claim is refused at start."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from services.runtime.agents.step import StepCall, StepEvent, StepResult
from services.runtime.capabilities import Capability, CapabilityRegistry, FieldSpec, json_schema


class Echo:
    """A minimal agent."""

    def __init__(self, name: str, *capabilities: str) -> None:
        self.name = name
        self.capabilities = tuple(Capability(c, name, "echo", (), ()) for c in capabilities)

    async def run(self, call: StepCall) -> AsyncIterator[StepEvent]:
        yield StepResult(output={})


def test_each_capability_has_one_owner() -> None:
    registry = CapabilityRegistry()
    registry.register(Echo("one", "echo.say", "echo.shout"))
    registry.register(Echo("two", "echo.whisper"))
    assert sorted(registry.capabilities()) == ["echo.say", "echo.shout", "echo.whisper"]
    assert registry.owner("echo.whisper")[0].name == "two"
    with pytest.raises(
        ValueError,
        match=re.escape("'echo.say' is claimed by agent 'three' but already owned by agent 'one'"),
    ):
        registry.register(Echo("three", "echo.say"))


def test_schemas_are_json_schema_objects() -> None:
    schema = json_schema(
        [FieldSpec("prompt", "string", required=True, max_length=10), FieldSpec("n", "integer")]
    )
    assert schema == {
        "type": "object",
        "properties": {"prompt": {"type": "string", "maxLength": 10}, "n": {"type": "integer"}},
        "required": ["prompt"],
        "additionalProperties": False,
    }
