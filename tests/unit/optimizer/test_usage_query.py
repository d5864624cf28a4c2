"""GetUsage's bounds: real dates, at most 366 days, a user unless all users, dimensions."""

from __future__ import annotations

import datetime as dt

import pytest

from services.common.errors import InvalidArgument
from services.optimizer.usage import DEFAULT_GROUPING, MAX_RANGE_DAYS, Dimension, usage_query

TODAY = dt.date(2026, 3, 14)


def ask(**overrides: object) -> object:
    args: dict[str, object] = {
        "start_date": "2026-03-01",
        "end_date": "2026-03-14",
        "user_id": "usr_a",
        "all_users": False,
        "group_by": [],
        "today": TODAY,
    }
    args.update(overrides)
    return usage_query(**args)  # type: ignore[arg-type]


def test_a_plain_query_defaults_its_grouping() -> None:
    q = usage_query(
        start_date="2026-03-01",
        end_date="2026-03-14",
        user_id="usr_a",
        all_users=False,
        group_by=[],
        today=TODAY,
    )
    assert (q.start, q.end, q.user_id) == (dt.date(2026, 3, 1), TODAY, "usr_a")
    assert q.group_by == DEFAULT_GROUPING


def test_empty_dates_mean_the_longest_range_up_to_today() -> None:
    q = usage_query(
        start_date="",
        end_date="",
        user_id="",
        all_users=True,
        group_by=[Dimension.USER, Dimension.DAY, Dimension.USER],
        today=TODAY,
    )
    assert q.end == TODAY
    assert (q.end - q.start).days + 1 == MAX_RANGE_DAYS
    assert q.user_id is None
    assert q.group_by == (Dimension.USER, Dimension.DAY)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"start_date": "2026-3-1"}, "start_date"),
        ({"start_date": "2026-02-30"}, "start_date"),
        ({"end_date": "20260314"}, "end_date"),
        ({"end_date": "tomorrow"}, "end_date"),
        ({"start_date": "2026-03-15"}, "start_date"),  # after the end
        ({"start_date": "2025-03-13"}, "start_date"),  # 367 days
        ({"user_id": ""}, "user_id"),
        ({"user_id": "x" * 257}, "user_id"),
        ({"all_users": True}, "user_id"),  # both: ambiguous
    ],
)
def test_bad_queries_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        ask(**overrides)
    assert err.value.reason == "USAGE_QUERY_INVALID"
    assert [v.field for v in err.value.field_violations] == [field]


def test_the_longest_range_is_accepted() -> None:
    # Positive control of the bound: exactly 366 days, inclusive.
    ask(start_date="2025-03-14", end_date="2026-03-14")
    ask(start_date="2024-02-29", end_date="2024-02-29")
