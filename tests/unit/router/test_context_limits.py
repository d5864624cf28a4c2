"""Reading the numbers of the providers' context-length errors, in their real wordings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.router.context_limits import MAX_TOKENS_READ, ContextLimit, parse
from services.router.engines.http_errors import is_context_length

# (wording with {w} window, {p} prompt, {c} completion, the ContextLimit it gives)
WORDINGS = [
    (  # OpenAI and Azure OpenAI, code context_length_exceeded
        "This model's maximum context length is {w} tokens. However, your messages resulted "
        "in {p} tokens. Please reduce the length of the messages.",
        lambda w, p, c: ContextLimit(w, p, p),
    ),
    (  # OpenAI, Azure OpenAI and vLLM, with the completion counted
        "This model's maximum context length is {w} tokens. However, you requested {t} tokens "
        "({p} in the messages, {c} in the completion). Please reduce the length of the "
        "messages or completion.",
        lambda w, p, c: ContextLimit(w, p, p + c),
    ),
    (  # vLLM, newer
        "'max_tokens' or 'max_completion_tokens' is too large: {c}. This model's maximum "
        "context length is {w} tokens and your request has {p} input tokens ({c} > {w} - {p}).",
        lambda w, p, c: ContextLimit(w, p, p + c),
    ),
    (  # Azure OpenAI, newer models
        "Input tokens exceed the configured limit of {w} tokens. Your messages resulted in {p} "
        "tokens. Please reduce the length of the messages.",
        lambda w, p, c: ContextLimit(w, p, p),
    ),
    (  # Anthropic
        "prompt is too long: {p} tokens > {w} maximum",
        lambda w, p, c: ContextLimit(w, p, p),
    ),
    (  # Anthropic, with max_tokens counted
        "input length and `max_tokens` exceed context limit: {p} + {c} > {w}, decrease input "
        "length or `max_tokens` and try again",
        lambda w, p, c: ContextLimit(w, p, p + c),
    ),
]

counts = st.integers(1, MAX_TOKENS_READ // 2)


def written(n: int, grouped: bool) -> str:
    """`n` as a provider may write it: plain, or with thousands separators."""
    return f"{n:,}" if grouped else str(n)


@pytest.mark.parametrize(("wording", "expected"), WORDINGS)
@given(w=counts, p=counts, c=counts, grouped=st.booleans())
def test_every_wording_gives_its_numbers(
    wording: str, expected: object, w: int, p: int, c: int, grouped: bool
) -> None:
    message = wording.format(
        w=written(w, grouped),
        p=written(p, grouped),
        c=written(c, grouped),
        t=written(p + c, grouped),
    )
    assert parse(message) == expected(w, p, c)  # type: ignore[operator]
    # Behind the engine's prefix and in the engine's classification alike.
    assert parse(f"small: HTTP 400: {message}") == parse(message)
    assert is_context_length("", message)


def test_the_real_messages_read_as_sent() -> None:
    # As quoted in public reports of each provider's answer.
    assert parse(
        "This model's maximum context length is 8192 tokens. However, your messages resulted "
        "in 8227 tokens. Please reduce the length of the messages."
    ) == ContextLimit(8192, 8227, 8227)
    assert parse("prompt is too long: 208310 tokens > 200000 maximum") == ContextLimit(
        200000, 208310, 208310
    )
    assert parse(
        "This model's maximum context length is 16384 tokens. However, you requested 122946 "
        "tokens (112946 in the messages, 10000 in the completion)."
    ) == ContextLimit(16384, 112946, 122946)


@pytest.mark.parametrize(
    "message",
    [
        "",
        "Your input exceeds the context window of this model.",  # no numbers
        "Invalid request.",
        "prompt is too long: 0 tokens > 0 maximum",  # not counts
        f"prompt is too long: {MAX_TOKENS_READ + 1} tokens > {MAX_TOKENS_READ * 10} maximum",
    ],
)
def test_messages_without_usable_numbers_give_none(message: str) -> None:
    assert parse(message) is None


@given(st.text(max_size=400))
def test_any_text_parses_to_none_or_sane_counts(message: str) -> None:
    limit = parse(message)
    if limit is not None:
        numbers = [n for n in (limit.window, limit.prompt, limit.requested) if n is not None]
        assert numbers
        assert all(0 < n <= 2 * MAX_TOKENS_READ for n in numbers)
