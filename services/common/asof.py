"""The as-of date of a request (`YYYY-MM-DD`, UTC), checked the same way by the gateway and
the runtime: a real date, not after today; empty means today."""

from __future__ import annotations

import datetime
import re

from services.common.errors import FieldViolation, InvalidArgument

_ASOF = re.compile(r"\d{4}-\d{2}-\d{2}")


def today_utc() -> datetime.date:
    """Today's date in UTC (the date every as-of defaults to)."""
    return datetime.datetime.now(datetime.UTC).date()


def resolve_asof(asof: str, today: datetime.date | None = None, field: str = "asof") -> str:
    """`asof` if it is a real YYYY-MM-DD date not after `today` (UTC); today when empty.
    INVALID_ARGUMENT ASOF_INVALID with a violation of `field` otherwise."""
    today = today or today_utc()
    if not asof:
        return today.isoformat()
    problem = ""
    if _ASOF.fullmatch(asof) is None:
        problem = "expected a date as YYYY-MM-DD"
    else:
        try:
            if datetime.date.fromisoformat(asof) > today:
                problem = f"after today ({today.isoformat()}, UTC): no data exists for it yet"
        except ValueError:
            problem = "expected a date as YYYY-MM-DD"
    if problem:
        raise InvalidArgument(
            f"{field} {asof[:32]!r}: {problem}",
            reason="ASOF_INVALID",
            field_violations=[FieldViolation(field, problem)],
        )
    return asof
