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
        ("{{inputs.a-b}}", "expected a root and dotted names or [indices]"),
        ("{{inputs.a + 1}}", "expected a root and dotted names or [indices]"),
        ("{{inputs.rows[-1]}}", "expected a root and dotted names or [indices]"),
        ("{{inputs.rows[1234567]}}", "expected a root and dotted names or [indices]"),
        ("{{inputs[0]}}", "names no field below 'inputs'"),
        ("{{steps.answer.text}}", "(step outputs are under `state`)"),
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


STATE = {
    "inputs": {"n": 2},
    "state": {"fetch": {"rows": [{"symbol": "AAPL", "qty": 3}, {"symbol": "MSFT"}]}},
    "ctx": {"asof": "2026-12-01"},
    "session": {},
}


def test_paths_have_names_and_indices_and_a_whole_template_keeps_its_type() -> None:
    roots = ("inputs", "state", "ctx", "session")
    assert parse("{{state.fetch.rows[0].qty}}", roots).render(STATE) == 3
    assert parse("{{state.fetch.rows[1]}}", roots).render(STATE) == {"symbol": "MSFT"}
    assert parse("{{ state.fetch.rows }}", roots).render(STATE)[0]["symbol"] == "AAPL"
    assert parse("{{state.fetch.rows[0].symbol}} on {{ctx.asof}}", roots).render(STATE) == (
        "AAPL on 2026-12-01"
    )
    assert str(parse("{{state.fetch.rows[0].symbol}}", roots).references[0]) == (
        "state.fetch.rows[0].symbol"
    )


def test_absent_paths_are_none_alone_and_empty_in_text() -> None:
    roots = ("inputs", "state", "ctx", "session")
    for path in (
        "state.fetch.rows[5]",
        "state.fetch.rows[0].qty.deep",
        "session.history",
        "state.other.text",
        "inputs.n[0]",
    ):
        assert parse(f"{{{{{path}}}}}", roots).render(STATE) is None, path
        assert parse(f"<{{{{{path}}}}}>", roots).render(STATE) == "<>", path


def test_ctx_holds_only_the_pinned_context() -> None:
    roots = ("ctx",)
    for name in ("asof", "pricing_pack_id", "ledger_commit_hash", "execution_id"):
        assert parse(f"{{{{ctx.{name}}}}}", roots).references
    with pytest.raises(TemplateError, match="ctx holds only"):
        parse("{{ctx.user}}", roots)
    with pytest.raises(TemplateError, match="ctx holds only"):
        parse("{{ctx.asof.year}}", roots)


def test_session_holds_its_id_stages_and_history() -> None:
    roots = ("session",)
    for name in ("id", "stages[0].outputs.text", "history"):
        assert parse(f"{{{{session.{name}}}}}", roots).references
    with pytest.raises(TemplateError, match="session holds only"):
        parse("{{session.turns}}", roots)


@given(st.text(max_size=200))
def test_any_string_parses_or_raises_template_error(text: str) -> None:
    try:
        template = parse(text, ("inputs", "state", "ctx", "session"))
    except TemplateError:
        return
    template.render(STATE)
