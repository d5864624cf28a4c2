"""Pattern files: the shipped samples load, every bad file is refused at load with a message
naming the file and the field (and the others still load), and the DAG a pattern declares is
resolved: explicit and implied dependencies, cycles refused."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from services.runtime import patterns as patterns_module
from services.runtime.agents.data import data_agent, load_datasets
from services.runtime.agents.financial_analyst import (
    LEDGER_POSITIONS,
    METRICS_COMPUTE,
    PRICING_APPLY_PACK,
)
from services.runtime.agents.llm import LLM_COMPLETE, LLM_EMBED, LLM_SUMMARIZE
from services.runtime.expressions import parse_expression
from services.runtime.patterns import (
    MAX_NESTING,
    MAX_PATTERN_BYTES,
    MAX_STEPS,
    MAX_VALUES,
    SAMPLES_DIR,
    PatternError,
    Problem,
    load_patterns,
    parse_pattern,
)
from services.runtime.templates import Template

# A capability whose agent does not declare it safe to retry (e.g. one that writes).
ONCE = dataclasses.replace(LLM_COMPLETE, name="llm.once", retry_safe=False)
CAPABILITIES = {
    c.name: c
    for c in (
        LLM_COMPLETE,
        LLM_SUMMARIZE,
        LLM_EMBED,
        ONCE,
        LEDGER_POSITIONS,
        PRICING_APPLY_PACK,
        METRICS_COMPUTE,
        *data_agent(load_datasets()).capabilities,
    )
}
"""The built-in capabilities the shipped samples use, and ONCE."""
SAMPLES = ["chat", "debate", "embed", "portfolio_overview", "portfolio_risk", "tool_call"]


def chat_document() -> dict[str, Any]:
    """A valid pattern, as a test edits it."""
    return {
        "id": "chat",
        "description": "Answer a prompt.",
        "requires_pack": False,
        "inputs": {
            "prompt": {"type": "string", "required": True, "max_length": 100},
            "system": {"type": "string"},
        },
        "steps": [
            {
                "id": "answer",
                "capability": "llm.complete",
                "args": {"prompt": "{{inputs.prompt}}", "system": "{{inputs.system}}"},
            }
        ],
        "outputs": {"text": "{{state.answer.text}}"},
    }


def load(document: Any, file: str = "p.yaml") -> Any:
    return parse_pattern(yaml.safe_dump(document).encode(), file, f"user/{file}", CAPABILITIES)


def test_the_shipped_chat_pattern_loads() -> None:
    catalog = load_patterns([(SAMPLES_DIR, "samples")], CAPABILITIES)
    assert catalog.problems == ()
    chat = catalog.patterns["chat"]
    assert (chat.source, chat.requires_pack) == ("samples/chat.yaml", False)
    prompt = chat.input("prompt")
    assert prompt is not None
    assert (prompt.type, prompt.required, prompt.max_length) == ("string", True, 100_000)
    system = chat.input("system")
    assert system is not None
    assert (system.type, system.required) == ("string", False)
    [step] = chat.steps
    assert (step.id, step.capability, sorted(step.args)) == (
        "answer",
        "llm.complete",
        sorted(
            [
                *("history", "prompt", "system", "messages", "max_tokens", "temperature"),
                *("top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "end_user"),
            ]
        ),
    )
    rendered = {k: v.render({"inputs": {"prompt": "Hi"}}) for k, v in step.args.items()}
    # Absent inputs render None: the step leaves them out (the provider's defaults apply).
    assert rendered == {"prompt": "Hi"} | {k: None for k in step.args if k != "prompt"}
    sampled = {"temperature": 0.3, "user": "u-1", "stop": ["END"]}
    assert step.args["temperature"].render({"inputs": sampled}) == 0.3
    assert step.args["end_user"].render({"inputs": sampled}) == "u-1"
    assert step.args["stop"].render({"inputs": sampled}) == ["END"]
    turns = [{"role": "user", "content": "Hello"}]
    assert step.args["history"].render({"session": {"history": turns}}) == turns
    assert chat.outputs["text"].render({"state": {"answer": {"text": "Hello"}}}) == "Hello"


def test_the_shipped_debate_pattern_runs_two_branches_then_joins_them() -> None:
    debate = load_patterns([(SAMPLES_DIR, "samples")], CAPABILITIES).patterns["debate"]
    steps = {s.id: s for s in debate.steps}
    assert steps["case_for"].depends_on == steps["case_against"].depends_on == ()
    assert steps["verdict"].depends_on == ("case_for", "case_against")
    assert steps["case_for"].retry is not None


def test_json_pattern_files_load_like_yaml(tmp_path: Path) -> None:
    (tmp_path / "chat.json").write_text(json.dumps(chat_document() | {"id": "chat_json"}))
    (tmp_path / "notes.txt").write_text("not a pattern")
    patterns = load_patterns([(tmp_path, "user")], CAPABILITIES).patterns
    assert list(patterns) == ["chat_json"]
    assert isinstance(patterns["chat_json"].outputs["text"], Template)


def _without(document: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != key}


def _step(**changes: Any) -> dict[str, Any]:
    document = chat_document()
    document["steps"][0].update(changes)
    return document


def _args(**args: Any) -> dict[str, Any]:
    return _step(args=args)


BAD: list[tuple[str, dict[str, Any] | list[Any], str, str]] = [
    ("not a mapping", ["a", "list"], "(file)", "expected a mapping"),
    ("unknown top-level field", chat_document() | {"stepz": []}, "stepz", "unknown field"),
    ("missing id", _without(chat_document(), "id"), "id", "missing"),
    ("bad id", chat_document() | {"id": "Chat Pattern"}, "id", "not a lowercase identifier"),
    (
        "no description",
        _without(chat_document(), "description"),
        "description",
        "expected a string",
    ),
    (
        "requires_pack not a bool",
        chat_document() | {"requires_pack": "no"},
        "requires_pack",
        "true or false",
    ),
    (
        "unknown input type",
        chat_document() | {"inputs": {"prompt": {"type": "text"}}},
        "inputs.prompt.type",
        "'text'; expected one of string, number",
    ),
    (
        "max_length on a number",
        chat_document() | {"inputs": {"n": {"type": "number", "max_length": 3}}},
        "inputs.n.max_length",
        "applies to strings and arrays",
    ),
    (
        "negative max_length",
        chat_document() | {"inputs": {"prompt": {"type": "string", "max_length": -1}}},
        "inputs.prompt.max_length",
        "positive integer",
    ),
    (
        "unknown input field",
        chat_document() | {"inputs": {"prompt": {"type": "string", "default": "x"}}},
        "inputs.prompt.default",
        "unknown field",
    ),
    ("no steps", _without(chat_document(), "steps"), "steps", "at least one step"),
    ("empty steps", chat_document() | {"steps": []}, "steps", "non-empty list"),
    (
        "unknown capability",
        _step(capability="llm.dream"),
        "steps.answer.capability",
        "unknown capability 'llm.dream'",
    ),
    ("unknown step field", _step(needs=["x"]), "steps[0].needs", "unknown field"),
    ("bad step id", _step(id="Answer!"), "steps[0].id", "not a lowercase identifier"),
    (
        "argument the capability does not take",
        _args(prompt="{{inputs.prompt}}", voice="x"),
        "steps.answer.args.voice",
        "llm.complete takes no argument 'voice'",
    ),
    (
        "missing required argument",
        _step(capability="llm.summarize", args={"system": "x"}),
        "steps.answer.args.text",
        "missing; llm.summarize requires it",
    ),
    (
        "template root not allowed in args",
        _args(prompt="{{steps.other.text}}"),
        "steps.answer.args.prompt",
        "placeholder {{steps.other.text}}: 'steps.other.text' uses root 'steps', "
        "which is not available here",
    ),
    (
        "undeclared input",
        _args(prompt="{{inputs.question}}"),
        "steps.answer.args.prompt",
        "{{inputs.question}} refers to input 'question', which the pattern does not declare",
    ),
    (
        "unclosed template",
        _args(prompt="{{inputs.prompt"),
        "steps.answer.args.prompt",
        "unclosed placeholder",
    ),
    (
        "argument of the wrong type",
        _args(prompt="x", max_tokens="many"),
        "steps.answer.args.max_tokens",
        "max_tokens takes an integer, but this gives a string",
    ),
    (
        "output of an unknown step",
        chat_document() | {"outputs": {"text": "{{state.reply.text}}"}},
        "outputs.text",
        "refers to step 'reply', which the pattern does not have",
    ),
    (
        "output field the capability does not produce",
        chat_document() | {"outputs": {"text": "{{state.answer.tokens}}"}},
        "outputs.text",
        "llm.complete outputs no field 'tokens' (it outputs: text, finish_reason, tool_calls)",
    ),
    (
        "output template root not allowed",
        chat_document() | {"outputs": {"text": "{{step.answer.text}}"}},
        "outputs.text",
        "uses root 'step', which is not available here (allowed: ctx, inputs, session, state)",
    ),
    (
        "too many steps",
        chat_document()
        | {
            "steps": [
                {"id": f"s{i}", "capability": "llm.complete", "args": {"prompt": "x"}}
                for i in range(MAX_STEPS + 1)
            ]
        },
        "steps",
        f"{MAX_STEPS + 1} steps; a pattern may have {MAX_STEPS} at most",
    ),
    (
        "duplicate step id",
        chat_document() | {"steps": [chat_document()["steps"][0], chat_document()["steps"][0]]},
        "steps[1].id",
        "step id 'answer' is used twice",
    ),
]


@pytest.mark.parametrize(("case", "document", "field", "message"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_pattern_is_refused_naming_file_and_field(
    case: str, document: Any, field: str, message: str
) -> None:
    with pytest.raises(PatternError) as error:
        load(document, file="bad.yaml")
    assert (error.value.file, error.value.field) == ("bad.yaml", field)
    assert message in error.value.message
    assert str(error.value).startswith(f"bad.yaml: {field}: ")


def test_the_valid_control_document_loads() -> None:
    pattern = load(chat_document())
    assert pattern.id == "chat"


def test_unparseable_files_are_refused() -> None:
    with pytest.raises(PatternError, match=r"p\.yaml: \(file\): not valid YAML"):
        parse_pattern(b"id: [unclosed", "p.yaml", "user/p.yaml", CAPABILITIES)
    with pytest.raises(PatternError, match=r"p\.json: \(file\): not valid JSON"):
        parse_pattern(b"{id: 1}", "p.json", "user/p.json", CAPABILITIES)


def test_an_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    document = chat_document() | {"description": "x" * MAX_PATTERN_BYTES}
    (tmp_path / "big.yaml").write_text(yaml.safe_dump(document))
    catalog = load_patterns([(tmp_path, "user")], CAPABILITIES)
    assert catalog.patterns == {}
    [problem] = catalog.problems
    assert (problem.source, problem.field) == ("user/big.yaml", "(file)")
    assert f"a pattern file may be {MAX_PATTERN_BYTES}" in problem.message


def test_a_bad_file_is_refused_and_the_good_ones_still_load(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(chat_document() | {"id": "good"}))
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(_step(capability="llm.dream")))
    (tmp_path / "broken.json").write_text("{")
    catalog = load_patterns([(SAMPLES_DIR, "samples"), (tmp_path, "user")], CAPABILITIES)
    assert sorted(catalog.patterns) == sorted([*SAMPLES, "good"])
    assert [(p.source, p.field) for p in catalog.problems] == [
        ("user/bad.yaml", "steps.answer.capability"),
        ("user/broken.json", "(file)"),
    ]


def test_an_id_defined_twice_keeps_the_first_and_names_both_files(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(chat_document()))
    catalog = load_patterns([(SAMPLES_DIR, "samples"), (tmp_path, "user")], CAPABILITIES)
    assert catalog.patterns["chat"].source == "samples/chat.yaml"
    assert catalog.problems == (
        Problem("user/mine.yaml", "id", "pattern 'chat' is already defined by samples/chat.yaml"),
    )
    # Positive control: under another id both load.
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(chat_document() | {"id": "mine"}))
    catalog = load_patterns([(SAMPLES_DIR, "samples"), (tmp_path, "user")], CAPABILITIES)
    assert (sorted(catalog.patterns), catalog.problems) == (sorted([*SAMPLES, "mine"]), ())


def test_a_missing_patterns_directory_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    catalog = load_patterns([(SAMPLES_DIR, "samples"), (tmp_path / "nope", "user")], CAPABILITIES)
    assert sorted(catalog.patterns) == SAMPLES
    assert [(p.source, p.field) for p in catalog.problems] == [("user", "(directory)")]


def _dag(*steps: dict[str, Any], **top: Any) -> dict[str, Any]:
    return chat_document() | {"steps": list(steps), "outputs": {}} | top


def _llm(step_id: str, prompt: str = "x", **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "capability": "llm.complete", "args": {"prompt": prompt}} | fields


def test_dependencies_are_explicit_and_implied_by_state_references() -> None:
    pattern = load(
        _dag(
            _llm("summary", "{{state.facts.text}} and {{state.risk.text}}", depends_on=["a"]),
            _llm("a"),
            _llm("b", **{"as": "facts"}),
            _llm("risk", when="state.facts.text != ''"),
            outputs={"text": "{{state.summary.text}}", "first": "{{state.facts.text}}"},
        )
    )
    steps = {s.id: s for s in pattern.steps}
    assert [s.id for s in pattern.steps] == ["summary", "a", "b", "risk"]  # file order kept
    assert steps["summary"].depends_on == ("a", "b", "risk")
    assert steps["risk"].depends_on == ("b",)
    assert steps["b"].key == "facts"
    assert steps["a"].depends_on == ()


DAG_BAD: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "cycle through templates",
        _dag(
            _llm("a", "{{state.b.text}}"),
            _llm("b", "{{state.c.text}}"),
            _llm("c", depends_on=["a"]),
        ),
        "steps.c.depends_on",
        "steps form a cycle: a needs b needs c needs a",
    ),
    ("self reference", _dag(_llm("a", "{{state.a.text}}")), "steps.a.depends_on", "a needs a"),
    (
        "depends_on a missing step",
        _dag(_llm("a", depends_on=["ghost"])),
        "steps.a.depends_on",
        "step 'ghost' does not exist",
    ),
    (
        "depends_on not a list",
        _dag(_llm("a", depends_on="b")),
        "steps.a.depends_on",
        "expected a list of step ids",
    ),
    (
        "state reference to a missing step",
        _dag(_llm("a", "{{state.ghost.text}}")),
        "steps.a.args.prompt",
        "refers to step 'ghost', which the pattern does not have",
    ),
    (
        "state reference by id to a renamed step",
        _dag(_llm("a", **{"as": "facts"}), _llm("b", "{{state.a.text}}")),
        "steps.b.args.prompt",
        "step 'a' stores its output as 'facts'",
    ),
    (
        "state reference to a field the step does not output",
        _dag(_llm("a"), _llm("b", "{{state.a.tokens}}")),
        "steps.b.args.prompt",
        "llm.complete outputs no field 'tokens'",
    ),
    (
        "as clashing with another step's id",
        _dag(_llm("a"), _llm("b", **{"as": "a"})),
        "steps.b.as",
        "'a' is already the state name of step 'a'",
    ),
    (
        "bad when syntax",
        _dag(_llm("a", when="inputs.prompt ==")),
        "steps.a.when",
        "expected a value",
    ),
    (
        "when calling something",
        _dag(_llm("a", when="len(inputs.prompt) > 3")),
        "steps.a.when",
        "uses root 'len'",
    ),
    (
        "when reading an undeclared input",
        _dag(_llm("a", when="inputs.nope")),
        "steps.a.when",
        "refers to input 'nope'",
    ),
    ("when not a string", _dag(_llm("a", when=True)), "steps.a.when", "expected a string"),
    ("zero timeout", _dag(_llm("a", timeout=0)), "steps.a.timeout", "expected seconds"),
    ("timeout as text", _dag(_llm("a", timeout="30s")), "steps.a.timeout", "expected seconds"),
    ("one try is no retry", _dag(_llm("a", retry=1)), "steps.a.retry.attempts", "from 2 to 5"),
    (
        "retry field unknown",
        _dag(_llm("a", retry={"attempts": 2, "jitter": 1})),
        "steps.a.retry.jitter",
        "unknown field",
    ),
    (
        "retry of a capability not safe to retry",
        _dag({"id": "a", "capability": "llm.once", "args": {"prompt": "x"}, "retry": 2}),
        "steps.a.retry",
        "llm.once's agent does not declare it safe to run twice",
    ),
    (
        "on_error unknown",
        _dag(_llm("a", on_error="ignore")),
        "steps.a.on_error",
        "fail or continue",
    ),
    (
        "default without continue",
        _dag(_llm("a", default={"text": "n/a"})),
        "steps.a.default",
        "only with on_error: continue",
    ),
    (
        "default of a field the capability lacks",
        _dag(_llm("a", on_error="continue", default={"summary": "n/a"})),
        "steps.a.default.summary",
        "outputs no field 'summary'",
    ),
    (
        "default of the wrong type",
        _dag(_llm("a", on_error="continue", default={"text": 3})),
        "steps.a.default.text",
        "expected a string",
    ),
    (
        "ctx name the runtime does not fill",
        _dag(_llm("a", "{{ctx.user}}")),
        "steps.a.args.prompt",
        "ctx holds only",
    ),
]


@pytest.mark.parametrize(
    ("case", "document", "field", "message"), DAG_BAD, ids=[b[0] for b in DAG_BAD]
)
def test_a_bad_step_policy_or_dependency_is_refused(
    case: str, document: Any, field: str, message: str
) -> None:
    with pytest.raises(PatternError) as error:
        load(document, file="bad.yaml")
    assert (error.value.field, message in error.value.message) == (field, True), error.value


def test_step_policies_load() -> None:
    pattern = load(
        _dag(
            _llm("a", timeout=2.5, retry={"attempts": 3, "initial_backoff": 0.1, "max_backoff": 1}),
            _llm(
                "b",
                on_error="continue",
                default={"text": "n/a"},
                when="not (inputs.prompt in ['x', 'y'])",
            ),
        )
    )
    a, b = pattern.steps
    assert (a.timeout, a.retry and a.retry.max_attempts, a.on_error) == (2.5, 3, "fail")
    assert (b.on_error, b.default, b.when and b.when.source) == (
        "continue",
        {"text": "n/a"},
        "not (inputs.prompt in ['x', 'y'])",
    )


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        (b"id: chat\nwhen: 2026-01-01\n", "when", "a date is not a JSON value"),
        (b"id: chat\n1: x\n", "(file)", "key 1 is not a string"),
        (b"id: chat\nsteps: [.nan]\n", "steps[0]", "is not a JSON number"),
        (
            b"id: chat\nx: " + b"[" * (MAX_NESTING + 2) + b"]" * (MAX_NESTING + 2),
            "x[0]",
            "nested deeper",
        ),
        (b"[" * 5000 + b"]" * 5000, "(file)", "nested deeper"),
        (
            b"a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + b"".join(
                f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n".encode()
                for p, n in zip("abcd", "bcde", strict=True)
            ),
            "(file)",
            f"more than {MAX_VALUES} values",
        ),
    ],
)
def test_documents_are_plain_json_values_within_bounds(
    text: bytes, field: str, message: str
) -> None:
    with pytest.raises(PatternError) as error:
        parse_pattern(text, "p.yaml", "user/p.yaml", CAPABILITIES)
    assert error.value.field.startswith(field), error.value
    assert message in error.value.message, error.value


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "{{inputs.prompt}}",
            "{{state.answer.text}}",
            "{{state.a.text}}",
            "{{ctx.asof}}",
            "{{session.x[0]}}",
            "{{",
            "llm.complete",
            "answer",
            "a",
            "continue",
            "inputs.prompt == 'x'",
            "string",
        ]
    ),
    st.text(max_size=8),
)
# Every field name a pattern knows, and a few of its values' names.
_keys = st.sampled_from(
    sorted({*patterns_module._PATTERN_KEYS, *patterns_module._STEP_KEYS, "prompt", "text", "a"})
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=5)),
    max_leaves=30,
)


def _mutated(document: dict[str, Any], key: str, value: Any, where: int) -> dict[str, Any]:
    """`document` with one field of the top level or of its first step replaced."""
    copy = json.loads(json.dumps(document))
    (copy if where == 0 else copy["steps"][0])[key] = value
    return copy


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        _values,
        st.builds(_mutated, st.just(chat_document()), _keys, _values, st.integers(0, 1)),
    )
)
def test_any_document_loads_or_is_refused_with_a_pattern_error(document: Any) -> None:
    try:
        text = json.dumps(document).encode()
    except ValueError:
        return
    for file in ("p.json", "p.yaml"):
        with contextlib.suppress(PatternError):
            parse_pattern(text, file, f"user/{file}", CAPABILITIES)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_load_or_are_refused_with_a_pattern_error(data: bytes) -> None:
    for file in ("p.json", "p.yaml"):
        with contextlib.suppress(PatternError):
            parse_pattern(data, file, f"user/{file}", CAPABILITIES)


def test_the_example_in_docs_patterns_md_loads_and_its_when_examples_parse() -> None:
    doc = (SAMPLES_DIR.parents[2] / "docs" / "patterns.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    pattern = parse_pattern(example.encode(), "patterns.md", "docs/patterns.md", CAPABILITIES)
    assert {s.id: s.depends_on for s in pattern.steps}["verdict"] == ("case_for", "case_against")
    examples = doc.split("Examples: ", 1)[1].split("\n\n", 1)[0]
    for text in re.findall(r"`([^`]+)`", examples):
        parse_expression(text)
