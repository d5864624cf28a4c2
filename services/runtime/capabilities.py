"""Capabilities and the agents that own them.

A capability (`llm.complete`, later `ledger.positions` …) is what a pattern step asks for; an
agent registers the capabilities it serves, each with the fields of its arguments and of its
output. Every capability has exactly one owner: a second agent claiming it is refused when the
process starts, so which code runs a step is never ambiguous.

A capability also names the data sources it reads (`sources`, ids of the rights registry;
`PACK_SOURCE` stands for the source of the run's pinned pricing pack): a run's lineage, which
the rights registry checks before an export runs, is the union over its pattern's steps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from services.runtime.agent_circuits import AgentCircuits

if TYPE_CHECKING:
    from services.runtime.agents.step import StepCall, StepEvent

PACK_SOURCE = "@pack"
"""In `Capability.sources`: the source of the pricing pack the run pinned (known at admission)."""

FIELD_TYPES = ("string", "number", "integer", "boolean", "object", "array")
"""The value types a pattern input, a capability argument or an output field may have."""


def a_type(kind: str) -> str:
    """A type name with its article, for messages ("an integer", "a string")."""
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


@dataclass(frozen=True)
class FieldSpec:
    """One named value of a schema: a pattern input, a capability argument or output."""

    name: str
    type: str
    required: bool = False
    max_length: int | None = None
    description: str = ""
    # The only values it may take (a JSON Schema `enum`), e.g. a step's response `mode`.
    choices: tuple[str, ...] = ()
    # Checks beyond type and length (what is wrong with the value, "" when nothing is):
    # run for a literal in a pattern file at load and for the rendered value at run time.
    check: Callable[[Any], str] | None = None


def json_schema(fields: Iterable[FieldSpec]) -> dict[str, Any]:
    """The JSON Schema (an object schema) that `fields` describe."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for f in fields:
        prop: dict[str, Any] = {"type": f.type}
        if f.max_length is not None:
            prop["maxLength" if f.type == "string" else "maxItems"] = f.max_length
        if f.description:
            prop["description"] = f.description
        if f.choices:
            prop["enum"] = list(f.choices)
        properties[f.name] = prop
        if f.required:
            required.append(f.name)
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


@dataclass(frozen=True)
class Capability:
    """What a step can ask for: its owner, arguments and output fields."""

    name: str
    agent: str
    description: str
    args: tuple[FieldSpec, ...]
    outputs: tuple[FieldSpec, ...]
    # The agent's word that a failed step may run again (a pattern's `retry`): true for
    # reads and for calls that change nothing until they report. The runner also never
    # retries an attempt that already relayed events (an LLM step that streamed text).
    retry_safe: bool = False
    # Data sources (rights registry ids, or PACK_SOURCE) whose data its outputs carry.
    sources: tuple[str, ...] = ()

    def arg(self, name: str) -> FieldSpec | None:
        """The argument called `name`, if the capability takes one."""
        return next((a for a in self.args if a.name == name), None)

    def output(self, name: str) -> FieldSpec | None:
        """The output field called `name`, if the capability produces one."""
        return next((o for o in self.outputs if o.name == name), None)


def check_value(spec: FieldSpec, value: Any) -> tuple[Any, str]:
    """(the value, "") when `value` fits `spec`'s type, length, choices and check, else
    (None, what is wrong). Integers may arrive as floats (a protobuf Struct has only doubles)
    and come back as ints."""
    checked, problem = _check_type(spec, value)
    if not problem and spec.choices and checked not in spec.choices:
        problem = f"{checked!r} is not one of {', '.join(spec.choices)}"
    if not problem and spec.check is not None:
        problem = spec.check(checked)
    return (None, problem) if problem else (checked, "")


def _check_type(spec: FieldSpec, value: Any) -> tuple[Any, str]:
    kind = spec.type
    if kind == "string" and isinstance(value, str):
        if spec.max_length is not None and len(value) > spec.max_length:
            return None, f"{len(value)} characters; at most {spec.max_length}"
        return value, ""
    if kind == "boolean" and isinstance(value, bool):
        return value, ""
    if (
        kind in ("number", "integer")
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    ):
        if kind == "number":
            return value, ""
        if float(value).is_integer():
            return int(value), ""
        return None, f"expected an integer, got {value!r}"
    if kind == "object" and isinstance(value, Mapping):
        return value, ""
    if kind == "array" and isinstance(value, list | tuple):
        if spec.max_length is not None and len(value) > spec.max_length:
            return None, f"{len(value)} items; at most {spec.max_length}"
        return list(value), ""
    return None, f"expected {a_type(kind)}"


def check_fields(
    specs: Iterable[FieldSpec], values: Mapping[str, Any]
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """`values` checked against `specs`: (the checked values, [(name, problem)…]). A name no
    spec declares, a required one missing (or None) and a value of the wrong type are
    problems; absent optional values are left out."""
    specs = tuple(specs)
    problems = [
        (str(name), "not declared") for name in values if not any(s.name == name for s in specs)
    ]
    checked: dict[str, Any] = {}
    for spec in specs:
        if values.get(spec.name) is None:
            if spec.required:
                problems.append((spec.name, "required"))
            continue
        value, problem = check_value(spec, values[spec.name])
        if problem:
            problems.append((spec.name, problem))
        else:
            checked[spec.name] = value
    return checked, problems


class Agent(Protocol):
    """Runs the steps of the capabilities it owns."""

    @property
    def name(self) -> str:
        """The agent's name (e.g. "llm")."""
        ...

    @property
    def capabilities(self) -> tuple[Capability, ...]:
        """What the agent serves."""
        ...

    def run(self, call: StepCall) -> AsyncIterator[StepEvent]:
        """Run one step: relayed chain events as they happen, then exactly one StepResult."""
        ...


class DuplicateCapability(ValueError):
    """Two agents claim the same capability (refused at start)."""


class CapabilityRegistry:
    """Capability name → its one owning agent, behind the agent's circuit breaker
    (services/runtime/agent_circuits.py)."""

    def __init__(self, circuits: AgentCircuits | None = None) -> None:
        self._owners: dict[str, tuple[Agent, Capability]] = {}
        self.circuits = circuits or AgentCircuits()

    def register(self, agent: Agent) -> None:
        """Add every capability of `agent`; DuplicateCapability if one is already owned."""
        for capability in agent.capabilities:
            if capability.agent != agent.name:
                raise DuplicateCapability(
                    f"agent {agent.name!r} registers {capability.name!r}, declared for "
                    f"agent {capability.agent!r}"
                )
            owner = self._owners.get(capability.name)
            if owner is not None:
                raise DuplicateCapability(
                    f"capability {capability.name!r} is claimed by agent {agent.name!r} but "
                    f"already owned by agent {owner[0].name!r}"
                )
        guarded = self.circuits.guard(agent)
        for capability in agent.capabilities:
            self._owners[capability.name] = (guarded, capability)

    def owner(self, name: str) -> tuple[Agent, Capability]:
        """The agent and declaration of capability `name` (KeyError when unknown)."""
        return self._owners[name]

    def capabilities(self) -> Mapping[str, Capability]:
        """Every registered capability by name."""
        return {name: capability for name, (_, capability) in self._owners.items()}
