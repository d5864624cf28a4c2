"""Pattern files: loading and validation (docs/patterns.md describes every field).

A pattern is a YAML or JSON file: an `id`, a `description`, whether it `requires_pack`, an
`inputs` schema, `steps` and `outputs`. A step names a `capability` and its `args` (values
whose strings may hold templates), and may have `depends_on`, `when`, `as`, `timeout`,
`retry`, `on_error` and `default`. Patterns come from the shipped samples beside this module
and from `runtime.patterns_dir`.

Everything is checked when a file is loaded, so a bad pattern is refused before it can run,
with a message naming the file, the field (with the step id) and what is wrong: size and
nesting bounds, non-JSON values, unknown fields, types, unknown capabilities, arguments the
capability does not take or of the wrong type, bad templates and `when` expressions,
references to undeclared inputs, unknown steps or output fields, duplicate ids, dependency
cycles, retries of capabilities not safe to retry. A bad file does not stop the service:
`load_patterns` returns the good patterns and a `Problem` for each refused file.

Dependencies: a step runs after the steps in its `depends_on` and after every step whose
output it references (`{{state.<step>…}}` in its args or `when`), so every step a template
reads from is an ancestor by construction; a cycle among them is a load error.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.common.backoff import Backoff
from services.runtime.capabilities import (
    FIELD_TYPES,
    Capability,
    FieldSpec,
    a_type,
    check_value,
)
from services.runtime.expressions import Expression, ExpressionError, parse_expression
from services.runtime.templates import (
    ROOTS,
    Reference,
    Template,
    TemplateError,
    compile_value,
    parse,
    references_in,
    render_value,
)

MAX_PATTERN_BYTES = 64 * 1024
MAX_STEPS = 50
MAX_INPUTS = 50
MAX_NESTING = 20
"""Deepest nesting of lists and mappings in a pattern document."""
MAX_VALUES = 20_000
"""Most values a document may hold (YAML aliases count each time they are used)."""
MAX_TIMEOUT_SECONDS = 3600.0
MAX_ATTEMPTS = 5
SUFFIXES = (".yaml", ".yml", ".json")
SAMPLES_DIR = Path(__file__).parent / "patterns"
"""The shipped sample patterns."""

_ID = re.compile(r"[a-z][a-z0-9_]{0,63}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_PATTERN_KEYS = ("id", "description", "requires_pack", "inputs", "steps", "outputs")
_INPUT_KEYS = ("type", "required", "max_length", "description")
_STEP_KEYS = (
    "id",
    "capability",
    "args",
    "depends_on",
    "when",
    "as",
    "timeout",
    "retry",
    "on_error",
    "default",
)
_RETRY_KEYS = ("attempts", "initial_backoff", "max_backoff")
ON_ERROR = ("fail", "continue")


class PatternError(ValueError):
    """A pattern file that cannot be loaded: which file, which field, what is wrong."""

    def __init__(self, file: str, field: str, message: str) -> None:
        super().__init__(f"{file}: {field}: {message}")
        self.file = file
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Step:
    """One step: its capability, arguments (templates compiled) and run policy."""

    id: str
    capability: str
    args: Mapping[str, Any]
    # Every step that must finish first: `depends_on` plus those its templates read.
    depends_on: tuple[str, ...] = ()
    when: Expression | None = None
    # The key of its output in `state` (its `as`, else its id).
    state_key: str = ""
    timeout: float | None = None
    # At most `retry.max_attempts` tries, waiting `retry.delay(n)` between them.
    retry: Backoff | None = None
    on_error: str = "fail"
    # The output a failed step gives with `on_error: continue`.
    default: Mapping[str, Any] | None = None

    @property
    def key(self) -> str:
        """Where the step's output lives in `state`."""
        return self.state_key or self.id


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


@dataclass(frozen=True)
class Problem:
    """A pattern file that was refused: where it is (`source`, e.g. "user/x.yaml"), the
    field and what is wrong."""

    source: str
    field: str
    message: str


@dataclass(frozen=True)
class Catalog:
    """What the pattern directories hold: the good patterns by id and the refused files."""

    patterns: Mapping[str, Pattern]
    problems: tuple[Problem, ...]


def load_patterns(
    directories: Iterable[tuple[Path, str]], capabilities: Mapping[str, Capability]
) -> Catalog:
    """Every good pattern of the (directory, label) pairs, by id, and a Problem for each
    missing directory, bad file and id defined a second time (the first one stays)."""
    patterns: dict[str, Pattern] = {}
    problems: list[Problem] = []
    for directory, label in directories:
        if not directory.is_dir():
            problems.append(Problem(label, "(directory)", f"{directory} is not a directory"))
            continue
        for path in sorted(directory.iterdir()):
            if path.suffix not in SUFFIXES or not path.is_file():
                continue
            source = f"{label}/{path.name}"
            try:
                pattern = load_file(path, source, capabilities)
            except PatternError as error:
                problems.append(Problem(source, error.field, error.message))
                continue
            other = patterns.get(pattern.id)
            if other is not None:
                problems.append(
                    Problem(
                        source, "id", f"pattern {pattern.id!r} is already defined by {other.source}"
                    )
                )
                continue
            patterns[pattern.id] = pattern
    return Catalog(patterns, tuple(problems))


def load_file(path: Path, source: str, capabilities: Mapping[str, Capability]) -> Pattern:
    """Load and validate one pattern file."""
    try:
        size = path.stat().st_size
        if size > MAX_PATTERN_BYTES:
            raise PatternError(
                str(path), "(file)", f"{size} bytes; a pattern file may be {MAX_PATTERN_BYTES}"
            )
        data = path.read_bytes()
    except OSError as error:
        raise PatternError(str(path), "(file)", f"cannot be read: {error.strerror}") from None
    return parse_pattern(data, str(path), source, capabilities)


def parse_pattern(
    data: bytes, file: str, source: str, capabilities: Mapping[str, Capability]
) -> Pattern:
    """Validate the text of a pattern file (`file` names it in errors)."""
    if len(data) > MAX_PATTERN_BYTES:
        raise PatternError(
            file, "(file)", f"{len(data)} bytes; a pattern file may be {MAX_PATTERN_BYTES}"
        )
    kind = "JSON" if file.endswith(".json") else "YAML"
    try:
        document = json.loads(data) if kind == "JSON" else yaml.safe_load(data)
    except (ValueError, yaml.YAMLError) as error:
        raise PatternError(file, "(file)", f"not valid {kind}: {error}") from None
    except RecursionError:
        raise PatternError(file, "(file)", f"nested deeper than {MAX_NESTING}") from None
    _check_document(document, file)
    return _Validator(file, capabilities).pattern(document, source)


def _check_document(document: Any, file: str) -> None:
    """Plain JSON values only (YAML can also give dates, sets, bytes, non-string keys, NaN),
    nested at most MAX_NESTING deep, at most MAX_VALUES of them."""
    pending: list[tuple[Any, str, int]] = [(document, "(file)", 0)]
    seen = 0
    while pending:
        value, where, depth = pending.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise PatternError(file, "(file)", f"more than {MAX_VALUES} values")
        if depth > MAX_NESTING:
            raise PatternError(file, where, f"nested deeper than {MAX_NESTING}")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise PatternError(file, where, f"key {key!r} is not a string; quote it")
                pending.append((item, key if where == "(file)" else f"{where}.{key}", depth + 1))
        elif isinstance(value, list):
            pending.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            raise PatternError(file, where, f"{value} is not a JSON number")
        elif value is not None and not isinstance(value, str | int | float | bool):
            raise PatternError(
                file, where, f"a {type(value).__name__} is not a JSON value; quote it"
            )


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


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 < value <= MAX_TIMEOUT_SECONDS else None


@dataclass
class _Draft:
    """A step whose references are parsed but not yet resolved to other steps."""

    step: Step
    index: int
    explicit: tuple[str, ...]
    state_refs: list[tuple[str, Reference]]  # (field, reference)


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
        outputs = self.outputs(top.get("outputs", {}), inputs, steps)
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
            if not _NAME.fullmatch(name):
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
        drafts: dict[str, _Draft] = {}
        keys: dict[str, str] = {}  # state key -> step id
        for index, raw in enumerate(value):
            draft = self.step(raw, index, inputs)
            step = draft.step
            if step.id in drafts:
                raise self.fail(f"steps[{index}].id", f"step id {step.id!r} is used twice")
            for key in {step.id, step.key}:
                if key in keys and keys[key] != step.id:
                    raise self.fail(
                        f"steps.{step.id}.as" if key == step.key else f"steps[{index}].id",
                        f"{key!r} is already the state name of step {keys[key]!r}",
                    )
            keys[step.key] = step.id
            drafts[step.id] = draft
        return self.resolve(drafts, keys)

    def step(self, raw: Any, index: int, inputs: Mapping[str, FieldSpec]) -> _Draft:
        spec = self.mapping(raw, f"steps[{index}]")
        self.known_keys(spec, f"steps[{index}]", _STEP_KEYS)
        step_id = self.text(spec.get("id"), f"steps[{index}].id")
        if not _ID.fullmatch(step_id):
            raise self.fail(f"steps[{index}].id", f"{step_id!r} is not a lowercase identifier")
        field = f"steps.{step_id}"
        name = self.text(spec.get("capability"), f"{field}.capability")
        capability = self.capabilities.get(name)
        if capability is None:
            known = ", ".join(sorted(self.capabilities))
            raise self.fail(f"{field}.capability", f"unknown capability {name!r} (known: {known})")
        state_refs: list[tuple[str, Reference]] = []
        args = self.args(spec.get("args", {}), field, capability, inputs, state_refs)
        when = None
        if "when" in spec:
            try:
                when = parse_expression(self.text(spec["when"], f"{field}.when"))
            except ExpressionError as error:
                raise self.fail(f"{field}.when", str(error)) from None
            for reference in when.references:
                self.check_reference(reference, f"{field}.when", inputs, state_refs)
        explicit = spec.get("depends_on", [])
        if not isinstance(explicit, list) or not all(isinstance(d, str) for d in explicit):
            raise self.fail(f"{field}.depends_on", "expected a list of step ids")
        state_key = spec.get("as", "")
        if state_key != "" and not _ID.fullmatch(self.text(state_key, f"{field}.as")):
            raise self.fail(f"{field}.as", f"{state_key!r} is not a lowercase identifier")
        timeout = None
        if "timeout" in spec:
            timeout = _seconds(spec["timeout"])
            if timeout is None:
                raise self.fail(
                    f"{field}.timeout",
                    f"expected seconds, more than 0 and at most {MAX_TIMEOUT_SECONDS:g}",
                )
        retry = self.retry(spec.get("retry"), field, capability)
        on_error = spec.get("on_error", "fail")
        if on_error not in ON_ERROR:
            raise self.fail(f"{field}.on_error", f"{on_error!r}; expected fail or continue")
        default = self.default(spec, field, capability, on_error)
        step = Step(
            id=step_id,
            capability=capability.name,
            args=args,
            when=when,
            state_key=state_key,
            timeout=timeout,
            retry=retry,
            on_error=on_error,
            default=default,
        )
        return _Draft(step, index, tuple(explicit), state_refs)

    def args(
        self,
        value: Any,
        field: str,
        capability: Capability,
        inputs: Mapping[str, FieldSpec],
        state_refs: list[tuple[str, Reference]],
    ) -> dict[str, Any]:
        compiled: dict[str, Any] = {}
        for arg_name, arg_value in self.mapping(value, f"{field}.args").items():
            where = f"{field}.args.{arg_name}"
            arg = capability.arg(arg_name)
            if arg is None:
                takes = ", ".join(a.name for a in capability.args)
                raise self.fail(
                    where, f"{capability.name} takes no argument {arg_name!r} (it takes: {takes})"
                )
            try:
                value = compile_value(arg_value, ROOTS)
            except TemplateError as error:
                raise self.fail(where, str(error)) from None
            for reference in references_in(value):
                self.check_reference(reference, where, inputs, state_refs)
            self.check_arg_type(value, arg, inputs, where)
            compiled[arg_name] = value
        for arg in capability.args:
            if arg.required and arg.name not in compiled:
                raise self.fail(
                    f"{field}.args.{arg.name}", f"missing; {capability.name} requires it"
                )
        return compiled

    def check_reference(
        self,
        reference: Reference,
        where: str,
        inputs: Mapping[str, FieldSpec],
        state_refs: list[tuple[str, Reference]] | None,
    ) -> None:
        """Inputs must be declared; state references are kept to resolve against steps."""
        head = reference.path[0]
        if reference.root == "inputs" and head not in inputs:
            raise self.fail(
                where,
                f"{{{{{reference}}}}} refers to input {head!r}, which the pattern does not declare",
            )
        if reference.root == "state" and state_refs is not None:
            state_refs.append((where, reference))

    def retry(self, value: Any, field: str, capability: Capability) -> Backoff | None:
        if value is None:
            return None
        where = f"{field}.retry"
        spec = {"attempts": value} if isinstance(value, int) else self.mapping(value, where)
        self.known_keys(spec, where, _RETRY_KEYS)
        attempts = spec.get("attempts")
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise self.fail(f"{where}.attempts", "expected the number of tries (2 or more)")
        if not 2 <= attempts <= MAX_ATTEMPTS:
            raise self.fail(f"{where}.attempts", f"{attempts}; from 2 to {MAX_ATTEMPTS} tries")
        initial = _seconds(spec.get("initial_backoff", 0.2))
        maximum = _seconds(spec.get("max_backoff", 5.0))
        if initial is None or maximum is None or maximum < initial:
            raise self.fail(where, "initial_backoff and max_backoff are seconds, initial <= max")
        if not capability.retry_safe:
            raise self.fail(
                where, f"{capability.name}'s agent does not declare it safe to run twice"
            )
        return Backoff(initial=initial, maximum=maximum, max_attempts=attempts)

    def default(
        self, spec: Mapping[str, Any], field: str, capability: Capability, on_error: str
    ) -> Mapping[str, Any] | None:
        if "default" not in spec:
            return None
        where = f"{field}.default"
        if on_error != "continue":
            raise self.fail(where, "only with on_error: continue")
        default = self.mapping(spec["default"], where)
        for name, value in default.items():
            output = capability.output(name)
            if output is None:
                fields = ", ".join(o.name for o in capability.outputs)
                raise self.fail(
                    f"{where}.{name}", f"{capability.name} outputs no field {name!r} ({fields})"
                )
            kind = _type_name(value)
            if kind != output.type and not (kind == "integer" and output.type == "number"):
                raise self.fail(f"{where}.{name}", f"expected {a_type(output.type)}")
        return dict(default)

    def resolve(self, drafts: Mapping[str, _Draft], keys: Mapping[str, str]) -> tuple[Step, ...]:
        """Each step's dependencies (explicit and implied), checked; then a cycle check."""
        depends: dict[str, list[str]] = {}
        for step_id, draft in drafts.items():
            found: list[str] = []
            for other in draft.explicit:
                if other not in drafts:
                    raise self.fail(
                        f"steps.{step_id}.depends_on",
                        f"step {other!r} does not exist in this pattern",
                    )
                found.append(other)
            for where, reference in draft.state_refs:
                other = self.state_step(reference, where, drafts, keys)
                found.append(other)
            depends[step_id] = list(dict.fromkeys(found))
        self.check_acyclic(depends)
        return tuple(
            dataclasses.replace(d.step, depends_on=tuple(depends[i]))
            for i, d in sorted(drafts.items(), key=lambda item: item[1].index)
        )

    def state_step(
        self,
        reference: Reference,
        where: str,
        drafts: Mapping[str, _Draft],
        keys: Mapping[str, str],
    ) -> str:
        """The step whose output `{{state.…}}` reads; its field must be one it outputs."""
        key = str(reference.path[0])
        step_id = keys.get(key)
        if step_id is None:
            renamed = drafts.get(key)
            if renamed is not None:
                raise self.fail(
                    where,
                    f"{{{{{reference}}}}}: step {key!r} stores its output as "
                    f"{renamed.step.key!r} (its `as`)",
                )
            raise self.fail(
                where,
                f"{{{{{reference}}}}} refers to step {key!r}, which the pattern does not have",
            )
        capability = self.capabilities[drafts[step_id].step.capability]
        if len(reference.path) > 1:
            name = reference.path[1]
            if not isinstance(name, str) or capability.output(name) is None:
                fields = ", ".join(o.name for o in capability.outputs)
                raise self.fail(
                    where,
                    f"{{{{{reference}}}}}: {capability.name} outputs no field {name!r} "
                    f"(it outputs: {fields})",
                )
        return step_id

    def check_acyclic(self, depends: Mapping[str, Sequence[str]]) -> None:
        state: dict[str, int] = {}  # 1 visiting, 2 done
        for start in depends:
            if start in state:
                continue
            # Iterative depth-first search; `trail` is the current path, for the message.
            trail: list[str] = [start]
            iterators = [iter(depends[start])]
            state[start] = 1
            while iterators:
                nxt = next(iterators[-1], None)
                if nxt is None:
                    state[trail.pop()] = 2
                    iterators.pop()
                elif state.get(nxt) == 1:
                    cycle = [*trail[trail.index(nxt) :], nxt]
                    raise self.fail(
                        f"steps.{trail[-1]}.depends_on",
                        f"steps form a cycle: {' needs '.join(cycle)}",
                    )
                elif nxt not in state:
                    state[nxt] = 1
                    trail.append(nxt)
                    iterators.append(iter(depends[nxt]))

    def check_arg_type(
        self, value: Any, arg: FieldSpec, inputs: Mapping[str, FieldSpec], where: str
    ) -> None:
        if isinstance(value, Template):
            whole = value.whole
            if whole is None:
                kind = "string"  # placeholders inside text render as text
            elif whole.root == "inputs" and len(whole.path) == 1:
                kind = inputs[str(whole.path[0])].type
            elif whole.root == "ctx":
                kind = "string"
            else:
                return  # a step's output or a nested field: its type is known only at run time
        else:
            kind = _type_name(value)
        if kind != arg.type and not (kind == "integer" and arg.type == "number"):
            raise self.fail(
                where, f"{arg.name} takes {a_type(arg.type)}, but this gives {a_type(kind)}"
            )
        if not references_in(value):
            # A literal is known now: its choices and checks too (a template's at run time).
            _, problem = check_value(arg, render_value(value, {}))
            if problem:
                raise self.fail(where, f"{arg.name}: {problem}")

    def outputs(
        self, value: Any, inputs: tuple[FieldSpec, ...], steps: tuple[Step, ...]
    ) -> dict[str, Template]:
        declared = self.mapping(value, "outputs")
        by_input = {i.name: i for i in inputs}
        keys = {s.key: s.id for s in steps}
        drafts = {s.id: _Draft(s, i, (), []) for i, s in enumerate(steps)}
        outputs: dict[str, Template] = {}
        for name, raw in declared.items():
            where = f"outputs.{name}"
            if not _NAME.fullmatch(name):
                raise self.fail(where, "output names are identifiers ([A-Za-z_][A-Za-z0-9_]*)")
            try:
                template = parse(self.text(raw, where), ROOTS)
            except TemplateError as error:
                raise self.fail(where, str(error)) from None
            for reference in template.references:
                self.check_reference(reference, where, by_input, None)
                if reference.root == "state":
                    self.state_step(reference, where, drafts, keys)
            outputs[name] = template
        return outputs
