"""Pattern files: the shipped samples load, and every bad file is refused at load with a
message naming the file and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.runtime.agents.llm import LLM_COMPLETE
from services.runtime.patterns import (
    MAX_PATTERN_BYTES,
    MAX_STEPS,
    SAMPLES_DIR,
    PatternError,
    load_patterns,
    parse_pattern,
)
from services.runtime.templates import Template

CAPABILITIES = {LLM_COMPLETE.name: LLM_COMPLETE}


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
        "outputs": {"text": "{{steps.answer.text}}"},
    }


def load(document: Any, file: str = "p.yaml") -> Any:
    return parse_pattern(yaml.safe_dump(document).encode(), file, f"user/{file}", CAPABILITIES)


def test_the_shipped_chat_pattern_loads() -> None:
    patterns = load_patterns([(SAMPLES_DIR, "samples")], CAPABILITIES)
    chat = patterns["chat"]
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
        ["prompt", "system"],
    )
    rendered = {k: v.render({"inputs": {"prompt": "Hi"}}) for k, v in step.args.items()}
    assert rendered == {"prompt": "Hi", "system": None}
    assert chat.outputs["text"].render({"steps": {"answer": {"text": "Hello"}}}) == "Hello"


def test_json_pattern_files_load_like_yaml(tmp_path: Path) -> None:
    (tmp_path / "chat.json").write_text(json.dumps(chat_document() | {"id": "chat_json"}))
    (tmp_path / "notes.txt").write_text("not a pattern")
    patterns = load_patterns([(tmp_path, "user")], CAPABILITIES)
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
    ("unknown step field", _step(depends_on=["x"]), "steps[0].depends_on", "unknown field"),
    ("bad step id", _step(id="Answer!"), "steps[0].id", "not a lowercase identifier"),
    (
        "argument the capability does not take",
        _args(prompt="{{inputs.prompt}}", voice="x"),
        "steps.answer.args.voice",
        "llm.complete takes no argument 'voice'",
    ),
    (
        "missing required argument",
        _args(system="x"),
        "steps.answer.args.prompt",
        "missing; llm.complete requires it",
    ),
    (
        "template root not allowed in args",
        _args(prompt="{{steps.other.text}}"),
        "steps.answer.args.prompt",
        "step 'answer': placeholder {{steps.other.text}} uses root 'steps', "
        "which is not available here",
    ),
    (
        "undeclared input",
        _args(prompt="{{inputs.question}}"),
        "steps.answer.args.prompt",
        "step 'answer': {{inputs.question}} refers to input 'question', "
        "which the pattern does not declare",
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
        chat_document() | {"outputs": {"text": "{{steps.reply.text}}"}},
        "outputs.text",
        "refers to step 'reply', which the pattern does not have",
    ),
    (
        "output field the capability does not produce",
        chat_document() | {"outputs": {"text": "{{steps.answer.tokens}}"}},
        "outputs.text",
        "llm.complete outputs no field 'tokens' (it outputs: text)",
    ),
    (
        "output template root not allowed",
        chat_document() | {"outputs": {"text": "{{inputs.prompt}}"}},
        "outputs.text",
        "uses root 'inputs', which is not available here (allowed: steps)",
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
    with pytest.raises(PatternError) as error:
        load_patterns([(tmp_path, "user")], CAPABILITIES)
    assert error.value.field == "(file)"
    assert f"a pattern file may be {MAX_PATTERN_BYTES} at most" in error.value.message


def test_an_id_defined_twice_names_both_files(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(chat_document()))
    with pytest.raises(PatternError) as error:
        load_patterns([(SAMPLES_DIR, "samples"), (tmp_path, "user")], CAPABILITIES)
    assert (error.value.file, error.value.field) == (str(tmp_path / "mine.yaml"), "id")
    assert "already defined by samples/chat.yaml" in error.value.message
    # Positive control: under another id both load.
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(chat_document() | {"id": "mine"}))
    assert sorted(load_patterns([(SAMPLES_DIR, "samples"), (tmp_path, "user")], CAPABILITIES)) == [
        "chat",
        "mine",
    ]


def test_a_missing_patterns_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PatternError, match="does not exist"):
        load_patterns([(tmp_path / "nope", "user")], CAPABILITIES)
