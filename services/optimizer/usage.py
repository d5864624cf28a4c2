"""What GetUsage may ask: which days, whose usage, grouped how — checked before any query.

Days are UTC dates written `YYYY-MM-DD`. A query spans at most `MAX_RANGE_DAYS` days,
inclusive: an empty end means today, an empty start the longest range that ends on the end
day. Usage is one user's unless `all_users` asks for everyone's (the gateway decides who may
ask for whom). Results group by any of user, session, provider, model and day, in the order
asked; no dimension given means provider, model and day.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from services.common.errors import FieldViolation, InvalidArgument

MAX_RANGE_DAYS = 366
MAX_USER_ID_CHARS = 256
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class Dimension(enum.Enum):
    """A usage dimension; the value is its column in the ledger."""

    USER = "user_id"
    SESSION = "session_id"
    PROVIDER = "provider"
    MODEL = "model"
    DAY = "day"


DEFAULT_GROUPING = (Dimension.PROVIDER, Dimension.MODEL, Dimension.DAY)


@dataclass(frozen=True)
class UsageQuery:
    """A validated usage question. `user_id` None = every user."""

    start: dt.date
    end: dt.date
    user_id: str | None
    group_by: tuple[Dimension, ...]


def _invalid(field: str, problem: str) -> InvalidArgument:
    return InvalidArgument(
        f"{field}: {problem}",
        reason="USAGE_QUERY_INVALID",
        field_violations=[FieldViolation(field, problem)],
    )


def _day(text: str, field: str) -> dt.date:
    if not _DATE.fullmatch(text):
        raise _invalid(field, "a date written YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise _invalid(field, f"{text!r} is not a calendar date") from None


def usage_query(
    *,
    start_date: str,
    end_date: str,
    user_id: str,
    all_users: bool,
    group_by: Iterable[Dimension],
    today: dt.date,
) -> UsageQuery:
    """Check a GetUsage request; raise InvalidArgument (USAGE_QUERY_INVALID) naming the field."""
    end = _day(end_date, "end_date") if end_date else today
    if start_date:
        start = _day(start_date, "start_date")
        if start > end:
            raise _invalid("start_date", "after end_date")
        if (end - start).days + 1 > MAX_RANGE_DAYS:
            raise _invalid("start_date", f"the range spans more than {MAX_RANGE_DAYS} days")
    else:
        start = end - dt.timedelta(days=MAX_RANGE_DAYS - 1)
    if all_users:
        if user_id:
            raise _invalid("user_id", "must be empty when all_users is set")
        who: str | None = None
    else:
        if not user_id:
            raise _invalid("user_id", "required unless all_users is set")
        if len(user_id) > MAX_USER_ID_CHARS:
            raise _invalid("user_id", f"at most {MAX_USER_ID_CHARS} characters")
        who = user_id
    dimensions = tuple(dict.fromkeys(group_by)) or DEFAULT_GROUPING
    return UsageQuery(start, end, who, dimensions)
