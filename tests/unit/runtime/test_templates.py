"""Templates: parsed once, rendered by lookup only, with the roots allowed where they are."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.runtime.templates import (
    Reference,
    TemplateError,
    compile_value,
    parse,
    references_in,
    render_value,
)

SCOPE = {"inputs": {"prompt": "Hi", "n": 3, "opts": {"tone": "dry"}, "tags": ["a", "b"]}}


def test_a_lone_placeholder_renders_to_the_value_itself() -> None:
    assert parse("{{inputs.prompt}}", ["inputs"]).render(SCOPE) == "Hi"
    assert parse("{{ inputs.n }}", ["inputs"]).render(SCOPE) == 3
    assert parse("{{inputs.opts.tone}}", ["inputs"]).render(SCOPE) == "dry"
    assert parse("{{inputs.missing}}", ["inputs"]).render(SCOPE) is None


def test_placeholders_inside_text_render_as_text() -> None:
    template = parse(
        "Say {{inputs.prompt}} {{inputs.n}} times {{inputs.tags}}{{inputs.x}}.", ["inputs"]
    )
    assert template.render(SCOPE) == 'Say Hi 3 times ["a","b"].'
    assert template.references == (
        Reference("inputs", ("prompt",)),
        Reference("inputs", ("n",)),
        Reference("inputs", ("tags",)),
        Reference("inputs", ("x",)),
    )


def test_plain_text_is_a_literal() -> None:
    assert parse("no placeholders", ["inputs"]).render({}) == "no placeholders"
    assert parse("", ["inputs"]).render({}) == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "{{state.answer.text}}",
            "uses root 'state', which is not available here (allowed: inputs)",
        ),
        ("{{inputs}}", "names no field below 'inputs'"),
        ("{{inputs.a-b}}", "expected dotted names"),
        ("{{inputs.a + 1}}", "expected dotted names"),
        ("Hello {{inputs.prompt", "unclosed placeholder"),
        ("Hello inputs.prompt}}", "stray '}}'"),
    ],
)
def test_bad_templates_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        parse(text, ["inputs"])
    # Positive control: a well-formed placeholder under the same roots parses.
    assert parse("{{inputs.prompt}}", ["inputs"]).references


def test_nested_values_compile_and_render() -> None:
    compiled = compile_value(
        {"a": ["{{inputs.prompt}}", 1], "b": {"c": "x{{inputs.n}}"}}, ["inputs"]
    )
    assert [str(r) for r in references_in(compiled)] == ["inputs.prompt", "inputs.n"]
    assert render_value(compiled, SCOPE) == {"a": ["Hi", 1], "b": {"c": "x3"}}


_literal = st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=20)
_name = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)


@given(st.lists(st.tuples(_literal, _name), max_size=5), _literal)
def test_rendering_substitutes_every_placeholder_and_keeps_the_text(
    pieces: list[tuple[str, str]], tail: str
) -> None:
    text = "".join(f"{literal}{{{{inputs.{name}}}}}" for literal, name in pieces) + tail
    values = {name: f"<{name}>" for _, name in pieces}
    expected = "".join(f"{literal}<{name}>" for literal, name in pieces) + tail
    rendered = parse(text, ["inputs"]).render({"inputs": values})
    assert rendered == (
        expected if (len(pieces) != 1 or pieces[0][0] or tail) else f"<{pieces[0][1]}>"
    )
