"""Page tokens: an opaque cursor bound to the query it pages.

A token carries the position after which the next page starts and a digest of the query's
filters (the caller included), so a token replayed with other filters, or altered, is
INVALID_ARGUMENT `PAGE_TOKEN_INVALID` instead of a page of something else. Queries always
filter by what the caller may see, so even a forged position shows only the caller's rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence

from services.common.errors import FieldViolation, InvalidArgument

MAX_TOKEN_CHARS = 1024


def _digest(filters: Sequence[object]) -> str:
    return hashlib.sha256(json.dumps(list(filters), default=str).encode()).hexdigest()[:16]


def encode(position: Sequence[str], filters: Sequence[object]) -> str:
    """The token of the page after `position` for the query with `filters`."""
    body = json.dumps({"p": list(position), "f": _digest(filters)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode(token: str, filters: Sequence[object], size: int) -> tuple[str, ...] | None:
    """The position in `token` (None for an empty token); INVALID_ARGUMENT if it is not a
    token of this query with a position of `size` strings."""
    if not token:
        return None
    try:
        if len(token) > MAX_TOKEN_CHARS:
            raise ValueError("too long")
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        position = body["p"]
        if body["f"] != _digest(filters):
            raise ValueError("another query's token")
        if not (
            isinstance(position, list)
            and len(position) == size
            and all(isinstance(p, str) for p in position)
        ):
            raise ValueError("malformed position")
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise invalid() from None
    return tuple(position)


def invalid() -> InvalidArgument:
    """The refusal of a page token that is not one of this query (also for a position the
    caller's own checks reject)."""
    return InvalidArgument(
        "page_token is not a token of this query: pass next_page_token unchanged, with the "
        "same filters",
        reason="PAGE_TOKEN_INVALID",
        field_violations=[FieldViolation("page_token", "next_page_token of this query")],
    )
