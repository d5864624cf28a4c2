"""Pattern files: loading and validation.

A pattern is a YAML (or JSON) file: an `id`, a `description`, whether it `requires_pack`, an
`inputs` schema (name → {type, required, max_length, description}), `steps` (each an `id`, a
`capability` and `args` whose strings may hold `{{inputs.<name>}}` templates) and `outputs`
(name → a template over `{{steps.<id>.<field>}}`). Patterns come from the shipped samples
beside this module and from `runtime.patterns_dir`.

Everything is checked when the file is loaded, so a bad pattern stops the service at start
with a message naming the file and the field, never mid-run: size bounds, unknown fields,
types, unknown capabilities, arguments the capability does not take, templates with a root
that is not allowed where they are, references to undeclared inputs, unknown steps or output
fields, duplicate ids.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.common.config import ConfigError
from services.runtime.capabilities import FIELD_TYPES, Capability, FieldSpec, a_type
from services.runtime.templates import (
    Template,
    TemplateError,
    compile_value,
    parse,
    references_in,
)

MAX_PATTERN_BYTES = 64 * 1024
MAX_STEPS = 50
MAX_INPUTS = 50
SUFFIXES = (".yaml", ".yml", ".json")
SAMPLES_DIR = Path(__file__).parent / "patterns"
"""The shipped sample patterns."""

_ID = re.compile(r"[a-z][a-z0-9_]{0,63}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_PATTERN_KEYS = ("id", "description", "requires_pack", "inputs", "steps", "outputs")
_INPUT_KEYS = ("type", "required", "max_length", "description")
_STEP_KEYS = ("id", "capability", "args")
ARG_ROOTS = ("inputs",)
"""Template roots a step's args may use (state, ctx and session come with the DAG runner)."""
OUTPUT_ROOTS = ("steps",)
"""Template roots a pattern's outputs may use."""


class PatternError(ConfigError):
    """A pattern file that cannot be loaded: which file, which field, what is wrong. A
    configuration error: raised while the service builds, it stops the service with exit 78."""

    def __init__(self, file: str, field: str, message: str) -> None:
        super().__init__(f"{file}: {field}: {message}")
        self.file = file
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Step:
    """One step: the capability it asks for and its arguments (templates compiled)."""

    id: str
    capability: str
    args: Mapping[str, Any]


@dataclass(frozen=True)
class Pattern:
    """A loaded, validated pattern."""

    id: str
    description: str
    requires_pack: bool
    inputs: tuple[FieldSpec, ...]
    steps: tuple[Step, ...]
    outputs: Mapping[str, Template]
    # Where it came from, e.g. "samples/chat.yaml" or "user/report.yaml".
    source: str

    def input(self, name: str) -> FieldSpec | None:
        """The declared input called `name`."""
        return next((i for i in self.inputs if i.name == name), None)


def load_patterns(
    directories: Iterable[tuple[Path, str]], capabilities: Mapping[str, Capability]
) -> dict[str, Pattern]:
    """Every pattern of the (directory, label) pairs, by id; PatternError on the first bad
    file, a missing directory or an id defined twice."""
    patterns: dict[str, Pattern] = {}
    for directory, label in directories:
        if not directory.is_dir():
            raise PatternError(
                str(directory), "(directory)", "does not exist or is not a directory"
            )
        for path in sorted(directory.iterdir()):
            if path.suffix not in SUFFIXES or not path.is_file():
                continue
            pattern = load_file(path, f"{label}/{path.name}", capabilities)
            other = patterns.get(pattern.id)
            if other is not None:
                raise PatternError(
                    str(path), "id", f"pattern {pattern.id!r} is already defined by {other.source}"
                )
            patterns[pattern.id] = pattern
    return patterns


def load_file(path: Path, source: str, capabilities: Mapping[str, Capability]) -> Pattern:
    """Load and validate one pattern file."""
    size = path.stat().st_size
    if size > MAX_PATTERN_BYTES:
        raise PatternError(
            str(path), "(file)", f"{size} bytes; a pattern file may be {MAX_PATTERN_BYTES} at most"
        )
    return parse_pattern(path.read_bytes(), str(path), source, capabilities)


def parse_pattern(
    data: bytes, file: str, source: str, capabilities: Mapping[str, Capability]
) -> Pattern:
    """Validate the text of a pattern file (`file` names it in errors)."""
    if len(data) > MAX_PATTERN_BYTES:
        raise PatternError(
            file, "(file)", f"{len(data)} bytes; a pattern file may be {MAX_PATTERN_BYTES} at most"
        )
    try:
        document = json.loads(data) if file.endswith(".json") else yaml.safe_load(data)
    except (ValueError, yaml.YAMLError) as error:
        kind = "JSON" if file.endswith(".json") else "YAML"
        raise PatternError(file, "(file)", f"not valid {kind}: {error}") from None
    return _Validator(file, capabilities).pattern(document, source)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return "null" if value is None else type(value).__name__


class _Validator:
    """Checks one pattern document; each failure names `file` and the field."""

    def __init__(self, file: str, capabilities: Mapping[str, Capability]) -> None:
        self.file = file
        self.capabilities = capabilities

    def fail(self, field: str, message: str) -> PatternError:
        return PatternError(self.file, field, message)

    def mapping(self, value: Any, field: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(field, f"expected a mapping, got {_type_name(value)}")
        return value

    def known_keys(self, value: Mapping[str, Any], field: str, allowed: Sequence[str]) -> None:
        for key in value:
            if key not in allowed:
                where = f"{field}.{key}" if field else str(key)
                raise self.fail(where, f"unknown field; expected one of: {', '.join(allowed)}")

    def text(self, value: Any, field: str) -> str:
        if not isinstance(value, str):
            raise self.fail(field, f"expected a string, got {_type_name(value)}")
        return value

    def pattern(self, document: Any, source: str) -> Pattern:
        top = self.mapping(document, "(file)")
        self.known_keys(top, "", _PATTERN_KEYS)
        if "id" not in top:
            raise self.fail("id", "missing; every pattern needs an id")
        pattern_id = self.text(top["id"], "id")
        if not _ID.fullmatch(pattern_id):
            raise self.fail("id", f"{pattern_id!r} is not a lowercase identifier ([a-z][a-z0-9_]*)")
        description = self.text(top.get("description"), "description").strip()
        if not description:
            raise self.fail("description", "must say what the pattern does")
        requires_pack = top.get("requires_pack", False)
        if not isinstance(requires_pack, bool):
            raise self.fail("requires_pack", f"expected true or false, got {requires_pack!r}")
        inputs = self.inputs(top.get("inputs", {}))
        steps = self.steps(top.get("steps"), {i.name: i for i in inputs})
        outputs = self.outputs(top.get("outputs", {}), {s.id: s for s in steps})
        return Pattern(
            id=pattern_id,
            description=description,
            requires_pack=requires_pack,
            inputs=inputs,
            steps=steps,
            outputs=outputs,
            source=source,
        )

    def inputs(self, value: Any) -> tuple[FieldSpec, ...]:
        declared = self.mapping(value, "inputs")
        if len(declared) > MAX_INPUTS:
            raise self.fail("inputs", f"{len(declared)} inputs; at most {MAX_INPUTS}")
        specs = []
        for name, raw in declared.items():
            field = f"inputs.{name}"
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise self.fail(field, "input names are identifiers ([A-Za-z_][A-Za-z0-9_]*)")
            spec = self.mapping(raw, field)
            self.known_keys(spec, field, _INPUT_KEYS)
            kind = spec.get("type")
            if kind not in FIELD_TYPES:
                raise self.fail(
                    f"{field}.type", f"{kind!r}; expected one of {', '.join(FIELD_TYPES)}"
                )
            required = spec.get("required", False)
            if not isinstance(required, bool):
                raise self.fail(f"{field}.required", f"expected true or false, got {required!r}")
            max_length = spec.get("max_length")
            if max_length is not None:
                if kind not in ("string", "array"):
                    raise self.fail(
                        f"{field}.max_length", f"applies to strings and arrays, not {kind}"
                    )
                if (
                    isinstance(max_length, bool)
                    or not isinstance(max_length, int)
                    or max_length < 1
                ):
                    raise self.fail(
                        f"{field}.max_length", f"expected a positive integer, got {max_length!r}"
                    )
            description = self.text(spec.get("description", ""), f"{field}.description")
            specs.append(FieldSpec(name, kind, required, max_length, description))
        return tuple(specs)

    def steps(self, value: Any, inputs: Mapping[str, FieldSpec]) -> tuple[Step, ...]:
        if value is None:
            raise self.fail("steps", "missing; a pattern needs at least one step")
        if not isinstance(value, list) or not value:
            raise self.fail("steps", "expected a non-empty list of steps")
        if len(value) > MAX_STEPS:
            raise self.fail("steps", f"{len(value)} steps; a pattern may have {MAX_STEPS} at most")
        steps: list[Step] = []
        for index, raw in enumerate(value):
            step = self.step(raw, f"steps[{index}]", inputs)
            if any(s.id == step.id for s in steps):
                raise self.fail(f"steps[{index}].id", f"step id {step.id!r} is used twice")
            steps.append(step)
        return tuple(steps)

    def step(self, raw: Any, field: str, inputs: Mapping[str, FieldSpec]) -> Step:
        spec = self.mapping(raw, field)
        self.known_keys(spec, field, _STEP_KEYS)
        step_id = self.text(spec.get("id"), f"{field}.id")
        if not _ID.fullmatch(step_id):
            raise self.fail(f"{field}.id", f"{step_id!r} is not a lowercase identifier")
        field = f"steps.{step_id}"
        name = self.text(spec.get("capability"), f"{field}.capability")
        capability = self.capabilities.get(name)
        if capability is None:
            known = ", ".join(sorted(self.capabilities))
            raise self.fail(f"{field}.capability", f"unknown capability {name!r} (known: {known})")
        args = self.mapping(spec.get("args", {}), f"{field}.args")
        compiled: dict[str, Any] = {}
        for arg_name, arg_value in args.items():
            where = f"{field}.args.{arg_name}"
            arg = capability.arg(str(arg_name))
            if arg is None:
                takes = ", ".join(a.name for a in capability.args)
                raise self.fail(
                    where, f"{capability.name} takes no argument {arg_name!r} (it takes: {takes})"
                )
            try:
                value = compile_value(arg_value, ARG_ROOTS)
            except TemplateError as error:
                raise self.fail(where, f"step {step_id!r}: {error}") from None
            for reference in references_in(value):
                if reference.path[0] not in inputs:
                    raise self.fail(
                        where,
                        f"step {step_id!r}: {{{{{reference}}}}} refers to input "
                        f"{reference.path[0]!r}, which the pattern does not declare",
                    )
            self.check_arg_type(value, arg, inputs, where)
            compiled[str(arg_name)] = value
        for arg in capability.args:
            if arg.required and arg.name not in compiled:
                raise self.fail(
                    f"{field}.args.{arg.name}", f"missing; {capability.name} requires it"
                )
        return Step(id=step_id, capability=capability.name, args=compiled)

    def check_arg_type(
        self, value: Any, arg: FieldSpec, inputs: Mapping[str, FieldSpec], where: str
    ) -> None:
        if isinstance(value, Template):
            refs = value.references
            whole = len(value.parts) == 1 and len(refs) == 1
            if whole and len(refs[0].path) > 1:
                return  # a field inside an object input: its type is known only at run time
            # A lone placeholder keeps its input's type; anything else renders as text.
            kind = inputs[refs[0].path[0]].type if whole else "string"
        else:
            kind = _type_name(value)
        if kind != arg.type and not (kind == "integer" and arg.type == "number"):
            raise self.fail(
                where, f"{arg.name} takes {a_type(arg.type)}, but this gives {a_type(kind)}"
            )

    def outputs(self, value: Any, steps: Mapping[str, Step]) -> dict[str, Template]:
        declared = self.mapping(value, "outputs")
        outputs: dict[str, Template] = {}
        for name, raw in declared.items():
            where = f"outputs.{name}"
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise self.fail(where, "output names are identifiers ([A-Za-z_][A-Za-z0-9_]*)")
            try:
                template = parse(self.text(raw, where), OUTPUT_ROOTS)
            except TemplateError as error:
                raise self.fail(where, str(error)) from None
            for reference in template.references:
                step = steps.get(reference.path[0])
                if step is None:
                    raise self.fail(
                        where,
                        f"{{{{{reference}}}}} refers to step {reference.path[0]!r}, "
                        "which the pattern does not have",
                    )
                if len(reference.path) < 2:
                    raise self.fail(
                        where, f"{{{{{reference}}}}} names no field of step {step.id!r}"
                    )
                capability = self.capabilities[step.capability]
                if capability.output(reference.path[1]) is None:
                    fields = ", ".join(o.name for o in capability.outputs)
                    raise self.fail(
                        where,
                        f"{{{{{reference}}}}}: {capability.name} outputs no field "
                        f"{reference.path[1]!r} (it outputs: {fields})",
                    )
            outputs[name] = template
        return outputs
