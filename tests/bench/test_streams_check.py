"""The load clients' token check: a lost, reordered or repeated token is seen."""

from __future__ import annotations

from bench.fake_upstream import answer_text
from bench.streams import check_tokens


def test_the_upstreams_own_answer_loses_and_reorders_nothing() -> None:
    assert check_tokens(answer_text(50), 50) == (0, 0)


def test_a_missing_token_is_lost_and_a_swapped_or_repeated_one_is_reordered() -> None:
    assert check_tokens("t0 t2 ", 3) == (1, 0)
    assert check_tokens("t0 t2 t1 ", 3) == (0, 1)
    assert check_tokens("t0 t1 t1 t2 ", 3) == (0, 1)
    assert check_tokens("t0 t1 tx t2 ", 3) == (0, 1)
    assert check_tokens("", 2) == (2, 0)
