"""An operator's list of users (ListUsers): pages oldest first, by a cursor.

The cursor is the last user's (created_at, user_id): users are never deleted and their
creation time never changes, so a page boundary stays put while users are added — a user
registered meanwhile shows up on a later page, none twice.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from services.auth.api_keys import User
from services.auth.store import Store
from services.common import page_tokens
from services.common.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

Listed = tuple[User, tuple[str, ...], int]
"""A user, their scopes, and how many of their API keys are live."""


def page_size(requested: int) -> int:
    """The page size for a ListUsers `page_size` (0 = the default)."""
    if not 0 <= requested <= MAX_PAGE_SIZE:
        raise InvalidArgument(
            f"page_size must be 0 (the default, {DEFAULT_PAGE_SIZE}) to {MAX_PAGE_SIZE}",
            reason="PAGE_SIZE_INVALID",
            field_violations=[FieldViolation("page_size", f"0 to {MAX_PAGE_SIZE}")],
        )
    return requested or DEFAULT_PAGE_SIZE


def _after(token: str) -> tuple[float, str] | None:
    position = page_tokens.decode(token, (), 2)
    if position is None:
        return None
    try:
        created_at = float(position[0])
    except ValueError:
        raise page_tokens.invalid() from None
    if not math.isfinite(created_at):
        raise page_tokens.invalid()
    return created_at, position[1]


class UserListing:
    """Pages of every user, for an admin (the caller checked the scope)."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    async def page(self, requested_size: int, token: str) -> tuple[list[Listed], str]:
        """One page and the next page's token ("" after the last)."""
        size = page_size(requested_size)
        after = _after(token)
        rows = await self._store.users(after, size + 1, self._clock())
        page, more = rows[:size], len(rows) > size
        if not more:
            return page, ""
        last = page[-1][0]
        return page, page_tokens.encode((repr(last.created_at), last.user_id), ())
